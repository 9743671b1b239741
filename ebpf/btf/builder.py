"""Making BTF: :class:`Builder` turns types into a raw BTF blob (cilium's ``btf.Builder``).

>>> b = Builder()
>>> value = Struct("value", 8, [Member("lock", Struct("bpf_spin_lock", 4, [
...     Member("val", Int("unsigned int", 4))]), 0), Member("count", Int("int", 4, 1), 32)])
>>> tid = b.add(value)             # adds its members' types too
>>> raw = b.marshal()              # bytes for BPF_BTF_LOAD, Spec.from_raw, a file

Types may come from a :class:`~ebpf.btf.Spec` (the kernel's, an object's) or
be built by hand, and may be mixed.  Everything a type refers to is added
with it.  Adding the same object twice gives the same id, and so does adding
an equal one: records are deduplicated by their content (two ``Int("int",
4, 1)`` objects become one type), except that pointers are told apart by
the object they point to, since a pointer's id is needed before what it
points to is finished (``struct list_head { struct list_head *next; }``).

Values that BTF cannot represent (a size of 2**32 or more, a bitfield
offset of 2**24 or more in a struct with bitfields, 65536 members, names
with NUL bytes, ...) raise :class:`~ebpf.btf.BTFError` naming the type.
"""

from __future__ import annotations

import struct
import sys
from array import array
from typing import Any, Dict, Iterable, List, Optional, Tuple

from . import types as T
from .parse import BTF_MAGIC, MAX_NAME_OFFSET, MAX_TYPE_ID, BTFError, Kind

__all__ = ["Builder"]

_U32 = 0xFFFFFFFF
_HEADER = "HBBIIIII"
_HEADER_LEN = 24

# A record before marshalling: (kind, name, kind_flag, vlen, word 2, extra
# words, vlen items).  Hashable, so that equal records share one id.
_Record = Tuple[int, str, int, int, int, Tuple[int, ...], Tuple[Tuple[Any, ...], ...]]

_QUALIFIER_KINDS: Dict[type, int] = {T.Volatile: Kind.VOLATILE, T.Const: Kind.CONST, T.Restrict: Kind.RESTRICT}


