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
from typing import TYPE_CHECKING, Any

from ._link import FDLink, Link, LinkInfo, LinkType, link_from_id, load_pinned_link

if TYPE_CHECKING:
    # What type checkers and editors see; at run time these names load
    # lazily through __getattr__ below.  The same names as _LAZY
    # (tests/test_typing.py checks that they agree).
    from ..ids import link_ids
    from .anchor import (
        Anchor,
        after_link,
        after_link_by_id,
        after_program,
        after_program_by_id,
        before_link,
        before_link_by_id,
        before_program,
        before_program_by_id,
        head,
        replace_program,
        replace_program_by_id,
        tail,
    )
    from .auto import attach_all
    from .cgroup import CgroupFlags, ProgAttachCgroup, attach_cgroup
    from .iter import Iter, attach_iter
    from .netfilter import NetfilterFlags, attach_netfilter
    from .netkit import attach_netkit
    from .netns import attach_netns
    from .perf_event import PerfEvent, attach_perf_event, open_cpu_clock, open_cpu_clocks
    from .program import RawAttachment, raw_attach_program
    from .query import AttachedProgram, QueryResult, query_programs
    from .socket_filter import SocketFilter, attach_socket_filter, detach_socket_filter
    from .struct_ops import StructOpsLink, attach_struct_ops
    from .tc import TCLink, attach_tc, attach_tcx
    from .tracing import (
        attach_lsm,
        attach_raw_tracepoint,
        attach_tracepoint,
        attach_tracing,
        kprobe,
        kprobe_multi,
        kretprobe,
        kretprobe_multi,
    )
    from .uprobe import Executable, ExecutableNotFoundError, ProcessNotFoundError, SymbolNotFoundError, open_executable
    from .uprobe_multi import UprobeMultiLink
    from .usdt import ProbeNotFoundError, USDTLink
    from .xdp import XDPFlags, attach_xdp

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


if not TYPE_CHECKING:
    # Hidden from checkers, which know every name from the imports above: to
    # them a misspelt ``ebpf.link.attach_tracpoint`` is an error, not an ``Any``.

    def __getattr__(name: str) -> Any:
        mod = _LAZY.get(name)
        if mod is None:
            raise AttributeError(f"module 'ebpf.link' has no attribute {name!r}")
        value = getattr(importlib.import_module(mod, __name__), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    # What a shell or editor should complete: the API, not this module's own
    # imports (typing's Any, importlib...).
    return sorted({n for n in globals() if n.startswith("__")} | set(__all__))


# A literal list: type checkers read __all__ to know what this module
# exports, and cannot evaluate one computed at run time.
__all__ = [
    "Anchor",
    "AttachedProgram",
    "CgroupFlags",
    "Executable",
    "ExecutableNotFoundError",
    "FDLink",
    "Iter",
    "Link",
    "LinkInfo",
    "LinkType",
    "NetfilterFlags",
    "PerfEvent",
    "ProbeNotFoundError",
    "ProcessNotFoundError",
    "ProgAttachCgroup",
    "QueryResult",
    "RawAttachment",
    "SocketFilter",
    "StructOpsLink",
    "SymbolNotFoundError",
    "TCLink",
    "USDTLink",
    "UprobeMultiLink",
    "XDPFlags",
    "after_link",
    "after_link_by_id",
    "after_program",
    "after_program_by_id",
    "attach_all",
    "attach_cgroup",
    "attach_iter",
    "attach_lsm",
    "attach_netfilter",
    "attach_netkit",
    "attach_netns",
    "attach_perf_event",
    "attach_raw_tracepoint",
    "attach_socket_filter",
    "attach_struct_ops",
    "attach_tc",
    "attach_tcx",
    "attach_tracepoint",
    "attach_tracing",
    "attach_xdp",
    "before_link",
    "before_link_by_id",
    "before_program",
    "before_program_by_id",
    "detach_socket_filter",
    "head",
    "kprobe",
    "kprobe_multi",
    "kretprobe",
    "kretprobe_multi",
    "link_from_id",
    "link_ids",
    "load_pinned_link",
    "open_cpu_clock",
    "open_cpu_clocks",
    "open_executable",
    "query_programs",
    "raw_attach_program",
    "replace_program",
    "replace_program_by_id",
    "tail",
]

