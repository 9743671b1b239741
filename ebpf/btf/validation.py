"""The one BTF validator: what libbpf, the kernel and this package may be handed.

:func:`validate_raw` checks every record of a :class:`~ebpf.btf.parse.RawBTF`
eagerly, plus the properties that need the whole graph.  Everything that
hands BTF to libbpf runs it first (``ebpf._validate.check_btf`` for the
``.BTF`` of an object, :func:`ebpf.btf.load_spec` / :func:`ebpf.btf.validate`
for kernel types given as a file or bytes), because libbpf 1.1.2 trusts its
input: an out-of-range type id or string offset makes it dereference NULL
(``btf__type_by_id`` in ``skip_mods_and_typedefs``, ``strcmp`` on a missing
name) and a chain of modifiers that loops makes it spin for ever.

What passes is also safe for this package's own walkers (the C formatter,
the codec, ``sizeof``):

* every record is complete and of a known kind, with no unknown flag bits;
* every type id and string offset points inside the blob (or its base);
* per-kind invariants the kernel enforces (named/anonymous kinds, int and
  float sizes, function linkage, what may refer to what);
* no reference loop that does not pass through a named struct or union: C
  can only close a type cycle through a struct or union tag, and every other
  loop (a pointer to itself, a typedef of itself, a function pointer
  returning itself, an anonymous struct pointing to itself) sends libbpf or
  a naive walker round for ever;
* no struct or union containing itself by value;
* members inside their struct, variables inside their section, bitfields on
  integers.

Real compiler output always passes (clang, pahole, the kernel's own BTF, the
objects of libbpf-tools, libxdp and cilium/ebpf's test data).  Typeless
``__ksym`` variables (a ``VAR`` of ``void``, or of ``const void``) are
accepted, as libbpf and bpftool accept them.
"""

from __future__ import annotations

import struct
from array import array
from typing import Dict, List, Optional, Sequence

from .parse import BTFError, RawBTF, Record

__all__ = ["validate_raw", "kinds_of"]

_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
_VOLATILE, _CONST, _RESTRICT, _FUNC, _FUNC_PROTO, _VAR, _DATASEC = 9, 10, 11, 12, 13, 14, 15
_FLOAT, _DECL_TAG, _TYPE_TAG, _ENUM64 = 16, 17, 18, 19

# Qualifier-like kinds: one by-value reference in word 2.
_QUAL = frozenset({_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG})
_NAMED = frozenset({_TYPEDEF, _FWD, _FUNC, _VAR, _DATASEC, _DECL_TAG, _TYPE_TAG, _INT, _FLOAT})
_ANON = frozenset({_PTR, _VOLATILE, _CONST, _RESTRICT, _FUNC_PROTO, _ARRAY})
# What a pointer, typedef or qualifier may not refer to.
_NOT_A_TYPE = frozenset({_DATASEC, _VAR, _DECL_TAG, _FUNC})
# What an array element or a variable may not be.
_NOT_DATA = frozenset({_FUNC, _FUNC_PROTO, _DATASEC, _VAR, _DECL_TAG})
# What a declaration tag may be attached to (as the kernel allows).
_TAG_TARGETS = frozenset({_STRUCT, _UNION, _VAR, _FUNC, _TYPEDEF})
_KFLAG = frozenset({_STRUCT, _UNION, _ENUM, _FWD, _ENUM64, _DECL_TAG, _TYPE_TAG})
_VLEN = frozenset({_STRUCT, _UNION, _ENUM, _FUNC_PROTO, _DATASEC, _ENUM64, _FUNC})
_SIZED = frozenset({_INT, _ENUM, _ENUM64, _STRUCT, _UNION, _FLOAT, _DATASEC})
_INT_SIZES = frozenset({1, 2, 4, 8, 16})
_ENUM_SIZES = frozenset({1, 2, 4, 8})
_FLOAT_SIZES = frozenset({2, 4, 8, 12, 16})
_INT_ENCODINGS = frozenset({0, 1, 2, 4})