class Builder:
    """Collects types and marshals them as one BTF blob.

    ``types`` are added in order, as by :meth:`add`.  Type ids start at 1 and
    follow the order in which types are reached (what a type refers to by
    value comes first).
    """

    def __init__(self, types: Iterable[T.Type] = ()) -> None:
        self._records: List[Optional[_Record]] = [None]  # index = type id; 0 is void
        self._ids: Dict[int, int] = {}  # id(type object) -> type id
        self._keep: List[T.Type] = []  # the objects behind _ids, in order: alive, ids unique
        self._by_record: Dict[_Record, int] = {}
        self._pointers: Dict[int, int] = {}  # id(target object) -> pointer's type id
        self._targets: List[T.Type] = []  # the objects behind _pointers
        self._pending: List[Tuple[int, T.Pointer]] = []
        for t in types:
            self.add(t)

    def __len__(self) -> int:
        """Number of types (void not counted)."""
        return len(self._records) - 1

    def __repr__(self) -> str:
        return f"<btf.Builder {len(self)} types>"

    # -- adding -------------------------------------------------------------

    def add(self, t: T.Type) -> int:
        """Add ``t`` and everything it refers to; return its type id (0 for void)."""
        if not isinstance(t, T.Type):
            raise TypeError(f"expected an ebpf.btf type, got {type(t).__name__}")
        mark = (len(self._records), len(self._keep), len(self._targets))
        try:
            tid = self._visit(t)
            # Pointers get their id first and their target afterwards; each
            # target may bring further pointers.
            while self._pending:
                ptr_id, ptr = self._pending.pop()
                target = self._visit(ptr.target)
                self._records[ptr_id] = (Kind.PTR, "", 0, 0, target, (), ())
        except BaseException:
            self._roll_back(*mark)
            raise
        return tid

    def _roll_back(self, n_records: int, n_keep: int, n_targets: int) -> None:
        """Forget what a failed :meth:`add` added, so the builder stays usable."""
        for obj in self._keep[n_keep:]:
            del self._ids[id(obj)]
        for obj in self._targets[n_targets:]:
            del self._pointers[id(obj)]
        for rec in self._records[n_records:]:
            if rec is not None and self._by_record.get(rec, 0) >= n_records:
                del self._by_record[rec]
        del self._records[n_records:]
        del self._keep[n_keep:]
        del self._targets[n_targets:]
        self._pending.clear()

    def type_id(self, t: T.Type) -> int:
        """The id :meth:`add` gave ``t`` (the same object); KeyError if never added."""
        if isinstance(t, T.Void):
            return 0
        try:
            return self._ids[id(t)]
        except KeyError:
            raise KeyError(f"{t!r} was not added to this builder") from None

    def _visit(self, root: T.Type) -> int:
        """Add ``root`` and what it refers to by value, depth first, without
        recursion (type graphs can be deep)."""
        ids = self._ids
        active = set()
        stack: List[Tuple[T.Type, bool]] = [(root, False)]
        while stack:
            t, expanded = stack.pop()
            key = id(t)
            if key in ids or isinstance(t, T.Void):
                continue
            if isinstance(t, T.Pointer):
                self._reserve_pointer(t)
                continue
            if not expanded:
                if key in active:
                    raise BTFError(f"{_label(t)} refers to itself without a pointer in between")
                active.add(key)
                stack.append((t, True))
                for child in reversed(_by_value(t)):
                    if id(child) not in ids and not isinstance(child, T.Void):
                        stack.append((child, False))
                continue
            active.discard(key)
            rec = self._record(t)
            _check_names(rec, t)
            tid = self._by_record.get(rec)
            if tid is None:
                tid = self._new_id(rec)
                self._by_record[rec] = tid
            ids[key] = tid
            self._keep.append(t)
        return self._id_of(root)

    def _reserve_pointer(self, p: T.Pointer) -> None:
        target = p.target
        tid = self._pointers.get(id(target))
        if tid is None:
            tid = self._new_id(None)
            self._pointers[id(target)] = tid
            self._targets.append(target)
            self._pending.append((tid, p))
        self._ids[id(p)] = tid
        self._keep.append(p)

    def _new_id(self, rec: Optional[_Record]) -> int:
        tid = len(self._records)
        if tid > MAX_TYPE_ID:
            raise BTFError(f"more than {MAX_TYPE_ID} types")
        self._records.append(rec)
        return tid

    def _id_of(self, t: T.Type) -> int:
        return 0 if isinstance(t, T.Void) else self._ids[id(t)]

    def _record(self, t: T.Type) -> _Record:
        """The record of ``t``, whose by-value children all have ids."""
        ref = self._id_of
        what = _label(t)
        if isinstance(t, T.Int):
            if not 0 <= t.encoding <= 0xF or not 0 <= t.offset <= 0xFF or not 0 <= t.bits <= 0xFF:
                raise BTFError(f"{what}: encoding {t.encoding}, offset {t.offset} or bits {t.bits} out of range")
            return (Kind.INT, t.name, 0, 0, _u32(t.size, what, "size"),
                    ((t.encoding << 24) | (t.offset << 16) | t.bits,), ())
        if isinstance(t, T.Array):
            return (Kind.ARRAY, "", 0, 0, 0,
                    (ref(t.type), ref(t.index_type), _u32(t.nelems, what, "element count")), ())
        if isinstance(t, (T.Struct, T.Union)):
            return self._composite(t, what)
        if isinstance(t, T.Enum):
            return _enum(t, what)
        if isinstance(t, T.Fwd):
            return (Kind.FWD, t.name, int(t.fwd_kind == T.FwdKind.UNION), 0, 0, (), ())
        if isinstance(t, T.Typedef):
            return (Kind.TYPEDEF, t.name, 0, 0, ref(t.type), (), ())
        if isinstance(t, T.TypeTag):
            return (Kind.TYPE_TAG, t.name, 0, 0, ref(t.type), (), ())
        if isinstance(t, (T.Volatile, T.Const, T.Restrict)):
            return (_QUALIFIER_KINDS[type(t)], "", 0, 0, ref(t.type), (), ())
        if isinstance(t, T.Func):
            if not 0 <= t.linkage <= 0xFFFF:
                raise BTFError(f"{what}: linkage {t.linkage} out of range")
            return (Kind.FUNC, t.name, 0, t.linkage, ref(t.type), (), ())
        if isinstance(t, T.FuncProto):
            params = tuple((p.name, ref(p.type)) for p in t.params)
            return (Kind.FUNC_PROTO, "", 0, _vlen(len(params), what), ref(t.return_type), (), params)
        if isinstance(t, T.Var):
            return (Kind.VAR, t.name, 0, 0, ref(t.type), (_u32(t.linkage, what, "linkage"),), ())
        if isinstance(t, T.Datasec):
            items = tuple((ref(v.type), _u32(v.offset, what, "variable offset"), _u32(v.size, what, "variable size"))
                          for v in t.vars)
            return (Kind.DATASEC, t.name, 0, _vlen(len(items), what), _u32(t.size, what, "size"), (), items)
        if isinstance(t, T.Float):
            return (Kind.FLOAT, t.name, 0, 0, _u32(t.size, what, "size"), (), ())
        if isinstance(t, T.DeclTag):
            if not -1 <= t.component_idx <= 0x7FFFFFFF:
                raise BTFError(f"{what}: component index {t.component_idx} out of range")
            return (Kind.DECL_TAG, t.name, 0, 0, ref(t.type), (t.component_idx & _U32,), ())
        raise BTFError(f"cannot marshal {what}")

    def _composite(self, t: T._Composite, what: str) -> _Record:
        kind = Kind.STRUCT if isinstance(t, T.Struct) else Kind.UNION
        bitfields = any(m.bitfield_size for m in t.members)
        items = []
        for m in t.members:
            mt = m.type
            if bitfields:
                if not 0 <= m.bitfield_size <= 0xFF or not 0 <= m.offset <= 0xFFFFFF:
                    raise BTFError(f"{what}: member {m.name!r} at bit {m.offset} with {m.bitfield_size} bits "
                                   f"does not fit a struct with bitfields (offsets below 2**24, widths below 256)")
                if isinstance(mt, T.Int) and (mt.offset or mt.bits != mt.size * 8):
                    # A bitfield described in the int (old pahole output,
                    # decoded into the member): the kernel wants the member
                    # to say it, over a plain int.
                    mt = T.Int(mt.name, mt.size, mt.encoding)
                    self._visit(mt)
                off = (m.bitfield_size << 24) | m.offset
            else:
                off = _u32(m.offset, what, f"offset of member {m.name!r}")
            items.append((m.name, self._id_of(mt), off))
        return (kind, t.name, int(bitfields), _vlen(len(items), what), _u32(t.size, what, "size"), (), tuple(items))

    # -- output -------------------------------------------------------------

    def marshal(self, byte_order: str = sys.byteorder) -> bytes:
        """The BTF blob: header, type records, string table (``byte_order``
        ``"little"`` or ``"big"``; the host's by default)."""
        if byte_order not in ("little", "big"):
            raise ValueError(f"byte_order must be 'little' or 'big', not {byte_order!r}")
        strings = _Strings()
        words = array("I")
        for tid in range(1, len(self._records)):
            rec = self._records[tid]
            assert rec is not None, "pointer target never added"
            kind, name, kflag, vlen, a, extra, items = rec
            words.append(strings.add(name, tid))
            words.append((kflag << 31) | (kind << 24) | vlen)
            words.append(a)
            words.extend(extra)
            for item in items:
                if kind in (Kind.STRUCT, Kind.UNION, Kind.FUNC_PROTO, Kind.ENUM, Kind.ENUM64):
                    words.append(strings.add(item[0], tid))
                    words.extend(item[1:])
                else:
                    words.extend(item)
        if byte_order != sys.byteorder:
            words.byteswap()
        body = words.tobytes()
        table = strings.table()
        prefix = "<" if byte_order == "little" else ">"
        hdr = struct.pack(prefix + _HEADER, BTF_MAGIC, 1, 0, _HEADER_LEN, 0, len(body), len(body), len(table))
        return hdr + body + table

    def spec(self, byte_order: str = sys.byteorder) -> Any:
        """The marshalled types parsed back as a :class:`~ebpf.btf.Spec`."""
        from .spec import Spec

        return Spec.from_raw(self.marshal(byte_order))


