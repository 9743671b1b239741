"""Pre-flight checks for objects handed to libbpf.

libbpf 1.1.2's ``bpf_object__open_mem`` trusts parts of its input: it checks
that BTF *fits* in its section but not that the type ids and string offsets
inside it point anywhere, so a single flipped byte can make it dereference
NULL (``btf__type_by_id`` of an out-of-range id, ``strcmp`` on the NULL name
of an out-of-range string offset) or loop for ever (a typedef that refers to
itself).  :func:`check_object` rejects such objects before libbpf sees them.

The checks are deliberately no looser than libbpf's own and, for real
compiler output, no stricter than what a well-formed object satisfies: every
object that clang emits and libbpf opens passes.
"""

from __future__ import annotations

import struct
from typing import List, Optional, Tuple

from . import _elf
from .errors import InvalidObjectError

__all__ = ["check_object", "check_btf", "check_btf_ext"]

BTF_MAGIC = 0xEB9F
# Largest .bss-like section accepted (the kernel's array value limit,
# KMALLOC_MAX_SIZE, is far below this on every architecture).
MAX_NOBITS_SIZE = 1 << 30
_BTF_HDR_SIZE = 24
# Sections without code whose relocations libbpf reads (bpf_object__elf_collect).
_RELOCATED_DATA = frozenset({".maps", ".struct_ops", ".struct_ops.link"})

# BTF kinds (include/uapi/linux/btf.h).
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, DATASEC = 9, 10, 11, 12, 13, 14, 15
FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = 16, 17, 18, 19

# Kinds whose single ``type`` field refers to another type.
_REF_KINDS = {PTR, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, VAR, DECL_TAG, TYPE_TAG}
# Kinds libbpf follows in loops without a depth limit (skip_mods_and_typedefs
# and friends); a cycle made only of these hangs it.  A legal cycle always
# passes through a struct, union or function prototype.
_CHAIN_KINDS = {PTR, TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG, VAR, ARRAY, DECL_TAG, FUNC}


class _BTFInfo:
    """What later checks need to know about a validated BTF blob."""

    def __init__(self) -> None:
        self.kinds: List[int] = [0]
        self.str_len = 0


def _btf_fail(msg: str) -> InvalidObjectError:
    return InvalidObjectError(f"invalid BTF: {msg}")


