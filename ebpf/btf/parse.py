"""The BTF wire format: header, type records, string table, and validation.

Everything here works on raw integers; :mod:`ebpf.btf.spec` turns records into
:mod:`ebpf.btf.types` objects.  Two levels of checking exist:

* :class:`RawBTF` checks the header and the record boundaries when it is built
  (one pass over the type section, needed anyway to index records by id), and
  :meth:`RawBTF.record` checks one record's ids and string offsets when it is
  decoded.  That is enough for trusted input such as the kernel's own BTF.
* :func:`validate_raw` checks every record eagerly, plus the properties that
  need the whole graph (reference loops, member offsets against sizes).  Run
  it on anything that is handed to libbpf, which crashes on bad type ids.
"""

from __future__ import annotations

import operator
import struct
import sys
from array import array
from typing import List, Optional, Sequence, Tuple

from ..errors import InvalidObjectError

__all__ = ["BTFError", "RawBTF", "validate_raw", "BTF_MAGIC", "Kind"]

BTF_MAGIC = 0xEB9F
_HEADER = struct.Struct("HBBIIIII")
_HEADER_LEN = 24
MAX_TYPE_ID = 0x000FFFFF
MAX_NAME_OFFSET = 0x00FFFFFF


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


def _detect_byte_order(data: bytes) -> str:
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
        self.byte_order = _detect_byte_order(data)
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
        self.str_base = base.str_end if base is not None else 0
        self.str_end = self.str_base + len(strings)
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
        self.first_id = base.end_id if base is not None else 1
        self.offsets, names = self._index(words)
        # Name offset of every record, packed so bytes.find can search it.
        self._names = array("I", names).tobytes()
        self.end_id = self.first_id + len(self.offsets)
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


def _rec(raw: RawBTF, type_id: int) -> Record:
    if type_id < raw.first_id:
        assert raw.base is not None
        return _rec(raw.base, type_id)
    return raw.record(type_id)


_QUAL_KINDS = (Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG)


def validate_raw(raw: RawBTF) -> None:
    """Check every record of ``raw`` (not its base, assumed valid) eagerly."""
    recs: dict = {}

    def get(tid: int) -> Record:
        r = recs.get(tid)
        if r is None:
            r = _rec(raw, tid)
            recs[tid] = r
        return r

    for tid in range(raw.first_id, raw.end_id):
        r = get(tid)
        _check_record(raw, r, get)

    # Loops through by-value references (typedef/qualifier chains, array
    # elements, struct members, var types) make sizes infinite and send
    # libbpf and naive walkers into endless recursion.
    sizes: dict = {}
    for tid in range(raw.first_id, raw.end_id):
        _size_of(raw, tid, get, sizes)

    for tid in range(raw.first_id, raw.end_id):
        r = get(tid)
        if r.kind in (Kind.STRUCT, Kind.UNION):
            limit = r.a * 8
            for n, (_, mtype, moff) in enumerate(r.items):
                if r.kflag:
                    bits, off = moff >> 24, moff & 0xFFFFFF
                else:
                    bits, off = 0, moff
                if bits:
                    end = off + bits
                    if bits > 128:
                        raise BTFError(f"type {tid}: member {n} bitfield too wide ({bits})")
                    mk = _strip_kind(raw, mtype, get)
                    if mk not in (Kind.INT, Kind.ENUM, Kind.ENUM64):
                        raise BTFError(f"type {tid}: member {n} bitfield of non-integer type")
                else:
                    if off % 8:
                        raise BTFError(f"type {tid}: member {n} is not byte aligned")
                    msize = _size_of(raw, mtype, get, sizes)
                    if msize is None:
                        raise BTFError(f"type {tid}: member {n} has a type without size")
                    end = off + msize * 8
                if end > limit:
                    raise BTFError(f"type {tid}: member {n} ends at bit {end}, past the size {r.a}")
        elif r.kind == Kind.DATASEC:
            spans = []
            for n, (vtype, voff, vsize) in enumerate(r.items):
                vk = get(vtype).kind if vtype else 0
                if vk not in (Kind.VAR, Kind.FUNC):
                    raise BTFError(f"type {tid}: section entry {n} is not a variable")
                if vk == Kind.VAR:
                    need = _size_of(raw, vtype, get, sizes)
                    if need is None or vsize < need:
                        raise BTFError(f"type {tid}: section entry {n} size {vsize} smaller than its type")
                if r.a and voff + vsize > r.a:
                    raise BTFError(f"type {tid}: section entry {n} past the section size {r.a}")
                spans.append((voff, vsize))
            # Size 0 means an object file the loader has not fixed up yet:
            # every variable still sits at offset 0.
            if r.a:
                spans.sort()
                for (o1, s1), (o2, _) in zip(spans, spans[1:]):
                    if o1 + s1 > o2:
                        raise BTFError(f"type {tid}: section entries overlap at offset {o2}")
        elif r.kind == Kind.VAR:
            if _size_of(raw, r.a, get, sizes) is None:
                raise BTFError(f"type {tid}: variable of a type without size")
        elif r.kind == Kind.DECL_TAG:
            target = get(r.a) if r.a else None
            comp = struct.unpack("i", struct.pack("I", r.extra[0]))[0]
            if target is None:
                raise BTFError(f"type {tid}: decl tag on void")
            if comp < -1:
                raise BTFError(f"type {tid}: bad decl tag component {comp}")
            if comp >= 0:
                if target.kind in (Kind.STRUCT, Kind.UNION):
                    count = target.vlen
                elif target.kind == Kind.FUNC:
                    count = get(target.a).vlen
                else:
                    raise BTFError(f"type {tid}: decl tag component on kind {target.kind}")
                if comp >= count:
                    raise BTFError(f"type {tid}: decl tag component {comp} out of range")