class _Strings:
    """The string table: each name once, offset 0 is the empty string."""

    def __init__(self) -> None:
        self._offsets: Dict[str, int] = {"": 0}
        self._parts: List[bytes] = [b"\0"]
        self._size = 1

    def add(self, name: str, tid: int) -> int:
        off = self._offsets.get(name)
        if off is not None:
            return off
        raw = name.encode("utf-8")
        off = self._size
        if off + len(raw) > MAX_NAME_OFFSET:
            raise BTFError(f"type {tid}: the string table outgrows BTF's 2**24 bytes")
        self._offsets[name] = off
        self._parts.append(raw + b"\0")
        self._size += len(raw) + 1
        return off

    def table(self) -> bytes:
        return b"".join(self._parts)


def _by_value(t: T.Type) -> List[T.Type]:
    """What ``t`` refers to, except a pointer's target (added afterwards)."""
    if isinstance(t, T.Array):
        return [t.type, t.index_type]
    if isinstance(t, (T.Struct, T.Union)):
        return [m.type for m in t.members]
    if isinstance(t, T.FuncProto):
        return [t.return_type] + [p.type for p in t.params]
    if isinstance(t, T.Datasec):
        return [v.type for v in t.vars]
    if isinstance(t, (T.Typedef, T.Volatile, T.Const, T.Restrict, T.TypeTag, T.Func, T.Var, T.DeclTag)):
        return [t.type]
    return []


