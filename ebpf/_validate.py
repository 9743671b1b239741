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
from typing import List, Optional

from . import _elf
from .btf.parse import BTFError, RawBTF
from .btf.validation import kinds_of, validate_raw
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


class _BTFInfo:
    """What later checks need to know about a validated BTF blob."""

    def __init__(self) -> None:
        self.kinds: List[int] = [0]
        self.str_len = 0


def check_btf(data: bytes) -> _BTFInfo:
    """Validate a raw ``.BTF`` blob (either byte order) with the BTF package's
    validator (:func:`ebpf.btf.validation.validate_raw`: the one that also
    guards kernel types handed to libbpf)."""
    try:
        raw = RawBTF(data)
        validate_raw(raw)
    except BTFError as exc:
        raise InvalidObjectError(f"invalid BTF: {exc}") from None
    info = _BTFInfo()
    info.kinds = kinds_of(raw)
    info.str_len = len(raw.strings)
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
