"""Attach programs to kernel hooks.

Every ``attach_*`` function takes an :class:`ebpf.Program` (from a
:class:`ebpf.Collection` or loaded alone from a :class:`ebpf.ProgramSpec`)
and returns a :class:`Link`.  Closing the link detaches the program; closing
the program does not.  Hooks this kernel lacks raise
:class:`ebpf.NotSupportedError`.

Submodules load on first use so that ``import ebpf.link`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._link import FDLink, Link, LinkInfo, LinkType, link_from_id, load_pinned_link

# public name -> submodule that defines it
_LAZY: dict[str, str] = {
    # tracing family
    "attach_tracepoint": ".tracing",
    "attach_raw_tracepoint": ".tracing",
    "attach_tracing": ".tracing",
    "attach_lsm": ".tracing",
    "kprobe": ".tracing",
    "kretprobe": ".tracing",
    "kprobe_multi": ".tracing",
    "kretprobe_multi": ".tracing",
    "attach_iter": ".iter",
    "Iter": ".iter",
    "attach_perf_event": ".perf_event",
    "open_cpu_clock": ".perf_event",
    "attach_all": ".auto",
    "link_ids": "..ids",
    # user-space probes
    "open_executable": ".uprobe",
    "Executable": ".uprobe",
    # networking and cgroups
    "attach_cgroup": ".cgroup",
    "attach_xdp": ".xdp",
    "XDPFlags": ".xdp",
    "attach_tcx": ".tc",
    "attach_tc": ".tc",
    "attach_netkit": ".netkit",
    "raw_attach_program": ".program",
    "RawAttachment": ".program",
    "query_programs": ".query",
    "QueryResult": ".query",
    "AttachedProgram": ".query",
    # positions on multi-program hooks (tcx, netkit)
    "Anchor": ".anchor",
    "head": ".anchor",
    "tail": ".anchor",
    "before_program": ".anchor",
    "after_program": ".anchor",
    "before_program_by_id": ".anchor",
    "after_program_by_id": ".anchor",
    "replace_program": ".anchor",
    "replace_program_by_id": ".anchor",
    "before_link": ".anchor",
    "after_link": ".anchor",
    "before_link_by_id": ".anchor",
    "after_link_by_id": ".anchor",
    "attach_netfilter": ".netfilter",
    "attach_netns": ".netns",
    "attach_socket_filter": ".socket_filter",
    "detach_socket_filter": ".socket_filter",
    "attach_struct_ops": ".struct_ops",
    # flags and link classes a caller may want to name
    "CgroupFlags": ".cgroup",
    "ProgAttachCgroup": ".cgroup",
    "NetfilterFlags": ".netfilter",
    "TCLink": ".tc",
    "SocketFilter": ".socket_filter",
    "StructOpsLink": ".struct_ops",
    "PerfEvent": ".perf_event",
    "open_cpu_clocks": ".perf_event",
    "USDTLink": ".usdt",
    "UprobeMultiLink": ".uprobe_multi",
    # errors that name what was not found
    "SymbolNotFoundError": ".uprobe",
    "ExecutableNotFoundError": ".uprobe",
    "ProcessNotFoundError": ".uprobe",
    "ProbeNotFoundError": ".usdt",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'ebpf.link' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["FDLink", "Link", "LinkInfo", "LinkType", "link_from_id", "load_pinned_link"] + sorted(_LAZY)
