"""``ebpf features``: what this kernel and libbpf support (like ``bpftool feature probe``)."""

from __future__ import annotations

import argparse
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import emit_json
from ._common import add_json, name_of, pairs, table

# Iterator targets of Linux 6.x (SEC("iter/<target>")).
ITERATOR_TARGETS = ("task", "task_file", "task_vma", "bpf_map", "bpf_map_elem", "bpf_prog", "bpf_link",
                    "bpf_sk_storage_map", "sockmap", "tcp", "udp", "unix", "netlink", "ipv6_route", "ksym",
                    "cgroup", "kmem_cache", "dmabuf")

# Probes of the design contract; shown when this build of the library has them.
MISC_PROBES = ("have_bounded_loops", "have_large_instructions", "have_v2_isa", "have_v3_isa", "have_v4_isa",
               "have_batch_api")

# Link kinds features.have_link_type probes (ebpf.link.LinkType names).
LINK_KINDS = ("KPROBE_MULTI", "UPROBE_MULTI", "TCX", "NETKIT", "NETFILTER")

# Program types that load only against an attach target: no helper probe
# without one.
_NEEDS_TARGET = ("TRACING", "EXT", "LSM", "STRUCT_OPS")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "features", help="probe what this kernel and libbpf support",
        description="Probe the running kernel and the installed libbpf: program types, map types, the "
                    "helpers each program type may call, attach kinds, iterator targets, map flags, link "
                    "kinds, instruction set versions and limits, and what the "
                    "kernel refuses by policy (lockdown, sysctls).  Each probe runs once.  Needs CAP_BPF or "
                    "root for most answers.")
    p.add_argument("--no-helpers", action="store_true", help="skip the helper probes (the slowest part)")
    add_json(p)
    p.set_defaults(func=run)


class Verdict:
    """The outcome of one probe: ``yes``, ``no`` (not supported), ``policy``
    (refused by policy: lockdown, an LSM), ``denied`` (no privilege) or
    ``error``; ``detail`` says why."""

    def __init__(self, status: str, detail: str = "") -> None:
        self.status = status
        self.detail = detail

    def as_json(self) -> Dict[str, Any]:
        return {"status": self.status, **({"detail": self.detail} if self.detail else {})}


def probe(fn: Callable[..., Any], *args: Any) -> Verdict:
    from ..errors import EBPFError, KernelPolicyError, NotSupportedError, PermissionDeniedError

    try:
        fn(*args)
    except KernelPolicyError as exc:
        return Verdict("policy", str(exc))
    except NotSupportedError as exc:
        return Verdict("no", str(exc))
    except PermissionDeniedError as exc:
        return Verdict("denied", str(exc))
    except EBPFError as exc:
        return Verdict("error", str(exc))
    return Verdict("yes")


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def system() -> Dict[str, Any]:
    import platform

    from .. import _libbpf
    from .._privilege import CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN, capabilities, lockdown_mode

    caps = capabilities()
    names = [n for n, bit in (("CAP_BPF", CAP_BPF), ("CAP_PERFMON", CAP_PERFMON),
                              ("CAP_NET_ADMIN", CAP_NET_ADMIN), ("CAP_SYS_ADMIN", CAP_SYS_ADMIN))
             if caps & (1 << bit)]
    return {
        "kernel": platform.release(),
        "machine": platform.machine(),
        "libbpf": _libbpf.version_string(),
        "capabilities": names,
        "lockdown": lockdown_mode(),
        "unprivileged_bpf_disabled": _read("/proc/sys/kernel/unprivileged_bpf_disabled"),
        "bpf_jit_enable": _read("/proc/sys/net/core/bpf_jit_enable"),
        "bpf_jit_harden": _read("/proc/sys/net/core/bpf_jit_harden"),
        "kernel_btf": os.path.exists("/sys/kernel/btf/vmlinux"),
        "active_lsms": _read("/sys/kernel/security/lsm"),
    }


def _facility(path: str, what: str) -> Verdict:
    return Verdict("yes") if os.path.exists(path) else Verdict("no", f"{what} ({path} is missing)")


