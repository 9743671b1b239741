"""Link the functions a program calls into its instructions.

An ELF program calls BPF functions that live in ``.text`` (or elsewhere in
its own section).  libbpf appends them while loading a whole object; a
program loaded alone from its :class:`~ebpf.ProgramSpec` needs them in
``ProgramSpec.instructions``.  So, like cilium/ebpf's ELF reader, every
program's instructions are the program followed by each function it reaches,
once, each starting with a ``symbol`` and every call or function-pointer load
carrying a ``reference`` to it.  ``Instructions.encode()`` then resolves the
relative offsets, wherever the user moves things.

Map loads get the same treatment: a ``reference`` to the map's key, with
``src`` and offset set as the kernel wants them for data sections
(``BPF_PSEUDO_MAP_VALUE`` plus the offset of the global in the section).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple

from .asm import Instructions, Pseudo

if TYPE_CHECKING:  # pragma: no cover
    from ._elf import ElfFile, Relocation
    from .spec import CollectionSpec

_STT_SECTION, _STT_FUNC = 3, 2
_SHF_EXECINSTR = 0x4


@dataclass
class _Func:
    name: str
    section: str
    start: int  # byte offset in the section
    size: int


class _Object:
    """Functions and relocations of one ELF, looked up by section offset."""

    def __init__(self, spec: "CollectionSpec", elf: "ElfFile") -> None:
        self.spec = spec
        self.elf = elf
        self.order = elf.byteorder
        self.funcs: Dict[Tuple[str, int], _Func] = {}
        self.by_section: Dict[str, List[_Func]] = {}
        self.relocs: Dict[str, Dict[int, "Relocation"]] = {}
        self.sections = {s.name: s for s in elf.sections if s.flags & _SHF_EXECINSTR}
        for sym in elf.symbols:
            if sym.type != _STT_FUNC or not 0 < sym.shndx < len(elf.sections):
                continue
            sec = elf.sections[sym.shndx]
            if sec.name not in self.sections:
                continue
            f = _Func(sym.name, sec.name, sym.value, sym.size)
            self.funcs[(sec.name, sym.value)] = f
            self.by_section.setdefault(sec.name, []).append(f)
        for name, sec in self.sections.items():
            self.relocs[name] = {r.offset: r for r in elf.relocations(sec)}
        self.core = _core_relo_offsets(elf)
        # Loads of extern symbols (__kconfig, __ksym, kfuncs) are resolved by
        # libbpf against the running kernel, like CO-RE relocations.
        for name, relocs in self.relocs.items():
            ext = [at for at, r in relocs.items() if r.symbol.shndx == 0 and r.symbol.name]
            if ext:
                self.core.setdefault(name, []).extend(ext)

    def func_at(self, section: str, offset: int) -> Optional[_Func]:
        return self.funcs.get((section, offset))

    def home(self, r: "Relocation") -> str:
        shndx = r.symbol.shndx
        if 0 < shndx < len(self.elf.sections):
            return self.elf.sections[shndx].name
        return ""

    def annotate(self, insns: Instructions, section: str, start: int) -> Set[Tuple[str, int]]:
        """Set references on map loads, calls and function-pointer loads of
        the code at ``start`` in ``section``; returns the functions called."""
        called: Set[Tuple[str, int]] = set()
        relocs = self.relocs.get(section, {})
        for i, slot in enumerate(insns.raw_offsets()):
            ins = insns[i]
            if not (ins.is_load_imm64 or ins.is_function_call):
                continue
            at = start + slot * 8
            r = relocs.get(at)
            target_sec = self.home(r) if r is not None else ""
            if ins.is_function_call:
                if r is None:
                    # A call within the section, already relative.
                    target = (section, at + (ins.constant + 1) * 8)
                elif r.symbol.type == _STT_SECTION:
                    target = (target_sec, r.symbol.value + (ins.constant + 1) * 8)
                else:
                    target = (target_sec, r.symbol.value)
                f = self.func_at(*target)
                if f is not None:
                    insns[i] = ins.with_reference(f.name)
                    called.add(target)
                continue
            if r is None:
                continue
            if r.symbol.shndx == 0:
                # An extern: libbpf resolves it at load.  A __kconfig one
                # lives in the .kconfig map, which the program then needs.
                v = self.spec.variables.get(r.symbol.name)
                if v is not None and v.section in self.spec.maps:
                    insns[i] = ins.replace(src=Pseudo.MAP_VALUE, constant=v.offset << 32, reference=v.section)
                continue
            if target_sec in self.sections:
                # The address of a BPF function (bpf_loop callbacks and such):
                # the constant is a byte offset from the symbol.
                off = r.symbol.value + (ins.constant & 0xFFFFFFFF) if r.symbol.type == _STT_SECTION else r.symbol.value
                f = self.func_at(target_sec, off)
                if f is not None:
                    insns[i] = ins.replace(src=Pseudo.FUNC, constant=0, reference=f.name)
                    called.add((target_sec, off))
                continue
            key = r.symbol.name if target_sec in (".maps", "maps") else target_sec
            ms = self.spec.maps.get(key)
            if ms is None:
                continue
            if ms.is_data_section:
                # A global: the kernel wants the map fd and the offset of the
                # variable in the section's value.
                offset = (ins.constant & 0xFFFFFFFF) + (r.symbol.value if r.symbol.type != _STT_SECTION else 0)
                insns[i] = ins.replace(src=Pseudo.MAP_VALUE, constant=offset << 32, reference=key)
            else:
                insns[i] = ins.replace(src=Pseudo.MAP_FD, constant=0, reference=key)
        return called

    def function(self, key: Tuple[str, int]) -> Tuple[Instructions, Set[Tuple[str, int]]]:
        f = self.funcs[key]
        data = self.sections[f.section].data[f.start:f.start + f.size]
        insns = Instructions.decode(data, self.order)
        called = self.annotate(insns, f.section, f.start)
        if insns:
            insns[0] = insns[0].replace(symbol=f.name)
        return insns, called


def _core_relo_offsets(elf: "ElfFile") -> Dict[str, List[int]]:
    """Section name -> byte offsets of instructions with CO-RE relocations
    (from ``.BTF.ext``); empty when there are none or it cannot be read."""
    ext, btf = elf.section_by_name(".BTF.ext"), elf.section_by_name(".BTF")
    if ext is None or btf is None:
        return {}
    try:
        from .btf.parse import RawBTF

        strings = RawBTF(btf.data)
        data = ext.data
        e = "<" if elf.byteorder == "little" else ">"
        hdr_len = struct.unpack_from(e + "I", data, 4)[0]
        if hdr_len < 32:
            return {}
        off, length = struct.unpack_from(e + "II", data, 24)
        pos, end = hdr_len + off, hdr_len + off + length
        if length < 4:
            return {}
        rec_size = struct.unpack_from(e + "I", data, pos)[0]
        pos += 4
        out: Dict[str, List[int]] = {}
        while pos + 8 <= end and rec_size >= 4:
            name_off, count = struct.unpack_from(e + "II", data, pos)
            pos += 8
            name = strings.string(name_off)
            out.setdefault(name, []).extend(
                struct.unpack_from(e + "I", data, pos + i * rec_size)[0] for i in range(count))
            pos += count * rec_size
        return out
    except Exception:  # validated before libbpf saw it; be lenient here
        return {}


def link(spec: "CollectionSpec", elf: "ElfFile") -> None:
    """Decode every program of ``spec`` (read from ``elf``) into linked
    ``asm.Instructions``; records the as-read encoding for change detection."""
    obj = _Object(spec, elf)
    cache: Dict[Tuple[str, int], Tuple[Instructions, Set[Tuple[str, int]]]] = {}
    for name, prog in spec.programs.items():
        raw = prog._elf_raw if prog._elf_raw is not None else bytes(prog.instructions)
        insns = Instructions.decode(raw, obj.order)
        me = next((f for f in obj.by_section.get(prog.section_name, []) if f.name == name), None)
        start = me.start if me is not None else 0
        todo = sorted(obj.annotate(insns, prog.section_name, start))
        seen = {(prog.section_name, start)}
        while todo:
            key = todo.pop(0)
            if key in seen:
                continue
            seen.add(key)
            if key not in cache:
                cache[key] = obj.function(key)
            body, called = cache[key]
            insns.extend(body.copy())
            todo.extend(sorted(called - seen))
        try:
            encoded = bytes(insns.encode(obj.order))
        except Exception:
            # Unresolvable references (a broken object): keep the program
            # as libbpf sees it; loading will say what is wrong.
            insns, encoded = Instructions.decode(raw, obj.order), raw
        prog.instructions = insns
        prog._elf_insns = encoded
        # CO-RE and externs are libbpf's job: a program that needs them loads
        # through the object it came from even when loaded alone (see
        # programs.Program).
        spans = {(prog.section_name, start, me.size if me is not None else len(raw))}
        spans.update((sec, lo, obj.funcs[(sec, lo)].size) for sec, lo in seen if (sec, lo) in obj.funcs)
        prog._collection = spec if any(
            lo <= at < lo + size for sec, lo, size in spans for at in obj.core.get(sec, ())) else None


__all__ = ["link"]