_NO_SIZE = -1
_POINTER_SIZE = 8
_MAX_SIZE = 0xFFFFFFFF


def validate_raw(raw: RawBTF) -> None:
    """Check every record of ``raw`` (not its base, which is assumed valid).

    Raises :class:`BTFError` naming the first violation found.
    """
    _Validator(raw).run()


class _Validator:
    def __init__(self, raw: RawBTF) -> None:
        self.raw = raw
        self.first = raw.first_id
        self.end = raw.end_id
        self.n = raw.end_id - raw.first_id
        words = raw.words
        # Kind of every local record, gathered once: checks of what refers
        # to what need the kinds of records further on.
        self.kinds = bytes((words[off + 1] >> 24) & 0x1F for off in raw.offsets)
        # The same indexed by type id, base included (0: void), for the
        # checks of what a record refers to, once its id is known in range.
        self.all_kinds = bytes(kinds_of(raw.base)) + self.kinds if raw.base is not None else b"\0" + self.kinds
        self.base_sizes: Dict[int, int] = {}
        self.elements: Dict[int, int] = {}

    # -- helpers ------------------------------------------------------------

    def empty_name(self, off: int) -> bool:
        raw = self.raw
        if off >= raw.str_base:
            return raw.strings[off - raw.str_base] == 0
        return not raw.string(off)

    def run(self) -> None:
        raw = self.raw
        words = raw.words
        offsets = raw.offsets
        first = self.first
        end = self.end
        str_end = raw.str_end
        kinds = self.kinds
        kind = self.all_kinds
        empty = self.empty_name
        # Successors of each local type in the graph of references that a C
        # declaration cannot break (every edge except those out of a named
        # struct or union: only a tag can be declared before its body);
        # checked for loops below.
        succ: List[Sequence[int]] = [()] * self.n
        composites: List[int] = []
        tags: List[int] = []
        datasecs: List[int] = []
        variables: List[int] = []

        for n in range(self.n):
            i = offsets[n]
            tid = first + n
            name_off, info, a = words[i], words[i + 1], words[i + 2]
            k = kinds[n]
            vlen = info & 0xFFFF
            what = f"type {tid}"
            if info & 0x60FF0000:
                raise BTFError(f"{what}: unused info bits set ({info:#x})")
            if info >> 31 and k not in _KFLAG:
                raise BTFError(f"{what}: kind_flag not allowed on kind {k}")
            if vlen and k not in _VLEN:
                raise BTFError(f"{what}: vlen {vlen} not allowed on kind {k}")
            if name_off >= str_end:
                raise BTFError(f"{what}: name offset {name_off} outside the string section")
            if k in _NAMED:
                if empty(name_off):
                    raise BTFError(f"{what}: kind {k} needs a name")
            elif k in _ANON and name_off and not empty(name_off):
                raise BTFError(f"{what}: kind {k} must not be named")

            if k in _QUAL or k == _PTR:
                if a >= end:
                    raise BTFError(f"{what} refers to type id {a}, out of range (max {end - 1})")
                if a and kind[a] in _NOT_A_TYPE:
                    raise BTFError(f"{what}: refers to a non-type (kind {kind[a]})")
                succ[n] = (a,)
            elif k in (_STRUCT, _UNION):
                j = i + 3
                for m in range(vlen):
                    mname, mtype = words[j], words[j + 1]
                    if mname >= str_end:
                        raise BTFError(f"{what}: member {m} name offset {mname} out of range")
                    if mtype >= end:
                        raise BTFError(f"{what} (member {m}) refers to type id {mtype}, out of range (max {end - 1})")
                    if mtype == 0:
                        raise BTFError(f"{what}: member {m} is void")
                    if kind[mtype] in _NOT_DATA:
                        raise BTFError(f"{what}: member {m} of non-data kind {kind[mtype]}")
                    j += 3
                if vlen and (name_off == 0 or empty(name_off)):
                    succ[n] = [words[i + 4 + 3 * m] for m in range(vlen)]
                composites.append(tid)
            elif k == _INT:
                enc_word = words[i + 3]
                enc = (enc_word >> 24) & 0x0F
                off = (enc_word >> 16) & 0xFF
                bits = enc_word & 0xFF
                if enc_word & 0xF000FF00:
                    raise BTFError(f"{what}: unused int encoding bits set")
                if a not in _INT_SIZES:
                    raise BTFError(f"{what}: bad int size {a}")
                if bits > 128 or bits == 0 or off + bits > a * 8:
                    raise BTFError(f"{what}: bad int bits {bits} at offset {off} for size {a}")
                if enc not in _INT_ENCODINGS:
                    raise BTFError(f"{what}: bad int encoding {enc:#x}")
            elif k == _ARRAY:
                elem, index = words[i + 3], words[i + 4]
                if elem >= end:
                    raise BTFError(f"{what} (array element) refers to type id {elem}, out of range (max {end - 1})")
                if index >= end:
                    raise BTFError(f"{what} (array index) refers to type id {index}, out of range (max {end - 1})")
                if a != 0:
                    raise BTFError(f"{what}: array size field must be 0")
                if elem == 0:
                    raise BTFError(f"{what}: array of void")
                if kind[elem] in _NOT_DATA:
                    raise BTFError(f"{what}: array of non-data type")
                succ[n] = (elem, index) if index else (elem,)
            elif k in (_ENUM, _ENUM64):
                if a not in _ENUM_SIZES:
                    raise BTFError(f"{what}: bad enum size {a}")
                per = 2 if k == _ENUM else 3
                for m in range(vlen):
                    ename = words[i + 3 + per * m]
                    if ename >= str_end:
                        raise BTFError(f"{what}: enumerator {m} name offset {ename} out of range")
                    if empty(ename):
                        raise BTFError(f"{what}: enumerator {m} has no name")
            elif k == _FUNC_PROTO:
                if a >= end:
                    raise BTFError(f"{what} (return type) refers to type id {a}, out of range (max {end - 1})")
                params = [a]
                for m in range(vlen):
                    pname, ptype = words[i + 3 + 2 * m], words[i + 4 + 2 * m]
                    if pname >= str_end:
                        raise BTFError(f"{what}: member {m} name offset {pname} out of range")
                    if ptype >= end:
                        raise BTFError(f"{what} (member {m}) refers to type id {ptype}, out of range (max {end - 1})")
                    if ptype == 0 and (m != vlen - 1 or (pname and not empty(pname))):
                        raise BTFError(f"{what}: parameter {m} is void")
                    if ptype and kind[ptype] in _NOT_DATA:
                        raise BTFError(f"{what}: parameter {m} of non-data kind {kind[ptype]}")
                    params.append(ptype)
                if a and kind[a] in _NOT_DATA:
                    raise BTFError(f"{what}: returns a non-data kind {kind[a]}")
                succ[n] = params
            elif k == _FUNC:
                if a >= end:
                    raise BTFError(f"{what} refers to type id {a}, out of range (max {end - 1})")
                if vlen > 2:
                    raise BTFError(f"{what}: bad function linkage {vlen}")
                if a == 0 or kind[a] != _FUNC_PROTO:
                    raise BTFError(f"{what}: function type is not a prototype")
                succ[n] = (a,)
            elif k == _VAR:
                if a >= end:
                    raise BTFError(f"{what} refers to type id {a}, out of range (max {end - 1})")
                if words[i + 3] > 2:
                    raise BTFError(f"{what}: bad variable linkage {words[i + 3]}")
                if a and kind[a] in _NOT_DATA:
                    raise BTFError(f"{what}: variable of non-data kind {kind[a]}")
                succ[n] = (a,)
                variables.append(tid)
            elif k == _DATASEC:
                for m in range(vlen):
                    vtype = words[i + 3 + 3 * m]
                    if vtype >= end:
                        raise BTFError(f"{what} (section variable {m}) refers to type id {vtype}, "
                                       f"out of range (max {end - 1})")
                    if vtype == 0:
                        raise BTFError(f"{what}: section entry {m} is void")
                    if kind[vtype] not in (_VAR, _FUNC):
                        raise BTFError(f"{what}: section entry {m} is not a variable")
                datasecs.append(tid)
            elif k == _FLOAT:
                if a not in _FLOAT_SIZES:
                    raise BTFError(f"{what}: bad float size {a}")
            elif k == _DECL_TAG:
                if a >= end:
                    raise BTFError(f"{what} refers to type id {a}, out of range (max {end - 1})")
                succ[n] = (a,)
                tags.append(tid)
            # _FWD: nothing beyond the name.

        self.check_loops(succ)
        sizes = self.sizes()
        self.check_composites(composites, sizes)
        self.check_variables(variables, datasecs, sizes)
        self.check_tags(tags)

    # -- graph properties -----------------------------------------------------

    def check_loops(self, succ: List[Sequence[int]]) -> None:
        """No reference loop that avoids every struct and union.

        Iterative depth-first search with three colours; the graph is the
        local records only (a base never refers to its split BTF)."""
        first = self.first
        n_types = self.n
        colour = bytearray(n_types)  # 0 new, 1 on the path, 2 finished
        for start in range(n_types):
            if colour[start] or not succ[start]:
                colour[start] = 2
                continue
            colour[start] = 1
            stack = [(start, iter(succ[start]))]
            while stack:
                node, it = stack[-1]
                for nxt in it:
                    j = nxt - first
                    if j < 0:
                        continue
                    c = colour[j]
                    if c == 1:
                        raise BTFError(f"type {nxt}: reference loop that passes through no named struct or union")
                    if c == 0:
                        if succ[j]:
                            colour[j] = 1
                            stack.append((j, iter(succ[j])))
                            break
                        colour[j] = 2
                else:
                    colour[node] = 2
                    stack.pop()

    def sizes(self) -> "array[int]":
        """Size in bytes of every local type (-1: none).

        References other than struct members form no loop by now, so a
        size is found by following a chain of qualifiers and arrays."""
        words = self.raw.words
        offsets = self.raw.offsets
        kinds = self.kinds
        first = self.first
        sizes = array("q", [-2]) * self.n  # -2: not computed yet
        for n in range(self.n):
            if sizes[n] != -2:
                continue
            chain = []
            cur = n + first
            while True:
                if cur < first:
                    size = self.base_size(cur)
                    break
                j = cur - first
                got = sizes[j]
                if got != -2:
                    size = got
                    break
                k = kinds[j]
                i = offsets[j]
                if k in _SIZED:
                    size = words[i + 2]
                    sizes[j] = size
                    break
                if k == _PTR:
                    size = sizes[j] = _POINTER_SIZE
                    break
                if k in _QUAL or k == _VAR or k == _ARRAY:
                    chain.append(j)
                    cur = words[i + 3] if k == _ARRAY else words[i + 2]
                    if cur == 0:
                        size = _NO_SIZE
                        break
                    continue
                size = sizes[j] = _NO_SIZE
                break
            for j in reversed(chain):
                i = offsets[j]
                if kinds[j] == _ARRAY:
                    if size == _NO_SIZE:
                        raise BTFError(f"type {j + first}: array of a type without size")
                    size = size * words[i + 5]
                    if size > _MAX_SIZE:
                        raise BTFError(f"type {j + first}: array size overflows")
                sizes[j] = size
        return sizes

    def base_size(self, tid: int) -> int:
        """Size of a type of the base (assumed valid, so a short chain)."""
        got = self.base_sizes.get(tid)
        if got is not None:
            return got
        raw = self.raw.base
        assert raw is not None
        mult = 1
        cur = tid
        for _ in range(1000):
            if cur == 0:
                size = _NO_SIZE
                break
            r = _record(raw, cur)
            if r.kind in _SIZED:
                size = r.a * mult
                break
            if r.kind == _PTR:
                size = _POINTER_SIZE * mult
                break
            if r.kind == _ARRAY:
                mult *= r.extra[2]
                cur = r.extra[0]
            elif r.kind in _QUAL or r.kind == _VAR:
                cur = r.a
            else:
                size = _NO_SIZE
                break
        else:
            raise BTFError(f"base type {tid}: reference chain too long")
        if size > _MAX_SIZE:
            raise BTFError(f"base type {tid}: size overflows")
        self.base_sizes[tid] = size
        return size

    def size_of(self, tid: int, sizes: "array[int]") -> int:
        if tid == 0:
            return _NO_SIZE
        if tid < self.first:
            return self.base_size(tid)
        return sizes[tid - self.first]

    def strip(self, tid: int) -> int:
        """The id under typedefs and qualifiers (no loops remain by now)."""
        first = self.first
        words = self.raw.words
        offsets = self.raw.offsets
        for _ in range(100000):
            if tid == 0:
                return 0
            if tid < first:
                r = _record(self.raw, tid)
                if r.kind not in _QUAL:
                    return tid
                tid = r.a
                continue
            if self.kinds[tid - first] not in _QUAL:
                return tid
            tid = words[offsets[tid - first] + 2]
        raise BTFError(f"type {tid}: qualifier chain too long")

    def check_composites(self, composites: List[int], sizes: "array[int]") -> None:
        """Members inside their struct; bitfields on integers; no struct
        that contains itself by value."""
        raw = self.raw
        words = raw.words
        offsets = raw.offsets
        first = self.first
        contains: Dict[int, List[int]] = {}
        for tid in composites:
            i = offsets[tid - first]
            info, size = words[i + 1], words[i + 2]
            kflag = info >> 31
            limit = size * 8
            inner: List[int] = []
            for m in range(info & 0xFFFF):
                j = i + 3 + 3 * m
                mtype, moff = words[j + 1], words[j + 2]
                if kflag:
                    bits, off = moff >> 24, moff & 0xFFFFFF
                else:
                    bits, off = 0, moff
                if bits:
                    if bits > 128:
                        raise BTFError(f"type {tid}: member {m} bitfield too wide ({bits})")
                    if self.all_kinds[self.strip(mtype)] not in (_INT, _ENUM, _ENUM64):
                        raise BTFError(f"type {tid}: member {m} bitfield of non-integer type")
                    end = off + bits
                else:
                    if off % 8:
                        raise BTFError(f"type {tid}: member {m} is not byte aligned")
                    msize = self.size_of(mtype, sizes)
                    if msize == _NO_SIZE:
                        raise BTFError(f"type {tid}: member {m} has a type without size")
                    end = off + msize * 8
                    held = self.element(mtype)
                    if held >= first and self.kinds[held - first] in (_STRUCT, _UNION):
                        inner.append(held)
                if end > limit:
                    raise BTFError(f"type {tid}: member {m} ends at bit {end}, past the size {size}")
            if inner:
                contains[tid] = inner
        self.check_containment(contains)

    def element(self, tid: int) -> int:
        """What a by-value member holds: the id under qualifiers and arrays."""
        got = self.elements.get(tid)
        if got is None:
            got = self.elements[tid] = self._element(tid)
        return got

    def _element(self, tid: int) -> int:
        first = self.first
        words = self.raw.words
        offsets = self.raw.offsets
        for _ in range(100000):
            tid = self.strip(tid)
            if tid < first or self.kinds[tid - first] != _ARRAY:
                return tid
            tid = words[offsets[tid - first] + 3]
        raise BTFError(f"type {tid}: array chain too long")

    def check_containment(self, contains: Dict[int, List[int]]) -> None:
        colour: Dict[int, int] = {}
        for start in contains:
            if start in colour:
                continue
            colour[start] = 1
            stack = [(start, iter(contains[start]))]
            while stack:
                node, it = stack[-1]
                for nxt in it:
                    c = colour.get(nxt, 0)
                    if c == 1:
                        raise BTFError(f"type {nxt}: struct or union contains itself "
                                       "(reference loop without a pointer in between)")
                    if c == 0:
                        colour[nxt] = 1
                        stack.append((nxt, iter(contains.get(nxt, ()))))
                        break
                else:
                    colour[node] = 2
                    stack.pop()

    def check_variables(self, variables: List[int], datasecs: List[int], sizes: "array[int]") -> None:
        raw = self.raw
        words = raw.words
        offsets = raw.offsets
        first = self.first
        for tid in variables:
            # A variable needs a size, except a typeless ksym (void, possibly
            # const) or an extern of an incomplete struct.
            if sizes[tid - first] == _NO_SIZE:
                target = self.strip(words[offsets[tid - first] + 2])
                if target and self.all_kinds[target] != _FWD:
                    raise BTFError(f"type {tid}: variable of a type without size")
        for tid in datasecs:
            i = offsets[tid - first]
            info, size = words[i + 1], words[i + 2]
            spans = []
            for m in range(info & 0xFFFF):
                j = i + 3 + 3 * m
                vtype, voff, vsize = words[j], words[j + 1], words[j + 2]
                if self.all_kinds[vtype] == _VAR:
                    need = self.size_of(vtype, sizes)
                    if need != _NO_SIZE and vsize < need:
                        raise BTFError(f"type {tid}: section entry {m} size {vsize} smaller than its type")
                if size and voff + vsize > size:
                    raise BTFError(f"type {tid}: section entry {m} past the section size {size}")
                spans.append((voff, vsize))
            # Size 0 means an object file the loader has not fixed up yet:
            # every variable still sits at offset 0.
            if size:
                spans.sort()
                for (o1, s1), (o2, _) in zip(spans, spans[1:]):
                    if o1 + s1 > o2:
                        raise BTFError(f"type {tid}: section entries overlap at offset {o2}")

    def check_tags(self, tags: List[int]) -> None:
        raw = self.raw
        words = raw.words
        offsets = raw.offsets
        first = self.first
        for tid in tags:
            i = offsets[tid - first]
            target = words[i + 2]
            comp = struct.unpack("i", struct.pack("I", words[i + 3]))[0]
            if target == 0:
                raise BTFError(f"type {tid}: decl tag on void")
            tk = self.all_kinds[target]
            if tk not in _TAG_TARGETS:
                raise BTFError(f"type {tid}: decl tag on kind {tk}")
            if comp < -1:
                raise BTFError(f"type {tid}: bad decl tag component {comp}")
            if comp >= 0:
                if tk in (_STRUCT, _UNION):
                    count = _record(raw, target).vlen
                elif tk == _FUNC:
                    count = _record(raw, _record(raw, target).a).vlen
                else:
                    raise BTFError(f"type {tid}: decl tag component on kind {tk}")
                if comp >= count:
                    raise BTFError(f"type {tid}: decl tag component {comp} out of range")


def _record(raw: RawBTF, tid: int) -> Record:
    while tid < raw.first_id:
        assert raw.base is not None
        raw = raw.base
    return raw.record(tid)


def kinds_of(raw: RawBTF) -> List[int]:
    """Kind of every type id of ``raw`` and its base, indexed by id (0: void)."""
    out: List[int] = [0]
    chain = []
    blob: Optional[RawBTF] = raw
    while blob is not None:
        chain.append(blob)
        blob = blob.base
    for blob in reversed(chain):
        words = blob.words
        out.extend((words[off + 1] >> 24) & 0x1F for off in blob.offsets)
    return out

