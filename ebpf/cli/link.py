"""``ebpf link list``: the links in the kernel."""

from __future__ import annotations

import argparse
from typing import Any, Dict

from . import emit_json
from ._common import add_json, name_of, plain, show, table
from ._kernel import by_id


def register(sub: Any) -> None:
    p = sub.add_parser("link", help="list the links in the kernel",
                       description="Links in the kernel: which program is attached where (needs CAP_SYS_ADMIN).")
    cmds = p.add_subparsers(dest="link_command", metavar="SUBCOMMAND")
    cmds.required = True
    ls = cmds.add_parser("list", help="one line per link",
                         description="List every link in the kernel, by id, with its program and hook.")
    add_json(ls)
    ls.set_defaults(func=run_list)


def record(info: Any, prog_name: str) -> Dict[str, Any]:
    extra = {k: name_of(v) if hasattr(v, "name") else plain(v) for k, v in info.extra.items()}
    return {"id": info.id, "type": name_of(info.type), "prog_id": info.program_id, "prog_name": prog_name,
            **extra}


def run_list(args: argparse.Namespace) -> int:
    from ..ids import link_from_id, link_ids, program_from_id

    rows = []
    for lid in link_ids():
        link = by_id(link_from_id, lid)
        if link is None:
            continue
        with link:
            info = link.info()
        name = ""
        prog = by_id(program_from_id, info.program_id) if info.program_id else None
        if prog is not None:
            with prog:
                name = prog.info().name
        rows.append(record(info, name))
    if args.json:
        emit_json(rows)
        return 0
    fixed = ("id", "type", "prog_id", "prog_name")
    table([(r["id"], r["type"], r["prog_id"], r["prog_name"],
            show({k: v for k, v in r.items() if k not in fixed})) for r in rows],
          ("ID", "TYPE", "PROG", "NAME", "ATTACHED TO"))
    return 0
