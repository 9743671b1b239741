"""The BTF wire format: header, type records, string table, and validation.

Everything here works on raw integers; :mod:`ebpf.btf.spec` turns records into
:mod:`ebpf.btf.types` objects.  Two levels of checking exist:

* :class:`RawBTF` checks the header and the record boundaries when it is built
  (one pass over the type section, needed anyway to index records by id), and
  :meth:`RawBTF.record` checks one record's ids and string offsets when it is
  decoded.  That is enough for trusted input such as the kernel's own BTF.
* :func:`ebpf.btf.validation.validate_raw` checks every record eagerly, plus
  the properties that need the whole graph (reference loops, member offsets
  against sizes).  Run it on anything that is handed to libbpf, which
  crashes on bad type ids.
"""

from __future__ import annotations

import operator
import struct
import sys
from array import array
from typing import List, Literal, Optional, Sequence, Tuple

from ..errors import InvalidObjectError

__all__ = ["BTFError", "RawBTF", "Record", "BTF_MAGIC", "Kind"]

BTF_MAGIC = 0xEB9F
_HEADER = struct.Struct("HBBIIIII")
_HEADER_LEN = 24
MAX_TYPE_ID = 0x000FFFFF
MAX_NAME_OFFSET = 0x00FFFFFF

# What int.from_bytes and int.to_bytes accept: checkers reject a plain str.
ByteOrder = Literal["little", "big"]


class BTFError(InvalidObjectError):
    """Malformed BTF: the blob violates the wire format or its invariants."""


class Kind:
    """BTF kind numbers (``BTF_KIND_*``)."""

    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19
    MAX = 19


# Words that follow the 3-word header: fixed extra words, and words per vlen item.
_EXTRA = [0, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0]
_PER_VLEN = [0, 0, 0, 0, 3, 3, 2, 0, 0, 0, 0, 0, 0, 2, 0, 3, 0, 0, 0, 3]

# Indexed by the top byte of ``info`` (kind plus flag bits) so that the hot
# indexing loop needs no masking.  Unknown kinds step far past the end, which
# ends the walk and is then reported precisely by the slow path.
_STEP_BASE = [(3 + _EXTRA[b & 0x1F]) if 1 <= (b & 0x1F) <= Kind.MAX else 1 << 40 for b in range(256)]
_STEP_VLEN = [_PER_VLEN[b & 0x1F] if 1 <= (b & 0x1F) <= Kind.MAX else 0 for b in range(256)]

# Kinds whose record word 2 is a type id.
_REF_KINDS = frozenset(
    {Kind.PTR, Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.FUNC,
     Kind.VAR, Kind.DECL_TAG, Kind.TYPE_TAG}
)
# Kinds that may set kind_flag.
_KFLAG_KINDS = frozenset({Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.FWD, Kind.ENUM64,
                          Kind.DECL_TAG, Kind.TYPE_TAG})
# Kinds that carry vlen items (FUNC reuses vlen for its linkage).
_VLEN_KINDS = frozenset({Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.FUNC_PROTO, Kind.DATASEC,
                         Kind.ENUM64, Kind.FUNC})
# Kinds that must be named / must be anonymous, as the kernel requires.
_NAMED_KINDS = frozenset({Kind.TYPEDEF, Kind.FWD, Kind.FUNC, Kind.VAR, Kind.DATASEC,
                          Kind.DECL_TAG, Kind.TYPE_TAG, Kind.INT, Kind.FLOAT})
_ANON_KINDS = frozenset({Kind.PTR, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.FUNC_PROTO,
                         Kind.ARRAY})


class Record:
    """One decoded type record.

    ``a`` is word 2 (size or type id); ``extra`` holds the kind-specific words
    after the header, ``items`` the vlen items as tuples.
    """

    __slots__ = ("id", "kind", "name_off", "vlen", "kflag", "a", "extra", "items")

    def __init__(self, id: int, kind: int, name_off: int, vlen: int, kflag: bool, a: int,
                 extra: Tuple[int, ...], items: List[Tuple[int, ...]]) -> None:
        self.id = id
        self.kind = kind
        self.name_off = name_off
        self.vlen = vlen
        self.kflag = kflag
        self.a = a
        self.extra = extra
        self.items = items


def _detect_byte_order(data: bytes) -> ByteOrder:
    if len(data) < _HEADER_LEN:
        raise BTFError(f"BTF blob too short for a header ({len(data)} bytes)")
    if data[0] == 0x9F and data[1] == 0xEB:
        return "little"
    if data[0] == 0xEB and data[1] == 0x9F:
        return "big"
    raise BTFError(f"bad BTF magic {data[:2].hex()}")