def _strip_kind(raw: RawBTF, tid: int, get) -> int:
    seen = 0
    while tid and seen < 1000:
        r = get(tid)
        if r.kind not in _QUAL_KINDS:
            return r.kind
        tid = r.a
        seen += 1
    return 0


def _check_record(raw: RawBTF, r: Record, get) -> None:
    what = f"type {r.id}"
    k = r.kind
    name = raw.string(r.name_off, f"{what} name")
    if k in _NAMED_KINDS and not name:
        raise BTFError(f"{what}: kind {k} needs a name")
    if k in _ANON_KINDS and name:
        raise BTFError(f"{what}: kind {k} must not be named")
    if k == Kind.INT:
        size = r.a
        enc_word = r.extra[0]
        enc = (enc_word >> 24) & 0x0F
        off = (enc_word >> 16) & 0xFF
        bits = enc_word & 0xFF
        if enc_word & 0xF000FF00:
            raise BTFError(f"{what}: unused int encoding bits set")
        if size not in (1, 2, 4, 8, 16):
            raise BTFError(f"{what}: bad int size {size}")
        if bits > 128 or bits == 0 or off + bits > size * 8:
            raise BTFError(f"{what}: bad int bits {bits} at offset {off} for size {size}")
        if enc not in (0, 1, 2, 4):
            raise BTFError(f"{what}: bad int encoding {enc:#x}")
    elif k in (Kind.ENUM, Kind.ENUM64):
        if r.a not in (1, 2, 4, 8):
            raise BTFError(f"{what}: bad enum size {r.a}")
        for n, item in enumerate(r.items):
            if not raw.string(item[0], f"{what} enumerator {n}"):
                raise BTFError(f"{what}: enumerator {n} has no name")
    elif k in (Kind.STRUCT, Kind.UNION):
        for n, item in enumerate(r.items):
            raw.string(item[0], f"{what} member {n}")
            if item[1] == 0:
                raise BTFError(f"{what}: member {n} is void")
    elif k == Kind.ARRAY:
        if r.a != 0:
            raise BTFError(f"{what}: array size field must be 0")
        if r.extra[0] == 0:
            raise BTFError(f"{what}: array of void")
        if get(r.extra[0]).kind in (Kind.FUNC, Kind.FUNC_PROTO, Kind.DATASEC, Kind.VAR, Kind.DECL_TAG):
            raise BTFError(f"{what}: array of non-data type")
    elif k == Kind.FUNC:
        if r.vlen > 2:
            raise BTFError(f"{what}: bad function linkage {r.vlen}")
        if r.a == 0 or get(r.a).kind != Kind.FUNC_PROTO:
            raise BTFError(f"{what}: function type is not a prototype")
    elif k == Kind.FUNC_PROTO:
        for n, (pname, ptype) in enumerate(r.items):
            raw.string(pname, f"{what} parameter {n}")
            if ptype == 0 and (n != r.vlen - 1 or pname):
                raise BTFError(f"{what}: parameter {n} is void")
    elif k == Kind.VAR:
        if r.extra[0] > 2:
            raise BTFError(f"{what}: bad variable linkage {r.extra[0]}")
        if r.a == 0:
            raise BTFError(f"{what}: variable of type void")
    elif k == Kind.DATASEC:
        for n, (vtype, _, _) in enumerate(r.items):
            if vtype == 0:
                raise BTFError(f"{what}: section entry {n} is void")
    elif k == Kind.FLOAT:
        if r.a not in (2, 4, 8, 12, 16):
            raise BTFError(f"{what}: bad float size {r.a}")
    elif k in (Kind.PTR, Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG):
        if r.a and get(r.a).kind in (Kind.DATASEC, Kind.VAR, Kind.DECL_TAG, Kind.FUNC):
            raise BTFError(f"{what}: refers to a non-type (kind {get(r.a).kind})")
    elif k == Kind.FWD:
        pass


