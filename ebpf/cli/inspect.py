"""``ebpf inspect OBJ``: what a BPF object holds, read without the kernel."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Dict, Optional

from . import emit_json
from ._common import add_json, flag_names, load_spec, name_of, pairs, plain, show, table

if TYPE_CHECKING:
    from ..btf import types as T

# Values longer than this are cut in the text output (--json has them whole).
_MAX_VALUE_TEXT = 60


def register(sub: Any) -> None:
    p = sub.add_parser(
        "inspect", help="show the maps, programs, variables and BTF of an object",
        description="Show what a BPF object holds: maps (type, sizes, flags, pinning, key/value BTF types), "
                    "programs (section, type, attach type, instructions, license), variables with their "
                    "initial values, and a BTF summary.  Needs no privilege: nothing is loaded.  OBJ is a "
                    "BPF ELF object, or an executable that embeds one (libbpf skeletons; PATH#N picks one "
                    "of several).")
    p.add_argument("object", metavar="OBJ", help="BPF object file, or an executable embedding one")
    add_json(p)
    p.set_defaults(func=run)


def type_name(t: Optional[T.Type]) -> str:
    """A BTF type as C spells its use: ``u32``, ``struct event``, ``char [16]``."""
    if t is None:
        return ""
    from ..btf.format import declarator
    from ..btf.types import Datasec, Var

    if isinstance(t, Var):
        t = t.type
    if isinstance(t, Datasec):
        return f"section {t.name}"
    try:
        return declarator(t).strip()
    except Exception:
        return t.kind


def describe(spec: Any) -> Dict[str, Any]:
    """The object as plain data (what --json prints)."""
    from ..types import AttachType, MapFlags, ProgramType

    maps = []
    for name, m in spec.maps.items():
        maps.append({
            "name": name,
            "type": name_of(m.type),
            "key_size": m.key_size,
            "value_size": m.value_size,
            "max_entries": m.max_entries,
            "flags": flag_names(MapFlags, m.flags),
            "pinning": name_of(m.pinning),
            "key_type": type_name(m.key) or None,
            "value_type": type_name(m.value) or None,
            "inner_map": m.inner_map.name if m.inner_map is not None else None,
        })
    programs = []
    for name, p in spec.programs.items():
        attach = p.attach_type
        # 0 is both "none" and CGROUP_INET_INGRESS: only cgroup skb programs mean the latter.
        meaningful = int(attach) != 0 or p.type == ProgramType.CGROUP_SKB
        programs.append({
            "name": name,
            "section": p.section_name,
            "type": name_of(p.type),
            "attach_type": name_of(attach) if meaningful and isinstance(attach, AttachType) else
                           (int(attach) if meaningful else None),
            "attach_to": p.attach_to or None,
            "instructions": len(p.instructions),
            "license": p.license,
            "kernel_version": p.kernel_version or None,
            "flags": p.flags,
        })
    variables = []
    for name, v in spec.variables.items():
        try:
            value = plain(v.get())
        except Exception:
            value = v.get_bytes().hex()
        variables.append({
            "name": name,
            "section": v.section,
            "offset": v.offset,
            "size": v.size,
            "type": type_name(v.type),
            "constant": bool(v.constant),
            "value": value,
        })
    return {"maps": maps, "programs": programs, "variables": variables, "btf": btf_summary(spec.types)}


def btf_summary(types: Any) -> Any:
    if types is None:
        return None
    kinds: Dict[str, int] = {}
    for t in types:
        kinds[t.kind] = kinds.get(t.kind, 0) + 1
    return {"types": len(types), "byte_order": types.byte_order, "kinds": dict(sorted(kinds.items()))}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_VALUE_TEXT else text[:_MAX_VALUE_TEXT - 3] + "..."


def run(args: argparse.Namespace) -> int:
    spec, label = load_spec(args.object)
    doc = describe(spec)
    if args.json:
        emit_json({"object": label, **doc})
        return 0
    counts = ", ".join(_count(len(doc[k]), k[:-1]) for k in ("maps", "programs", "variables"))
    print(f"{label}: {counts}")
    if doc["maps"]:
        print("\nmaps:")
        table([(m["name"], m["type"], m["key_size"], m["value_size"], m["max_entries"],
                ",".join(m["flags"]), m["pinning"] if m["pinning"] != "none" else "",
                m["key_type"], m["value_type"]) for m in doc["maps"]],
              ("NAME", "TYPE", "KEY", "VALUE", "MAX", "FLAGS", "PIN", "KEY TYPE", "VALUE TYPE"), indent="  ")
    if doc["programs"]:
        print("\nprograms:")
        table([(p["name"], p["section"], p["type"], p["attach_type"], p["instructions"], p["license"])
               for p in doc["programs"]],
              ("NAME", "SECTION", "TYPE", "ATTACH TYPE", "INSNS", "LICENSE"), indent="  ")
    if doc["variables"]:
        print("\nvariables:")
        table([(v["name"], v["section"], v["type"], v["size"], _cut(show(v["value"])))
               for v in doc["variables"]],
              ("NAME", "SECTION", "TYPE", "SIZE", "VALUE"), indent="  ")
    b = doc["btf"]
    print()
    if b is None:
        print("btf: none")
    else:
        pairs([("btf", f"{b['types']} types, {b['byte_order']}-endian"),
               ("kinds", ", ".join(f"{n} {k}" for k, n in b["kinds"].items()))])
    return 0