def _enum(t: T.Enum, what: str) -> _Record:
    values = [v.value for v in t.values]
    lo = -(1 << 63) if t.signed else 0
    hi = (1 << 63) - 1 if t.signed else (1 << 64) - 1
    for v in t.values:
        if not lo <= v.value <= hi:
            raise BTFError(f"{what}: enumerator {v.name} = {v.value} does not fit a "
                           f"{'signed' if t.signed else 'unsigned'} 64-bit value")
    if t.size not in (1, 2, 4, 8):
        raise BTFError(f"{what}: enum size {t.size} (BTF has 1, 2, 4 and 8)")
    fits32 = all(-(1 << 31) <= v <= _U32 for v in values)
    vlen = _vlen(len(values), what)
    if t.size == 8 or not fits32:
        items = tuple((v.name, (v.value & 0xFFFFFFFFFFFFFFFF) & _U32, (v.value & 0xFFFFFFFFFFFFFFFF) >> 32)
                      for v in t.values)
        return (Kind.ENUM64, t.name, int(t.signed), vlen, t.size, (), items)
    return (Kind.ENUM, t.name, int(t.signed), vlen, t.size, (), tuple((v.name, v.value & _U32) for v in t.values))


def _check_names(rec: _Record, t: T.Type) -> None:
    kind, name, _, _, _, _, items = rec
    names = [name]
    if kind in (Kind.STRUCT, Kind.UNION, Kind.FUNC_PROTO, Kind.ENUM, Kind.ENUM64):
        names += [item[0] for item in items]
    for n in names:
        try:
            n.encode("utf-8")
        except (AttributeError, UnicodeEncodeError):
            bad = True
        else:
            bad = "\0" in n
        if bad:
            raise BTFError(f"{_label(t)}: name {n!r} is not UTF-8 text without NUL bytes")


def _u32(value: int, what: str, field: str) -> int:
    if not 0 <= value <= _U32:
        raise BTFError(f"{what}: {field} {value} does not fit BTF's 32 bits")
    return value


def _vlen(n: int, what: str) -> int:
    if n > 0xFFFF:
        raise BTFError(f"{what}: {n} members, parameters or values (BTF holds at most 65535)")
    return n


def _label(t: T.Type) -> str:
    return f"{t.kind} {t.name!r}" if t.name else f"anonymous {t.kind}"