def check_btf(data: bytes) -> _BTFInfo:
    """Validate a raw ``.BTF`` blob (either byte order).

    Checks header layout, that every type record is complete and of a known
    kind, that every type id refers to an existing type, that every name
    offset points into the string section, and that no chain of modifiers,
    typedefs, pointers or arrays loops back on itself.
    """
    if len(data) < 8:
        raise _btf_fail("truncated header")
    if struct.unpack_from("<H", data)[0] == BTF_MAGIC:
        e = "<"
    elif struct.unpack_from(">H", data)[0] == BTF_MAGIC:
        e = ">"
    else:
        raise _btf_fail("bad magic")
    version, flags, hdr_len = struct.unpack_from(e + "BBI", data, 2)
    if version != 1:
        raise _btf_fail(f"unsupported version {version}")
    if hdr_len < _BTF_HDR_SIZE or hdr_len > len(data):
        raise _btf_fail(f"header length {hdr_len} invalid for {len(data)} bytes")
    type_off, type_len, str_off, str_len = struct.unpack_from(e + "IIII", data, 8)
    if hdr_len > _BTF_HDR_SIZE and any(data[_BTF_HDR_SIZE:hdr_len]):
        raise _btf_fail("unknown non-zero header fields")
    body = len(data) - hdr_len
    if str_off + str_len > body or type_off + type_len > str_off:
        raise _btf_fail("type or string section out of bounds")
    if type_off % 4 or type_len % 4:
        raise _btf_fail("type section not 4-byte aligned")
    strs = data[hdr_len + str_off : hdr_len + str_off + str_len]
    if not strs or strs[0] != 0 or strs[-1] != 0:
        raise _btf_fail("string section must start and end with NUL")

    def name(off: int, what: str) -> None:
        if off >= str_len:
            raise _btf_fail(f"{what}: name offset {off} outside string section of {str_len} bytes")

    # First pass: record boundaries, kinds and every type-id reference.
    types = data[hdr_len + type_off : hdr_len + type_off + type_len]
    u32x3 = struct.Struct(e + "III")
    kinds: List[int] = [0]
    targets: List[int] = [0]  # the "next" type for _CHAIN_KINDS, else -1
    refs: List[Tuple[int, int]] = []  # (from type id, referenced id)
    pos = 0
    tid = 0
    while pos < len(types):
        tid += 1
        if pos + 12 > len(types):
            raise _btf_fail(f"type [{tid}] truncated")
        name_off, info, size_type = u32x3.unpack_from(types, pos)
        pos += 12
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        name(name_off, f"type [{tid}]")
        nxt = -1
        if kind in (INT, FWD, FLOAT):
            extra = 4 if kind == INT else 0
        elif kind in _REF_KINDS:
            extra = 0
            if kind == VAR:
                extra = 4
            elif kind == DECL_TAG:
                extra = 4
            refs.append((tid, size_type))
            nxt = size_type
        elif kind == ARRAY:
            extra = 12
            if pos + extra > len(types):
                raise _btf_fail(f"type [{tid}] truncated")
            elem, index, _nelems = u32x3.unpack_from(types, pos)
            refs.append((tid, elem))
            refs.append((tid, index))
            nxt = elem
        elif kind in (STRUCT, UNION):
            extra = 12 * vlen
            if pos + extra > len(types):
                raise _btf_fail(f"type [{tid}] truncated")
            for i in range(vlen):
                m_name, m_type, _m_off = u32x3.unpack_from(types, pos + 12 * i)
                name(m_name, f"type [{tid}] member {i}")
                refs.append((tid, m_type))
        elif kind == ENUM:
            extra = 8 * vlen
            if pos + extra > len(types):
                raise _btf_fail(f"type [{tid}] truncated")
            for i in range(vlen):
                name(struct.unpack_from(e + "I", types, pos + 8 * i)[0], f"type [{tid}] value {i}")
        elif kind == ENUM64:
            extra = 12 * vlen
            if pos + extra > len(types):
                raise _btf_fail(f"type [{tid}] truncated")
            for i in range(vlen):
                name(struct.unpack_from(e + "I", types, pos + 12 * i)[0], f"type [{tid}] value {i}")
        elif kind == FUNC_PROTO:
            extra = 8 * vlen
            if pos + extra > len(types):
                raise _btf_fail(f"type [{tid}] truncated")
            refs.append((tid, size_type))
            for i in range(vlen):
                p_name, p_type = struct.unpack_from(e + "II", types, pos + 8 * i)
                name(p_name, f"type [{tid}] parameter {i}")
                # A trailing type 0 parameter marks varargs; any id must exist.
                refs.append((tid, p_type))
        elif kind == DATASEC:
            extra = 12 * vlen
            if pos + extra > len(types):
                raise _btf_fail(f"type [{tid}] truncated")
            for i in range(vlen):
                v_type = u32x3.unpack_from(types, pos + 12 * i)[0]
                refs.append((tid, v_type))
        else:
            raise _btf_fail(f"type [{tid}] has unknown kind {kind}")
        if pos + extra > len(types):
            raise _btf_fail(f"type [{tid}] truncated")
        pos += extra
        kinds.append(kind)
        targets.append(nxt)

    count = len(kinds)
    for src, ref in refs:
        if ref >= count:
            raise _btf_fail(f"type [{src}] refers to type [{ref}], but there are only {count - 1} types")
    for tid, kind in enumerate(kinds):
        if kind == FUNC and kinds[targets[tid]] != FUNC_PROTO:
            raise _btf_fail(f"function [{tid}] does not refer to a function prototype")
        if kind == DATASEC:
            pass
    # Cycle check over chains of _CHAIN_KINDS.  state: 0 unseen, 1 on the
    # current path, 2 known to terminate.
    state = [0] * count
    for start in range(1, count):
        if state[start]:
            continue
        path = []
        t = start
        while t > 0 and kinds[t] in _CHAIN_KINDS and state[t] == 0:
            state[t] = 1
            path.append(t)
            t = targets[t]
        if t > 0 and state[t] == 1:
            raise _btf_fail(f"type [{t}] refers to itself")
        for p in path:
            state[p] = 2

    info = _BTFInfo()
    info.kinds = kinds
    info.str_len = str_len
    return info


