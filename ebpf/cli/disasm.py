"""``ebpf disasm OBJ [PROGRAM]``: a program's instructions."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from . import emit_json, fail
from ._common import add_json, load_spec, name_of

if TYPE_CHECKING:
    from ..asm import Instruction, Instructions

_CALL = 0x85
_LDDW = 0x18


def register(sub: Any) -> None:
    p = sub.add_parser(
        "disasm", help="disassemble the programs of an object",
        description="Print the instructions of each program of OBJ (or only PROGRAM), in the style of "
                    "llvm-objdump -d, with map, global and function references named and helper calls "
                    "annotated with the helper's name.")
    p.add_argument("object", metavar="OBJ", help="BPF object file, or an executable embedding one")
    p.add_argument("program", metavar="PROGRAM", nargs="?", help="only this program (by name)")
    add_json(p)
    p.set_defaults(func=run)


def helper_name(ins: Instruction) -> Optional[str]:
    """``bpf_<name>`` for a helper call, else None."""
    if ins.opcode != _CALL or ins.src != 0 or ins.reference is not None:
        return None
    from ..asm.helper_names import HELPER_NAMES

    if 0 < ins.constant < len(HELPER_NAMES):
        return "bpf_" + HELPER_NAMES[ins.constant]
    return None


def map_name(ins: Instruction, names: Dict[int, str]) -> Optional[str]:
    """The map a kernel-translated ``lddw`` loads (its id is in the constant)."""
    if ins.opcode != _LDDW or ins.src not in (1, 2) or ins.reference is not None:
        return None
    return names.get(ins.constant & 0xFFFFFFFF)


def listing(insns: Instructions, map_names: Optional[Dict[int, str]] = None) -> List[Dict[str, Any]]:
    """One entry per instruction: slot, text, label (or None), helper (or
    None), map (the name, for a kernel-translated program's map loads)."""
    out: List[Dict[str, Any]] = []
    label = None
    it = iter(insns)
    for line in str(insns).splitlines():
        if not line.startswith(" ") and line.endswith(":"):
            label = line[:-1]
            continue
        slot, _, text = line.partition(":\t")
        ins = next(it)
        entry: Dict[str, Any] = {"slot": int(slot), "text": text, "label": label, "helper": helper_name(ins)}
        if map_names is not None:
            entry["map"] = map_name(ins, map_names)
        out.append(entry)
        label = None
    return out


def lines(insns: Instructions, map_names: Optional[Dict[int, str]] = None) -> List[str]:
    """The listing as text lines."""
    out = []
    for e in listing(insns, map_names):
        if e["label"]:
            out.append(f"{e['label']}:")
        note = f"  # {e['helper']}" if e["helper"] else (f"  # map {e['map']}" if e.get("map") else "")
        out.append(f"{e['slot']:>8}:\t{e['text']}{note}")
    return out


def run(args: argparse.Namespace) -> int:
    spec, label = load_spec(args.object)
    programs = spec.programs
    if args.program is not None:
        if args.program not in programs:
            names = ", ".join(programs) or "none"
            raise fail(f"{label} has no program {args.program!r}", f"its programs: {names}")
        programs = {args.program: programs[args.program]}
    if args.json:
        emit_json({"object": label, "programs": [
            {"name": name, "section": p.section_name, "type": name_of(p.type), "instructions": listing(p.instructions)}
            for name, p in programs.items()]})
        return 0
    first = True
    for name, p in programs.items():
        if not first:
            print()
        first = False
        print(f"{name} ({p.section_name}, {name_of(p.type)}, {len(p.instructions)} instructions):")
        for line in lines(p.instructions):
            print(line)
    return 0
