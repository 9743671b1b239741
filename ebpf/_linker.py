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

Reading an object only needs the call graph (which maps a program uses,
whether it needs libbpf's CO-RE), and that comes from the relocations and
the opcode bytes alone; decoding into ``asm.Instructions`` waits until a
user looks at them (:meth:`Linker.decode`).
"""

from __future__ import annotations

import bisect
import struct
from typing import TYPE_CHECKING, Dict, List, Mapping, NamedTuple, Optional, Set, Tuple, cast

from .asm import Instructions, Pseudo

if TYPE_CHECKING:  # pragma: no cover
    from ._elf import ElfFile, Relocation

__all__ = ["Linker", "ProgramGraph"]

_STT_SECTION, _STT_FUNC = 3, 2
_SHF_EXECINSTR = 0x4
_CALL, _LDDW = 0x85, 0x18
_PSEUDO_CALL = 1

FuncKey = Tuple[str, int]  # (section name, byte offset of the function)


class _Func(NamedTuple):
    name: str
    section: str
    start: int  # byte offset in the section
    size: int


class _Site(NamedTuple):
    """What one call or 64-bit load in the code refers to."""

    kind: str  # "call", "func" (address of a function), "map", "value" (a global)
    target: object  # FuncKey for call/func, the map key for map/value
    offset: int = 0  # value: byte offset of the global in its section


class ProgramGraph(NamedTuple):
    """What the reader learns of one program without decoding it."""

    functions: Tuple[FuncKey, ...]  # reached functions, in the order they are appended
    references: Tuple[str, ...]  # map keys its linked code loads, sorted
    core: bool  # has CO-RE relocations or externs: must load through libbpf


class Linker:
    """Functions, relocations and call sites of one ELF.

    ``maps`` tells for each key of the spec's maps whether it holds a data
    section (loads of it are loads of globals); ``externs`` maps an extern
    variable (``__kconfig``) to the data section holding it and its offset.
    """

    def __init__(self, elf: "ElfFile", maps: Mapping[str, bool], externs: Mapping[str, Tuple[str, int]]) -> None:
        self.elf = elf
        self.order = elf.byteorder
        self.maps = maps
        self.externs = externs
        self.funcs: Dict[FuncKey, _Func] = {}
        self.by_name: Dict[Tuple[str, str], _Func] = {}
        self.sections = {s.name: s for s in elf.sections if s.flags & _SHF_EXECINSTR}
        for sym in elf.symbols:
            if sym.type != _STT_FUNC or not 0 < sym.shndx < len(elf.sections):
                continue
            sec = elf.sections[sym.shndx]
            if sec.name not in self.sections:
                continue
            f = _Func(sym.name, sec.name, sym.value, sym.size)
            self.funcs[(sec.name, sym.value)] = f
            self.by_name.setdefault((sec.name, sym.name), f)
        self.relocs: Dict[str, Dict[int, "Relocation"]] = {
            name: {r.offset: r for r in elf.relocations(sec)} for name, sec in self.sections.items()
        }
        self.core = _core_relo_offsets(elf)
        # Loads of extern symbols (__kconfig, __ksym, kfuncs) are resolved by
        # libbpf against the running kernel, like CO-RE relocations.
        for name, relocs in self.relocs.items():
            ext = [at for at, r in relocs.items() if r.symbol.shndx == 0 and r.symbol.name]
            if ext:
                self.core.setdefault(name, []).extend(ext)
        self._sites: Dict[str, Tuple[List[int], Dict[int, _Site]]] = {}
        self._i32 = struct.Struct("<i" if self.order == "little" else ">i")

    # -- the call graph, from bytes ------------------------------------------

    def _home(self, r: "Relocation") -> str:
        shndx = r.symbol.shndx
        if 0 < shndx < len(self.elf.sections):
            return self.elf.sections[shndx].name
        return ""

    def _src(self, regs: int) -> int:
        return regs >> 4 if self.order == "little" else regs & 0x0F

    def sites(self, section: str, start: int, size: int) -> Dict[int, _Site]:
        """Byte offset in ``section`` -> what the call or load there refers
        to, for the code at ``start`` (``size`` bytes)."""
        offsets, found = self._section_sites(section)
        lo, hi = bisect.bisect_left(offsets, start), bisect.bisect_left(offsets, start + size)
        return {at: found[at] for at in offsets[lo:hi]}

    def _section_sites(self, section: str) -> Tuple[List[int], Dict[int, _Site]]:
        """The call sites of a whole section, once: their sorted offsets and
        what each refers to."""
        done = self._sites.get(section)
        if done is not None:
            return done
        found: Dict[int, _Site] = {}
        sec = self.sections.get(section)
        code = sec.data if sec is not None else b""
        relocs = self.relocs.get(section, {})
        for at, r in relocs.items():
            if at + 8 <= len(code):
                site = self._relocated(code, at, r)
                if site is not None:
                    found[at] = site
        # Calls within the section need no relocation: they are relative.
        at = code.find(b"\x85")
        while at >= 0:
            if at % 8 == 0 and at not in relocs and at + 8 <= len(code) and self._src(code[at + 1]) == _PSEUDO_CALL:
                target = (section, at + (self._i32.unpack_from(code, at + 4)[0] + 1) * 8)
                if target in self.funcs:
                    found[at] = _Site("call", target)
            at = code.find(b"\x85", at + 1)
        done = self._sites[section] = (sorted(found), found)
        return done

    def _relocated(self, code: bytes, at: int, r: "Relocation") -> Optional[_Site]:
        opcode, src = code[at], self._src(code[at + 1])
        imm = self._i32.unpack_from(code, at + 4)[0]
        home = self._home(r)
        if opcode == _CALL:
            if src != _PSEUDO_CALL:
                return None
            if r.symbol.type == _STT_SECTION:
                target = (home, r.symbol.value + (imm + 1) * 8)
            else:
                target = (home, r.symbol.value)
            return _Site("call", target) if target in self.funcs else None
        if opcode != _LDDW:
            return None
        if r.symbol.shndx == 0:
            # An extern: libbpf resolves it at load.  A __kconfig one lives
            # in the .kconfig map, which the program then needs.
            ext = self.externs.get(r.symbol.name)
            if ext is not None and ext[0] in self.maps:
                return _Site("value", ext[0], ext[1])
            return None
        if home in self.sections:
            # The address of a BPF function (bpf_loop callbacks and such):
            # the constant is a byte offset from the symbol.
            off = r.symbol.value + (imm & 0xFFFFFFFF) if r.symbol.type == _STT_SECTION else r.symbol.value
            return _Site("func", (home, off)) if (home, off) in self.funcs else None
        key = r.symbol.name if home in (".maps", "maps") else home
        is_data = self.maps.get(key)
        if is_data is None:
            return None
        if is_data:
            # A global: the kernel wants the map fd and the offset of the
            # variable in the section's value.
            offset = (imm & 0xFFFFFFFF) + (r.symbol.value if r.symbol.type != _STT_SECTION else 0)
            return _Site("value", key, offset)
        return _Site("map", key)

    def _own(self, name: str, section: str, length: int) -> Tuple[int, int]:
        me = self.by_name.get((section, name))
        return (me.start, me.size) if me is not None else (0, length)

    def program(self, name: str, section: str, length: int) -> ProgramGraph:
        """The call graph of the program ``name`` of ``section`` (``length``
        bytes of its own code)."""
        start, size = self._own(name, section, length)
        root = (section, start)
        order: List[FuncKey] = []
        seen: Set[FuncKey] = {root}
        refs: Set[str] = set()
        spans = [(section, start, size)]
        # libbpf's order (bpf_object__reloc_code): depth first, each
        # function's callees in the order they are referenced, so that the
        # spec's code is the code libbpf loads and their tags agree.
        todo = self._called(self.sites(section, start, size), refs)[::-1]
        while todo:
            key = todo.pop()
            if key in seen:
                continue
            seen.add(key)
            order.append(key)
            f = self.funcs[key]
            spans.append((f.section, f.start, f.size))
            todo.extend(k for k in self._called(self.sites(f.section, f.start, f.size), refs)[::-1] if k not in seen)
        core = any(lo <= at < lo + n for sec, lo, n in spans for at in self.core.get(sec, ()))
        return ProgramGraph(tuple(order), tuple(sorted(refs)), core)

    @staticmethod
    def _called(sites: Dict[int, _Site], refs: Set[str]) -> List[FuncKey]:
        """The functions ``sites`` call or take the address of, in the order
        of their first reference; the maps they use are added to ``refs``."""
        called: Dict[FuncKey, None] = {}
        for at in sorted(sites):
            site = sites[at]
            if site.kind in ("call", "func"):
                called.setdefault(cast(FuncKey, site.target), None)
            else:
                refs.add(site.target)  # type: ignore[arg-type]
        return list(called)

    # -- decoding ----------------------------------------------------------------

    def _annotate(self, insns: Instructions, sites: Dict[int, _Site], start: int) -> None:
        """Set references on the calls, function-pointer loads and map loads."""
        for i, slot in enumerate(insns.raw_offsets()):
            site = sites.get(start + slot * 8)
            if site is None:
                continue
            ins = insns[i]
            if site.kind == "call":
                insns[i] = ins.with_reference(self.funcs[site.target].name)  # type: ignore[index]
            elif site.kind == "func":
                insns[i] = ins.replace(src=Pseudo.FUNC, constant=0, reference=self.funcs[site.target].name)  # type: ignore[index]
            elif site.kind == "value":
                insns[i] = ins.replace(src=Pseudo.MAP_VALUE, constant=site.offset << 32, reference=site.target)
            else:
                insns[i] = ins.replace(src=Pseudo.MAP_FD, constant=0, reference=site.target)

    def decode(self, name: str, section: str, raw: bytes, graph: ProgramGraph) -> Tuple[Instructions, bytes]:
        """The linked instructions of a program and their encoding.

        ``raw`` is libbpf's copy of the program's own code.  A program whose
        references cannot be resolved (a broken object) keeps its code as
        libbpf sees it; loading will say what is wrong.
        """
        start, size = self._own(name, section, len(raw))
        insns = Instructions.decode(raw, self.order)
        self._annotate(insns, self.sites(section, start, size), start)
        for key in graph.functions:
            f = self.funcs[key]
            body = Instructions.decode(self.sections[f.section].data[f.start:f.start + f.size], self.order)
            self._annotate(body, self.sites(f.section, f.start, f.size), f.start)
            if body:
                body[0] = body[0].replace(symbol=f.name)
            insns.extend(body)
        try:
            return insns, bytes(insns.encode(self.order))
        except Exception:
            return Instructions.decode(raw, self.order), raw


def _btf_strings(btf: bytes, e: str) -> bytes:
    """The string section of a raw BTF blob (validated with the object)."""
    hdr_len, _type_off, _type_len, str_off, str_len = struct.unpack_from(e + "4xIIIII", btf)
    return btf[hdr_len + str_off : hdr_len + str_off + str_len]


def _core_relo_offsets(elf: "ElfFile") -> Dict[str, List[int]]:
    """Section name -> byte offsets of instructions with CO-RE relocations
    (from ``.BTF.ext``); empty when there are none or it cannot be read."""
    ext, btf = elf.section_by_name(".BTF.ext"), elf.section_by_name(".BTF")
    if ext is None or btf is None:
        return {}
    try:
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
        strings = _btf_strings(btf.data, e)
        out: Dict[str, List[int]] = {}
        while pos + 8 <= end and rec_size >= 4:
            name_off, count = struct.unpack_from(e + "II", data, pos)
            pos += 8
            name = strings[name_off:strings.index(b"\0", name_off)].decode()
            out.setdefault(name, []).extend(
                struct.unpack_from(e + "I", data, pos + i * rec_size)[0] for i in range(count))
            pos += count * rec_size
        return out
    except Exception:  # validated before libbpf saw it; be lenient here
        return {}