def check_btf_ext(data: bytes, btf: Optional[_BTFInfo]) -> None:
    """Validate a raw ``.BTF.ext`` blob against its ``.BTF``.

    Mirrors libbpf's layout checks and additionally requires that section
    names, function type ids and line-info file/line strings exist.
    """
    if len(data) < 8:
        raise InvalidObjectError("invalid BTF.ext: truncated header")
    if struct.unpack_from("<H", data)[0] == BTF_MAGIC:
        e = "<"
    elif struct.unpack_from(">H", data)[0] == BTF_MAGIC:
        e = ">"
    else:
        raise InvalidObjectError("invalid BTF.ext: bad magic")
    version, flags, hdr_len = struct.unpack_from(e + "BBI", data, 2)
    if version != 1 or flags:
        raise InvalidObjectError(f"invalid BTF.ext: version {version}, flags {flags}")
    if hdr_len < 24 or hdr_len > len(data):
        raise InvalidObjectError(f"invalid BTF.ext: header length {hdr_len}")
    fields = struct.unpack_from(e + "IIII", data, 8)
    segs = [("func_info", fields[0], fields[1], 8), ("line_info", fields[2], fields[3], 16)]
    if hdr_len >= 32:
        core = struct.unpack_from(e + "II", data, 24)
        segs.append(("core_relo", core[0], core[1], 16))
    str_len = btf.str_len if btf is not None else 0
    count = len(btf.kinds) if btf is not None else 1
    for what, off, length, min_rec in segs:
        if length == 0:
            continue
        start = hdr_len + off
        if off % 4 or start + length > len(data):
            raise InvalidObjectError(f"invalid BTF.ext: {what} (off {off} len {length}) out of bounds")
        if length < 4:
            raise InvalidObjectError(f"invalid BTF.ext: {what} has no record size")
        (rec_size,) = struct.unpack_from(e + "I", data, start)
        if rec_size < min_rec or rec_size % 4:
            raise InvalidObjectError(f"invalid BTF.ext: {what} record size {rec_size}")
        pos = start + 4
        end = start + length
        if pos == end:
            raise InvalidObjectError(f"invalid BTF.ext: {what} has no records")
        while pos < end:
            if pos + 8 > end:
                raise InvalidObjectError(f"invalid BTF.ext: {what} section header truncated")
            sec_name, num = struct.unpack_from(e + "II", data, pos)
            pos += 8
            if num == 0 or pos + num * rec_size > end:
                raise InvalidObjectError(f"invalid BTF.ext: {what} record count {num} invalid")
            if sec_name >= str_len:
                raise InvalidObjectError(f"invalid BTF.ext: {what} section name offset {sec_name}")
            for r in range(num):
                rec = pos + r * rec_size
                if what == "func_info":
                    (type_id,) = struct.unpack_from(e + "I", data, rec + 4)
                    if type_id >= count or (btf is not None and btf.kinds[type_id] != FUNC):
                        raise InvalidObjectError(f"invalid BTF.ext: func_info type [{type_id}] is not a function")
                elif what == "line_info":
                    file_off, line_off = struct.unpack_from(e + "II", data, rec + 4)
                    if file_off >= str_len or line_off >= str_len:
                        raise InvalidObjectError("invalid BTF.ext: line_info string offset out of range")
                else:
                    type_id, access_off = struct.unpack_from(e + "II", data, rec + 4)
                    if type_id >= count or access_off >= str_len:
                        raise InvalidObjectError("invalid BTF.ext: core_relo type id or access string out of range")
            pos += num * rec_size


def _check_insn_relocations(target: _elf.Section, relocs: List[_elf.Relocation]) -> None:
    """Relocated instructions must be whole; a 64-bit immediate load is two
    slots, and libbpf patches the second one without checking it exists."""
    code = target.data
    for rel in relocs:
        if rel.offset % 8 or rel.offset + 8 > len(code):
            raise InvalidObjectError(
                f"invalid ELF object: relocation at {rel.offset} is not on an instruction of {target}"
            )
        if code[rel.offset] == 0x18 and rel.offset + 16 > len(code):
            raise InvalidObjectError(
                f"invalid ELF object: relocated 64-bit load at {rel.offset} is cut off by the end of {target}"
            )


def check_object(data: bytes, elf: Optional[_elf.ElfFile] = None) -> None:
    """Raise InvalidObjectError unless ``data`` is safe to give libbpf.

    Safe means libbpf 1.1.2's ``bpf_object__open_mem`` can neither crash nor
    hang on it; libbpf may still refuse it with an error.  ``elf`` is
    ``data`` already parsed, if the caller has it.
    """
    if elf is None:
        elf = _elf.ElfFile(data)
    shnum = len(elf.sections)
    for sym in elf.symbols:
        # libbpf checks "st_value + st_size > section size" in 64-bit
        # arithmetic, so a huge st_value wraps around and it copies a
        # program from far outside the buffer.
        if sym.type in (_elf.STT_FUNC, _elf.STT_OBJECT) and 0 < sym.shndx < _elf.SHN_LORESERVE:
            home = elf.sections[sym.shndx]
            if sym.value + sym.size > home.size:
                raise InvalidObjectError(
                    f"invalid ELF object: symbol {sym.index} ({sym.name}) extends past the end of {home}"
                )
    for sec in elf.sections:
        # A NOBITS section occupies no file space, so its size is unchecked
        # by the file length; libbpf maps (and we copy) that much memory
        # for .bss.  No kernel accepts an array value anywhere near this.
        if sec.type == _elf.SHT_NOBITS and sec.size > MAX_NOBITS_SIZE:
            raise InvalidObjectError(f"invalid ELF object: {sec} of {sec.size} bytes is implausibly large")
        if sec.type in (_elf.SHT_REL, _elf.SHT_RELA):
            if sec.info >= shnum:
                raise InvalidObjectError(f"invalid ELF object: {sec} applies to section {sec.info} of {shnum}")
            target = elf.sections[sec.info]
            if not target.flags & _elf.SHF_EXECINSTR and target.name not in _RELOCATED_DATA:
                continue  # libbpf skips these (.rel.BTF, .rel.BTF.ext, DWARF)
            # Bounds-checks every entry's symbol index and offset.
            relocs = elf._parse_relocations(sec, target)
            if target.flags & _elf.SHF_EXECINSTR and target.type == _elf.SHT_PROGBITS:
                _check_insn_relocations(target, relocs)

    btf_info: Optional[_BTFInfo] = None
    # libbpf uses the last section of each name; check every one.
    for sec in elf.sections:
        if sec.name == ".BTF":
            btf_info = check_btf(sec.data)
    for sec in elf.sections:
        if sec.name == ".BTF.ext":
            check_btf_ext(sec.data, btf_info)