def _tracefs() -> Verdict:
    from ..link.tracing import tracefs

    return probe(tracefs)


def attach_kinds(prog_types: Dict[str, Verdict], tracing: Verdict,
                 links: Optional[Dict[str, Verdict]] = None) -> Dict[str, Verdict]:
    """Each hook ebpf.link attaches to, from the program type it needs, the
    kernel facility behind it and, for hooks attached by a link kind of
    their own, the link probe (``links``: :func:`link_types`)."""
    def both(*vs: Verdict) -> Verdict:
        for v in vs:
            if v.status != "yes":
                return v
        return Verdict("yes")

    pt = prog_types.get
    none = Verdict("no", "program type not probed")
    kprobe_pmu = _facility("/sys/bus/event_source/devices/kprobe/type", "kprobes need CONFIG_KPROBES")
    uprobe_pmu = _facility("/sys/bus/event_source/devices/uprobe/type", "uprobes need CONFIG_UPROBE_EVENTS")
    lsms = _read("/sys/kernel/security/lsm")
    bpf_lsm = Verdict("yes") if lsms is None or "bpf" in lsms.split(",") else \
        Verdict("no", f"the bpf LSM is not active (lsm={lsms})")
    link = (links or {}).get
    return {
        "tracepoint": both(pt("tracepoint", none), _tracefs()),
        "raw_tracepoint": pt("raw_tracepoint", none),
        "tp_btf": pt("tracing", none),
        "fentry/fexit/fmod_ret": tracing,
        "lsm": both(tracing, bpf_lsm),
        "kprobe/kretprobe": both(pt("kprobe", none), kprobe_pmu),
        "kprobe.multi": both(pt("kprobe", none), link("kprobe_multi", none)),
        "uprobe/uretprobe/usdt": both(pt("kprobe", none), uprobe_pmu),
        "uprobe.multi": both(pt("kprobe", none), link("uprobe_multi", none)),
        "perf_event": pt("perf_event", none),
        "iter": pt("tracing", none),
        "cgroup": both(pt("cgroup_skb", none), _facility("/sys/fs/cgroup", "no cgroup filesystem")),
        "xdp": pt("xdp", none),
        "tc": pt("sched_cls", none),
        "tcx": both(pt("sched_cls", none), link("tcx", none)),
        "netkit": both(pt("sched_cls", none), link("netkit", none)),
        "netfilter": pt("netfilter", none),
        "sk_lookup": pt("sk_lookup", none),
        "socket_filter": pt("socket_filter", none),
        "struct_ops": pt("struct_ops", none),
    }


def _helpers(ptype: Any) -> List[str]:
    from ..asm.helper_names import HELPER_NAMES
    from ..errors import NotSupportedError
    from ..features import have_program_helper

    found = []
    for helper in range(1, len(HELPER_NAMES)):
        try:
            have_program_helper(ptype, helper)
        except NotSupportedError:
            continue
        found.append("bpf_" + HELPER_NAMES[helper])
    return found


def map_flags() -> Dict[str, Verdict]:
    """features.have_map_flag for every flag it has a probe for."""
    from .. import features as F
    from ..types import MapFlags

    out = {}
    for flag in MapFlags:
        try:
            out[name_of(flag)] = probe(F.have_map_flag, flag)
        except ValueError:  # a flag that needs more than a map to probe
            continue
    return out


def link_types() -> Dict[str, Verdict]:
    """features.have_link_type for the link kinds it probes."""
    from .. import features as F
    from ..link._link import LinkType

    return {name_of(LinkType[n]): probe(F.have_link_type, LinkType[n]) for n in LINK_KINDS}


