"""Attach every program of a collection whose section names its hook.

Like a libbpf skeleton's ``__attach()``: ``SEC("tracepoint/syscalls/sys_enter_read")``
says where the program goes, ``SEC("xdp")`` does not (it needs an
interface), so :func:`attach_all` attaches the first and skips the second.

Recognised sections (with their sleepable ``.s`` forms; the table is
:data:`ebpf.sections.SECTIONS`):

* ``tracepoint/<group>/<name>``, ``tp/<group>/<name>``
* ``raw_tracepoint/<name>``, ``raw_tp/<name>`` (and ``.w`` writable forms)
* ``tp_btf/``, ``fentry/``, ``fexit/``, ``fmod_ret/``, ``lsm/`` + target
* ``iter/<target>`` for iterators that need no map
* ``kprobe/<func>[+<offset>]``, ``kretprobe/<func>``, ``ksyscall/<name>``,
  ``kretsyscall/<name>``, ``kprobe.multi/<pattern>``, ``kretprobe.multi/<pattern>``
* ``uprobe/<binary>:<func>[+<offset>]``, ``uretprobe/...``,
  ``usdt/<binary>:<provider>:<name>`` (only with the full spec)
* ``uprobe.multi/<binary>:<glob>``, ``uretprobe.multi/<binary>:<glob>``: one
  uprobe.multi link on every function of the binary the glob matches

Everything else (``perf_event``, ``xdp``, ``tc``, ``cgroup/...``, ``socket``,
``freplace``, ...) is skipped: its target is not in the section name.
"""

from __future__ import annotations

import fnmatch
import os
import platform
from typing import Any, Callable, Dict, List, Optional

from .. import sections
from ..errors import EBPFError, KeyNotExistError, NotSupportedError
from ..sections import Hook
from ._link import Link

__all__ = ["attach_all", "auto_attach", "section_hook"]

# The hook families' modules (tracing, iter, uprobe) are imported by the
# branches below that need them, so that attaching tracepoints loads no
# uprobe or iterator code.

# The kernel's syscall wrapper prefix per architecture (libbpf's ksyscall).
_SYSCALL_PREFIX = {
    "x86_64": "__x64_sys_",
    "aarch64": "__arm64_sys_",
    "s390x": "__s390x_sys_",
    "ppc64le": "sys_",
    "riscv64": "__riscv_sys_",
}

