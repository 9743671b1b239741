"""``ebpf prog list|show``: the programs loaded in the kernel."""

from __future__ import annotations

import argparse
from typing import Any, Dict

from . import emit_json
from ._common import add_json, name_of, pairs, table
from ._kernel import by_id, holders, loaded_at, parse_id, show_holders


def register(sub: Any) -> None:
    p = sub.add_parser("prog", help="list and show the programs loaded in the kernel",
                       description="Programs loaded in the kernel (needs CAP_SYS_ADMIN).")
    cmds = p.add_subparsers(dest="prog_command", metavar="SUBCOMMAND")
    cmds.required = True
    ls = cmds.add_parser("list", help="one line per loaded program",
                         description="List every program loaded in the kernel, by id.")
    add_json(ls)
    ls.set_defaults(func=run_list)
    sh = cmds.add_parser("show", help="everything the kernel says about one program",
                         description="Show one program: type, name, tag, load time, sizes, maps, BTF, "
                                     "the processes holding it, and with --disasm its instructions as the "
                                     "kernel rewrote them.")
    sh.add_argument("id", metavar="ID", help="program id (see `prog list`)")
    sh.add_argument("--disasm", action="store_true", help="also print the translated instructions")
    add_json(sh)
    sh.set_defaults(func=run_show)


def record(info: Any) -> Dict[str, Any]:
    return {
        "id": info.id,
        "type": name_of(info.type),
        "name": info.name,
        "tag": info.tag,
        "gpl_compatible": info.gpl_compatible,
        "loaded_at": loaded_at(info.load_time_ns),
        "uid": info.created_by_uid,
        "xlated_size": info.xlated_size,
        "jited_size": info.jited_size,
        "verified_instructions": info.verified_instructions,
        "map_ids": list(info.map_ids),
        "btf_id": info.btf_id or None,
        "run_count": info.run_count,
        "run_time_ns": info.run_time_ns,
    }


def run_list(args: argparse.Namespace) -> int:
    from ..ids import program_from_id, program_ids

    rows = []
    for pid in program_ids():
        prog = by_id(program_from_id, pid)
        if prog is None:
            continue
        with prog:
            rows.append(record(prog.info()))
    if args.json:
        emit_json(rows)
        return 0
    table([(r["id"], r["type"], r["name"], r["tag"], r["loaded_at"], r["uid"],
            ",".join(map(str, r["map_ids"])), r["btf_id"]) for r in rows],
          ("ID", "TYPE", "NAME", "TAG", "LOADED", "UID", "MAPS", "BTF"))
    return 0


def _map_names(map_ids: Any) -> Dict[int, str]:
    from ..ids import map_from_id

    names = {}
    for mid in map_ids:
        m = by_id(map_from_id, mid)
        if m is not None:
            with m:
                names[mid] = m.info().name
    return names


def run_show(args: argparse.Namespace) -> int:
    from ..ids import program_from_id
    from ..info import xlated_instructions

    pid = parse_id(args.id, "program")
    with program_from_id(pid) as prog:
        r = record(prog.info())
        r["pids"] = [{"pid": p, "comm": c} for p, c in holders("prog_id", pid)]
        raw = xlated_instructions(prog.fd) if args.disasm else None
    listing = None
    if raw is not None:
        from ..asm import Instructions
        from .disasm import lines

        listing = lines(Instructions.decode(raw, labels=True), _map_names(r["map_ids"]))
    if args.json:
        if listing is not None:
            r["instructions"] = listing
        emit_json(r)
        return 0
    pairs([
        ("id", r["id"]), ("type", r["type"]), ("name", r["name"]), ("tag", r["tag"]),
        ("gpl", "yes" if r["gpl_compatible"] else "no"), ("loaded_at", r["loaded_at"]), ("uid", r["uid"]),
        ("xlated", f"{r['xlated_size']} B"), ("jited", f"{r['jited_size']} B"),
        ("verified", f"{r['verified_instructions']} instructions"),
        ("map_ids", ",".join(map(str, r["map_ids"]))), ("btf_id", r["btf_id"]),
        ("runs", f"{r['run_count']} ({r['run_time_ns']} ns; counted while stats are enabled)"),
        ("pids", show_holders([(p["pid"], p["comm"]) for p in r["pids"]])),
    ])
    if args.disasm:
        print()
        if listing is None:
            print("(the kernel gives no translated instructions: needs CAP_SYS_ADMIN, or bpf_jit_harden)")
        else:
            print("\n".join(listing))
    return 0