def collect(helpers: bool = True) -> Dict[str, Any]:
    from .. import features as F
    from ..types import MapType, ProgramType

    prog_types = {name_of(t): probe(F.have_program_type, t) for t in ProgramType if t != ProgramType.UNSPEC}
    map_types = {name_of(t): probe(F.have_map_type, t) for t in MapType if t != MapType.UNSPEC}
    tracing = probe(F.have_tracing_programs)
    links = link_types()
    doc: Dict[str, Any] = {
        "system": system(),
        "program_types": prog_types,
        "map_types": map_types,
        "attach_kinds": attach_kinds(prog_types, tracing, links),
        "iterators": {t: probe(F.have_iterator, t) for t in ITERATOR_TARGETS},
        "map_flags": map_flags(),
        "link_types": links,
        "misc": {n[len("have_"):]: probe(getattr(F, n)) for n in MISC_PROBES if hasattr(F, n)},
    }
    doc["misc"]["object_names"] = Verdict("yes" if F.object_names_supported() else "no")
    if helpers:
        doc["helpers"] = {
            name_of(t): _helpers(t) for t in ProgramType
            if t != ProgramType.UNSPEC and prog_types[name_of(t)].status == "yes" and t.name not in _NEEDS_TARGET
        }
    return doc


def refusals(doc: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(what, why) of every probe refused by policy."""
    out = []
    for section in ("program_types", "map_types", "attach_kinds", "iterators", "map_flags", "link_types", "misc"):
        for name, v in doc[section].items():
            if v.status == "policy":
                out.append((f"{section.replace('_', ' ')[:-1]} {name}", v.detail))
    return out


def _json(doc: Any) -> Any:
    if isinstance(doc, Verdict):
        return doc.as_json()
    if isinstance(doc, dict):
        return {k: _json(v) for k, v in doc.items()}
    return doc


def _short(v: Verdict) -> str:
    return {"yes": "yes", "no": "no", "policy": "refused by policy", "denied": "no privilege to probe",
            "error": "probe failed"}[v.status]


def _verdict_table(title: str, verdicts: Dict[str, Verdict], details: bool) -> None:
    print(f"\n{title}:")
    table([(name, _short(v), _reason(v) if details and v.status != "yes" else "") for name, v in verdicts.items()],
          ("NAME", "SUPPORTED", "WHY NOT") if details else ("NAME", "SUPPORTED", ""), indent="  ")


def _reason(v: Verdict) -> str:
    text = v.detail
    return text if len(text) <= 90 else text[:87] + "..."


def run(args: argparse.Namespace) -> int:
    doc = collect(helpers=not args.no_helpers)
    doc["policy_refusals"] = [{"what": w, "why": y} for w, y in refusals(doc)]
    if args.json:
        emit_json(_json(doc))
        return 0
    s = doc["system"]
    pairs([("kernel", f"{s['kernel']} ({s['machine']})"), ("libbpf", s["libbpf"]),
           ("capabilities", " ".join(s["capabilities"]) or "none"),
           ("lockdown", s["lockdown"] or "unknown (securityfs not mounted)"),
           ("unprivileged_bpf_disabled", s["unprivileged_bpf_disabled"]),
           ("bpf_jit_enable", s["bpf_jit_enable"]), ("bpf_jit_harden", s["bpf_jit_harden"]),
           ("kernel BTF", "yes" if s["kernel_btf"] else "no")])
    _verdict_table("program types", doc["program_types"], True)
    _verdict_table("map types", doc["map_types"], True)
    _verdict_table("attach kinds", doc["attach_kinds"], True)
    _verdict_table("iterator targets", doc["iterators"], True)
    _verdict_table("map flags", doc["map_flags"], True)
    _verdict_table("link types", doc["link_types"], True)
    _verdict_table("misc", doc["misc"], True)
    if "helpers" in doc:
        import textwrap

        print("\nhelpers per program type:")
        for ptype, names in doc["helpers"].items():
            text = " ".join(n[len("bpf_"):] for n in names)
            print(textwrap.fill(text, 100, initial_indent=f"  {ptype} ({len(names)}): ",
                                subsequent_indent="      "))
    print("\nrefused by policy:" if doc["policy_refusals"] else "\nrefused by policy: nothing")
    for r in doc["policy_refusals"]:
        print(f"  {r['what']}: {r['why']}")
    return 0