class RawBTF:
    """A parsed, indexed BTF blob.

    Type ids ``first_id .. first_id + len(offsets) - 1`` belong to this blob;
    lower ids (and string offsets below ``str_base``) belong to ``base``.
    """

    def __init__(self, data: bytes, base: Optional["RawBTF"] = None) -> None:
        data = bytes(data)
        self.data = data
        self.base = base
        self.byte_order: ByteOrder = _detect_byte_order(data)
        if base is not None and base.byte_order != self.byte_order:
            raise BTFError("split BTF and its base differ in byte order")
        prefix = "<" if self.byte_order == "little" else ">"
        _, version, flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            prefix + _HEADER.format, data)
        if version != 1:
            raise BTFError(f"unsupported BTF version {version}")
        if flags != 0:
            raise BTFError(f"unsupported BTF header flags {flags:#x}")
        if hdr_len < _HEADER_LEN or hdr_len > len(data):
            raise BTFError(f"bad BTF header length {hdr_len}")
        if any(data[_HEADER_LEN:hdr_len]):
            raise BTFError("unknown non-zero fields in BTF header")
        body = len(data) - hdr_len
        if type_off % 4 or type_len % 4:
            raise BTFError("BTF type section is not 4-byte aligned")
        if type_off + type_len > body:
            raise BTFError("BTF type section extends past the end of the blob")
        if str_off + str_len > body:
            raise BTFError("BTF string section extends past the end of the blob")
        if type_off + type_len > str_off:
            raise BTFError("BTF type section overlaps or follows the string section")
        strings = data[hdr_len + str_off: hdr_len + str_off + str_len]
        if base is None:
            if not strings or strings[0] != 0:
                raise BTFError("BTF string section must start with an empty string")
        if strings and strings[-1] != 0:
            raise BTFError("BTF string section is not NUL-terminated")
        self.strings = strings
        # Annotated: mypy cannot infer an attribute from the same attribute of base.
        self.str_base: int = base.str_end if base is not None else 0
        self.str_end: int = self.str_base + len(strings)
        if self.str_end > MAX_NAME_OFFSET + 1:
            raise BTFError("BTF string section too large")

        tbytes = data[hdr_len + type_off: hdr_len + type_off + type_len]
        words: Sequence[int]
        if self.byte_order == sys.byteorder:
            words = memoryview(tbytes).cast("I")
        else:
            arr = array("I")
            arr.frombytes(tbytes)
            arr.byteswap()
            words = arr
        self.words = words
        self.first_id: int = base.end_id if base is not None else 1
        self.offsets, names = self._index(words)
        # Name offset of every record, packed so bytes.find can search it.
        self._names = array("I", names).tobytes()
        self.end_id: int = self.first_id + len(self.offsets)
        if self.end_id - 1 > MAX_TYPE_ID:
            raise BTFError(f"too many BTF types ({self.end_id - 1})")

    @staticmethod
    def _index(words: Sequence[int]) -> Tuple[Sequence[int], Sequence[int]]:
        """Word index and name offset of each record: one tight pass, the
        dominant load cost."""
        # A C array: no int object per record to allocate and keep alive.
        offsets = array("I")
        append = offsets.append
        base = _STEP_BASE
        per = _STEP_VLEN
        i = 0
        try:
            while True:
                append(i)
                info = words[i + 1]
                k = info >> 24
                i += base[k] + (info & 0xFFFF) * per[k]
        except (IndexError, OverflowError):  # past the end, or an unknown kind's huge step
            pass
        last = offsets.pop()
        if last != len(words):
            RawBTF._explain_index_failure(words, offsets)
        # Every record starts with its name offset; gather them in C.
        if not offsets:
            return offsets, []
        names = operator.itemgetter(*offsets)(words)
        return offsets, names if len(offsets) > 1 else (names,)

    @staticmethod
    def _explain_index_failure(words: Sequence[int], offsets: Sequence[int]) -> None:
        bad = len(offsets) - 1 if offsets else 0
        for n, off in enumerate(offsets):
            if off + 3 > len(words):
                bad = n
                break
            kind = (words[off + 1] >> 24) & 0x1F
            if not 1 <= kind <= Kind.MAX:
                raise BTFError(f"type record {n + 1}: unknown BTF kind {kind}")
        raise BTFError(f"type record {bad + 1} (and those after it) run past the end of the type section")

    # -- lookups ------------------------------------------------------------

    def owns(self, type_id: int) -> bool:
        return self.first_id <= type_id < self.end_id

    def string(self, off: int, what: str = "name") -> str:
        """The NUL-terminated string at ``off`` (offsets below ``str_base`` are the base's)."""
        if off < self.str_base:
            assert self.base is not None
            return self.base.string(off, what)
        rel = off - self.str_base
        if rel >= len(self.strings):
            raise BTFError(f"{what} offset {off} outside the string section")
        end = self.strings.index(b"\0", rel)
        return self.strings[rel:end].decode("utf-8", "replace")

    def kind_of(self, type_id: int) -> int:
        """Kind of any id in this blob or its base (0 for void)."""
        if type_id == 0:
            return 0
        if type_id < self.first_id:
            assert self.base is not None
            return self.base.kind_of(type_id)
        return (self.words[self.offsets[type_id - self.first_id] + 1] >> 24) & 0x1F

    def check_id(self, type_id: int, what: str) -> None:
        if not 0 <= type_id < self.end_id:
            raise BTFError(f"{what} refers to type id {type_id}, out of range (max {self.end_id - 1})")

    def record(self, type_id: int) -> Record:
        """Decode the record of ``type_id`` (which this blob owns) with local checks."""
        w = self.words
        i = self.offsets[type_id - self.first_id]
        name_off, info, a = w[i], w[i + 1], w[i + 2]
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        kflag = bool(info >> 31)
        what = f"type {type_id}"
        if info & 0x60FF0000:
            raise BTFError(f"{what}: unused info bits set ({info:#x})")
        if kflag and kind not in _KFLAG_KINDS:
            raise BTFError(f"{what}: kind_flag not allowed on kind {kind}")
        if vlen and kind not in _VLEN_KINDS:
            raise BTFError(f"{what}: vlen {vlen} not allowed on kind {kind}")
        if name_off >= self.str_end:
            raise BTFError(f"{what}: name offset {name_off} outside the string section")
        j = i + 3
        ne = _EXTRA[kind]
        extra = tuple(w[j:j + ne])
        j += ne
        per = _PER_VLEN[kind]
        items = [tuple(w[j + n * per: j + (n + 1) * per]) for n in range(vlen)] if per else []
        if kind in _REF_KINDS:
            self.check_id(a, what)
        elif kind == Kind.ARRAY:
            self.check_id(extra[0], f"{what} (array element)")
            self.check_id(extra[1], f"{what} (array index)")
        elif kind == Kind.FUNC_PROTO:
            self.check_id(a, f"{what} (return type)")
        if kind in (Kind.STRUCT, Kind.UNION, Kind.DATASEC, Kind.FUNC_PROTO):
            for n, item in enumerate(items):
                if kind == Kind.DATASEC:
                    self.check_id(item[0], f"{what} (section variable {n})")
                else:
                    if item[0] >= self.str_end:
                        raise BTFError(f"{what}: member {n} name offset {item[0]} out of range")
                    self.check_id(item[1], f"{what} (member {n})")
        elif kind in (Kind.ENUM, Kind.ENUM64):
            for n, item in enumerate(items):
                if item[0] >= self.str_end:
                    raise BTFError(f"{what}: enumerator {n} name offset {item[0]} out of range")
        return Record(type_id, kind, name_off, vlen, kflag, a, extra, items)

    def find_name(self, name: str) -> List[int]:
        """Ids of this blob's types whose name is exactly ``name``.

        Instead of decoding every name, find the string's offsets in the
        string table(s) and then search the type section for those offsets at
        record boundaries: both searches run at C speed.
        """
        needle = name.encode("utf-8") + b"\0"
        if b"\0" in needle[:-1] or not name:
            return []
        offsets: List[int] = []
        blob: Optional[RawBTF] = self
        while blob is not None:
            s = blob.strings
            p = s.find(needle)
            while p >= 0:
                offsets.append(p + blob.str_base)
                p = s.find(needle, p + 1)
            blob = blob.base
        names = self._names
        ids = []
        for off in offsets:
            pat = struct.pack("=I", off)
            p = names.find(pat)
            while p >= 0:
                if p % 4 == 0:
                    ids.append(self.first_id + p // 4)
                p = names.find(pat, p + 1)
        ids.sort()
        return ids

    def name_offset_of(self, type_id: int) -> int:
        return self.words[self.offsets[type_id - self.first_id]]