def _size_of(raw: RawBTF, tid: int, get, sizes: dict) -> Optional[int]:
    """Size in bytes of ``tid`` (None if it has none), detecting by-value loops.

    Iterative so that deep chains cannot exhaust the Python stack.
    """
    if tid in sizes:
        return sizes[tid]
    # Explicit DFS: each frame is (tid, stage).  ``active`` marks ids on the
    # current path; meeting one again is a loop without a pointer in between.
    active = set()
    stack: List[Tuple[int, int]] = [(tid, 0)]
    while stack:
        cur, stage = stack.pop()
        if cur in sizes:
            continue
        if cur == 0:
            sizes[0] = None
            continue
        r = get(cur)
        deps = _value_deps(r)
        if stage == 0:
            if cur in active:
                raise BTFError(f"type {cur}: reference loop without a pointer in between")
            active.add(cur)
            stack.append((cur, 1))
            for d in deps:
                if d not in sizes:
                    if d in active:
                        raise BTFError(f"type {cur}: reference loop without a pointer in between")
                    stack.append((d, 0))
            continue
        active.discard(cur)
        sizes[cur] = _compute_size(r, sizes)
    return sizes[tid]


def _value_deps(r: Record) -> Sequence[int]:
    k = r.kind
    if k in _QUAL_KINDS or k == Kind.VAR:
        return (r.a,)
    if k == Kind.ARRAY:
        return (r.extra[0],)
    if k in (Kind.STRUCT, Kind.UNION):
        return [item[1] for item in r.items]
    return ()


def _compute_size(r: Record, sizes: dict) -> Optional[int]:
    k = r.kind
    if k in (Kind.INT, Kind.ENUM, Kind.ENUM64, Kind.STRUCT, Kind.UNION, Kind.FLOAT, Kind.DATASEC):
        return r.a
    if k == Kind.PTR:
        return 8
    if k in _QUAL_KINDS or k == Kind.VAR:
        return sizes.get(r.a)
    if k == Kind.ARRAY:
        elem = sizes.get(r.extra[0])
        if elem is None:
            raise BTFError(f"type {r.id}: array of a type without size")
        total = elem * r.extra[2]
        if total > 0xFFFFFFFF:
            raise BTFError(f"type {r.id}: array size overflows")
        return total
    return None