def section_hook(section: str) -> Optional[Callable[[Any], Link]]:
    """A function attaching a program of ``section`` to its hook, or None.

    None means the section does not name a target (the program needs one
    from the caller: an interface, a cgroup, a perf event, ...).  Which
    sections name which hook is :mod:`ebpf.sections`' table.
    """
    row, rest = sections.lookup(section)
    hook = row.hook if row is not None else None
    if hook is None:
        return None
    if hook is Hook.TRACEPOINT:
        group, sep, name = rest.partition("/")
        if not sep or not group or not name:
            return None
        from .tracing import attach_tracepoint

        return lambda prog: attach_tracepoint(group, name, prog)
    if hook is Hook.RAW_TRACEPOINT:
        from .tracing import attach_raw_tracepoint

        return lambda prog: attach_raw_tracepoint(rest, prog)
    if hook is Hook.TRACING:
        from .tracing import attach_tracing

        return attach_tracing
    if hook is Hook.ITER:
        from .iter import MAP_TARGETS, attach_iter

        if rest in MAP_TARGETS:
            return None  # walks a map the caller must choose
        return lambda prog: attach_iter(prog)
    if hook in (Hook.KPROBE, Hook.KRETPROBE):
        from .tracing import kprobe, kretprobe

        symbol, _, off = rest.partition("+")
        offset = int(off, 0) if off else 0
        if hook is Hook.KRETPROBE:
            return lambda prog: kretprobe(symbol, prog)
        return lambda prog: kprobe(symbol, prog, offset=offset)
    if hook in (Hook.KSYSCALL, Hook.KRETSYSCALL):
        from .tracing import kprobe, kretprobe

        symbol = _SYSCALL_PREFIX.get(platform.machine(), "sys_") + rest
        fn = kretprobe if hook is Hook.KRETSYSCALL else kprobe
        return lambda prog: fn(symbol, prog)
    if hook in (Hook.KPROBE_MULTI, Hook.KRETPROBE_MULTI):
        from .tracing import kprobe_multi, kretprobe_multi

        multi = kretprobe_multi if hook is Hook.KRETPROBE_MULTI else kprobe_multi
        return lambda prog: multi(_expand_pattern(rest), prog)
    if hook in (Hook.UPROBE, Hook.URETPROBE):
        path, sep, func = rest.rpartition(":")
        if not sep or not path or not func:
            return None  # "uprobe" without binary:func is attached by hand
        symbol, _, off = func.partition("+")
        offset = int(off, 0) if off else 0
        ret = hook is Hook.URETPROBE

        def attach_uprobe(prog: Any) -> Link:
            from .uprobe import open_executable

            exe = open_executable(path)
            method = exe.uretprobe if ret else exe.uprobe
            return method(symbol, prog, offset=offset)

        return attach_uprobe
    if hook in (Hook.UPROBE_MULTI, Hook.URETPROBE_MULTI):
        path, sep, pattern = rest.rpartition(":")
        if not sep or not path or not pattern:
            return None
        ret = hook is Hook.URETPROBE_MULTI

        def attach_uprobe_multi(prog: Any) -> Link:
            from .uprobe import SymbolNotFoundError, open_executable

            exe = open_executable(path)
            symbols = fnmatch.filter(exe.symbols(), pattern)
            if not symbols:
                raise SymbolNotFoundError(pattern, exe.path)
            method = exe.uretprobe_multi if ret else exe.uprobe_multi
            return method(symbols, prog)

        return attach_uprobe_multi
    if hook is Hook.USDT:
        parts = rest.rsplit(":", 2)
        if len(parts) != 3 or not all(parts):
            return None
        path, provider, name = parts

        def attach_usdt(prog: Any) -> Link:
            from .uprobe import open_executable

            return open_executable(path).usdt(provider, name, prog)

        return attach_usdt
    # FREPLACE, LSM_CGROUP, STRUCT_OPS: the target is another program, a
    # cgroup or an ops table, which the caller provides.
    return None


def _expand_pattern(pattern: str) -> List[str]:
    """Kernel functions matching a kprobe.multi glob (libbpf's rules)."""
    if not any(c in pattern for c in "*?["):
        return [pattern]
    from .tracing import tracefs

    try:
        root = tracefs()
    except NotSupportedError:
        raise NotSupportedError(f"kprobe.multi pattern {pattern!r}", detail="tracefs is needed to expand it") from None
    path = os.path.join(root, "available_filter_functions")
    try:
        with open(path) as f:
            names = {line.split()[0] for line in f if line.strip()}
    except FileNotFoundError:
        raise NotSupportedError(f"kprobe.multi pattern {pattern!r}",
                                detail=f"{path} is missing (kernel without function tracing)") from None
    matches = sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))
    if not matches:
        raise KeyNotExistError(f"kprobe.multi pattern {pattern!r} matches no traceable kernel function")
    return matches


def _section_of(prog: Any) -> str:
    spec = getattr(prog, "spec", None)
    return spec.section_name if spec is not None else ""


def attach_all(coll: Any) -> Dict[str, Link]:
    """Attach each program of ``coll`` whose section names its hook.

    Returns ``{program name: link}``.  Programs whose section has no target
    (``xdp``, ``perf_event``, ``cgroup/...``, a bare ``kprobe``...) are
    skipped.  If any attachment fails, the links made so far are closed and
    the error is raised.  ``coll`` is a :class:`ebpf.Collection` or a mapping
    of names to programs.
    """
    programs = getattr(coll, "programs", coll)
    links: Dict[str, Link] = {}
    try:
        for name, prog in programs.items():
            section = _section_of(prog)
            hook = section_hook(section) if section else None
            if hook is None:
                continue
            try:
                links[name] = hook(prog)
            except EBPFError as exc:
                # Say which program failed; keep the type so callers can
                # still tell NotSupportedError from the rest.
                exc.args = (f"program {name} ({section}): {exc.args[0] if exc.args else exc}",) + exc.args[1:]
                raise
    except BaseException:
        for link in links.values():
            link.close()
        raise
    return links


auto_attach = attach_all
