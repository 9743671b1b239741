"""``ebpf map list|show|dump``: the maps in the kernel and their contents."""

from __future__ import annotations

import argparse
import os
from typing import Any, Dict

from . import emit_json, fail
from ._common import add_json, flag_names, name_of, pairs, table
from ._kernel import by_id, holders, map_btf_types, parse_id, show_holders

# Map types whose elements user space cannot read.
_UNREADABLE = {"RINGBUF": "read it with `ebpf run` or ebpf.ringbuf.Reader",
               "USER_RINGBUF": "user space writes it (ebpf.ringbuf.Writer)",
               "PERF_EVENT_ARRAY": "read it with `ebpf run` or ebpf.perf.Reader",
               "STRUCT_OPS": "its value is the kernel's struct_ops state"}
_KEYLESS = ("QUEUE", "STACK", "BLOOM_FILTER")


def register(sub: Any) -> None:
    p = sub.add_parser("map", help="list, show and dump the maps in the kernel",
                       description="Maps in the kernel (needs CAP_SYS_ADMIN).")
    cmds = p.add_subparsers(dest="map_command", metavar="SUBCOMMAND")
    cmds.required = True
    ls = cmds.add_parser("list", help="one line per map", description="List every map in the kernel, by id.")
    add_json(ls)
    ls.set_defaults(func=run_list)
    sh = cmds.add_parser("show", help="everything the kernel says about one map",
                         description="Show one map: type, sizes, flags, BTF types, and the processes holding it.")
    sh.add_argument("map", metavar="ID|PIN", help="map id (see `map list`) or a pinned path on bpffs")
    add_json(sh)
    sh.set_defaults(func=run_show)
    dp = cmds.add_parser(
        "dump", help="print a map's entries, decoded through its BTF",
        description="Print every entry of a map.  Keys and values are decoded through the map's BTF "
                    "when the kernel has it; a map of libbpf-tools `struct hist` values (an array member "
                    "named `slots`) or an array of counters prints as log2 histograms, everything else "
                    "as a table.")
    dp.add_argument("map", metavar="ID|PIN", help="map id (see `map list`) or a pinned path on bpffs")
    add_json(dp, "the entries")
    dp.set_defaults(func=run_dump)


def open_map(arg: str) -> Any:
    """The map named by an id or a pinned path."""
    from ..ids import map_from_id
    from ..maps import load_pinned_map

    if arg.isdigit() or arg.lower().startswith("0x"):
        return map_from_id(parse_id(arg, "map"))
    if not os.path.exists(arg):
        raise fail(f"{arg}: neither a map id nor a pinned path", "map ids come from `ebpf map list`")
    return load_pinned_map(arg)


def record(info: Any) -> Dict[str, Any]:
    from ..types import MapFlags

    return {
        "id": info.id,
        "type": name_of(info.type),
        "name": info.name,
        "key_size": info.key_size,
        "value_size": info.value_size,
        "max_entries": info.max_entries,
        "flags": flag_names(MapFlags, info.flags),
        "btf_id": info.btf_id or None,
    }


def run_list(args: argparse.Namespace) -> int:
    from ..ids import map_from_id, map_ids

    rows = []
    for mid in map_ids():
        m = by_id(map_from_id, mid)
        if m is None:
            continue
        with m:
            rows.append(record(m.info()))
    if args.json:
        emit_json(rows)
        return 0
    table([(r["id"], r["type"], r["name"], r["key_size"], r["value_size"], r["max_entries"],
            ",".join(r["flags"]), r["btf_id"]) for r in rows],
          ("ID", "TYPE", "NAME", "KEY", "VALUE", "MAX", "FLAGS", "BTF"))
    return 0


def run_show(args: argparse.Namespace) -> int:
    from .inspect import type_name

    with open_map(args.map) as m:
        info = m.info()
    r = record(info)
    key, value = map_btf_types(info)
    r["key_type"] = type_name(key) or None
    r["value_type"] = type_name(value) or None
    r["pids"] = [{"pid": p, "comm": c} for p, c in holders("map_id", info.id)]
    if args.json:
        emit_json(r)
        return 0
    pairs([("id", r["id"]), ("type", r["type"]), ("name", r["name"]), ("key", f"{r['key_size']} B"),
           ("value", f"{r['value_size']} B"), ("max_entries", r["max_entries"]), ("flags", ",".join(r["flags"])),
           ("btf_id", r["btf_id"]), ("key_type", r["key_type"]), ("value_type", r["value_type"]),
           ("pids", show_holders([(p["pid"], p["comm"]) for p in r["pids"]]))])
    return 0


def run_dump(args: argparse.Namespace) -> int:
    from ._maps import MapView, read_entries

    with open_map(args.map) as m:
        info = m.info()
        tname = getattr(info.type, "name", str(info.type))
        if tname in _UNREADABLE:
            raise fail(f"map {info.id} ({info.name}) is a {tname.lower()} map: its elements cannot be read",
                       _UNREADABLE[tname])
        if tname in _KEYLESS:
            raise fail(f"map {info.id} ({info.name}) is a {tname.lower()} map: it has no keys to walk",
                       "its elements are taken out with lookup_and_delete (pop)")
        key, value = map_btf_types(info)
        view = MapView(info.name or f"map {info.id}", info.type, read_entries(m, key, value), key, value,
                       keep_zero=True)
    if args.json:
        emit_json(view.as_json())
        return 0
    if view.empty:
        print(f"{view.name} ({view.type_name.lower()}): empty")
        return 0
    view.print()
    return 0
