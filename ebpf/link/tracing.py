"""The tracing family: tracepoints, raw tracepoints, BTF-typed hooks, kprobes.

* :func:`attach_tracepoint` -- a tracefs tracepoint (``SEC("tracepoint/g/n")``),
  opened as a perf event and attached through it.
* :func:`attach_raw_tracepoint` -- ``SEC("raw_tp/name")``.
* :func:`attach_tracing` -- ``tp_btf``, ``fentry``, ``fexit``, ``fmod_ret``,
  ``freplace``; :func:`attach_lsm` -- ``lsm``.  The target is the one the
  program was loaded for (its BTF attach id).
* :func:`kprobe`, :func:`kretprobe` -- through the kprobe PMU, or tracefs
  ``kprobe_events`` where there is no PMU; :func:`kprobe_multi`,
  :func:`kretprobe_multi` -- one ``kprobe.multi`` link for many functions.

Everything here attaches by file descriptor (``bpf_link_create``,
``bpf_raw_tracepoint_open``, ``perf_event_open``), like cilium/ebpf, so a
program loaded alone and one from a Collection behave the same.
"""

from __future__ import annotations

import errno as _errno
import os
import re
import threading
from typing import Any, Optional, Sequence, Union

from .. import _libbpf, _syscall
from ..errors import ENOTSUPP, EBPFError, InvalidObjectError, KeyNotExistError, NotSupportedError
from ..info import program_info
from ..types import AttachType, ProgramType
from ._link import FDLink, Link, check_program_type, program_fd
from .perf_event import (
    PERF_TYPE_TRACEPOINT,
    attach_owned_perf_fd,
    open_perf_fd,
    perf_event_attr,
    pmu_retprobe_bit,
    pmu_type,
)

__all__ = [
    "attach_tracepoint",
    "attach_raw_tracepoint",
    "attach_tracing",
    "attach_lsm",
    "kprobe",
    "kretprobe",
    "kprobe_multi",
    "kretprobe_multi",
    "tracefs",
    "tracepoint_id",
]

BPF_F_KPROBE_MULTI_RETURN = 1

# --------------------------------------------------------------------------
# tracefs

TRACEFS_PATHS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
_tracefs_lock = threading.Lock()
_tracefs: Optional[str] = None


def tracefs() -> str:
    """Where tracefs is mounted; mounts it on /sys/kernel/tracing if nowhere.

    Looking at ``/sys/kernel/debug/tracing`` triggers its automount where
    debugfs is mounted.  Mounting is idempotent: an existing mount is used.
    """
    global _tracefs
    with _tracefs_lock:
        if _tracefs is not None and os.path.isdir(os.path.join(_tracefs, "events")):
            return _tracefs
        for path in TRACEFS_PATHS:
            if os.path.isdir(os.path.join(path, "events")):
                _tracefs = path
                return path
        path = TRACEFS_PATHS[0]
        try:
            _syscall.mount("tracefs", path, "tracefs")
        except EBPFError as exc:
            raise NotSupportedError("tracefs", errno=exc.errno,
                                    detail=f"not mounted, and mounting it on {path} failed: {exc}") from None
        if not os.path.isdir(os.path.join(path, "events")):
            raise NotSupportedError("tracefs", detail=f"mounted on {path} but it has no events directory")
        _tracefs = path
        return path


# Group and event names as the kernel creates them; refusing anything else
# keeps a name from walking out of the events directory.
_TRACE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def tracepoint_id(group: str, name: str) -> int:
    """The id of tracepoint ``group/name`` (``events/<group>/<name>/id``)."""
    for what, value in (("group", group), ("name", name)):
        if not isinstance(value, str) or not _TRACE_NAME.match(value):
            raise InvalidObjectError(f"invalid tracepoint {what} {value!r}", _errno.EINVAL)
    root = tracefs()
    path = os.path.join(root, "events", group, name, "id")
    try:
        with open(path) as f:
            return int(f.read().strip())
    except FileNotFoundError:
        raise KeyNotExistError(f"tracepoint {group}/{name} does not exist (no {path})", _errno.ENOENT) from None
    except OSError as exc:
        raise EBPFError(f"tracepoint {group}/{name}: reading {path}: {exc.strerror}", exc.errno) from None


# --------------------------------------------------------------------------
# Tracepoints


def attach_tracepoint(group: str, name: str, prog: Any, cookie: int = 0) -> Link:
    """Attach a ``SEC("tracepoint/...")`` program to tracepoint ``group/name``.

    ``cookie`` is what ``bpf_get_attach_cookie()`` returns in the program
    (5.15+).  A missing tracepoint raises :class:`KeyNotExistError`.
    """
    hook = f"tracepoint {group}/{name}"
    check_program_type(prog, {ProgramType.TRACEPOINT}, hook)
    program_fd(prog)
    tid = tracepoint_id(group, name)
    attr = perf_event_attr(type=PERF_TYPE_TRACEPOINT, config=tid, sample_period=1, wakeup_events=1)
    fd = open_perf_fd(attr, -1, 0, what=f"opening {hook}")
    return attach_owned_perf_fd(fd, prog, cookie, hook)


def attach_raw_tracepoint(name: str, prog: Any, cookie: int = 0) -> FDLink:
    """Attach a ``SEC("raw_tp/...")`` program to raw tracepoint ``name``.

    ``cookie`` needs Linux 6.10.  An unknown tracepoint raises
    :class:`KeyNotExistError`.
    """
    hook = f"raw tracepoint {name}"
    check_program_type(prog, {ProgramType.RAW_TRACEPOINT, ProgramType.RAW_TRACEPOINT_WRITABLE}, hook)
    if not isinstance(name, str) or not name or "\0" in name:
        raise InvalidObjectError(f"invalid raw tracepoint name {name!r}", _errno.EINVAL)
    fd = program_fd(prog)
    try:
        if cookie:  # libbpf 1.1.2 cannot pass one
            lfd = _syscall.raw_tracepoint_open(name, fd, cookie, f"attaching {hook}")
        else:
            lfd = _libbpf.raw_tracepoint_open(name.encode(), fd)
    except EBPFError as exc:
        if exc.errno == _errno.ENOENT:
            raise KeyNotExistError(f"{hook} does not exist", _errno.ENOENT) from None
        if cookie and exc.errno in (_errno.EINVAL, _errno.E2BIG):
            raise NotSupportedError("BPF cookies on raw tracepoints", min_kernel="6.10", errno=exc.errno) from None
        if exc.errno == _errno.EINVAL:
            raise InvalidObjectError(f"attaching {hook}: the kernel refused the program (EINVAL)", exc.errno) from None
        raise
    return FDLink(lfd, hook)


# --------------------------------------------------------------------------
# BTF-typed hooks: tp_btf, fentry, fexit, fmod_ret, freplace, lsm

_TRACING_TYPES = {ProgramType.TRACING, ProgramType.EXT, ProgramType.LSM}
_TRACING_ATTACH = {
    AttachType.TRACE_RAW_TP: "tp_btf",
    AttachType.TRACE_FENTRY: "fentry",
    AttachType.TRACE_FEXIT: "fexit",
    AttachType.MODIFY_RETURN: "fmod_ret",
    AttachType.LSM_MAC: "lsm",
}


def attach_tracing(prog: Any, cookie: int = 0, *, target: Any = None, target_name: Optional[str] = None) -> FDLink:
    """Attach a ``tp_btf``/``fentry``/``fexit``/``fmod_ret``/``lsm``/``freplace`` program.

    The hook is the one the program was loaded for.  A ``freplace`` program
    replaces ``target_name`` (default: the function named in its section) in
    ``target``, another loaded program; without ``target`` it replaces the
    function it was loaded against.  ``cookie`` needs Linux 5.19 (6.10 for
    ``tp_btf``).
    """
    check_program_type(prog, _TRACING_TYPES, "a BTF tracing hook")
    fd = program_fd(prog)
    ptype = getattr(prog, "type", None)
    attach_type = getattr(prog, "attach_type", AttachType.NONE)
    spec = getattr(prog, "spec", None)
    name = getattr(prog, "name", "")
    if attach_type == AttachType.TRACE_ITER:
        raise InvalidObjectError(f"program {name!r} is an iterator: use ebpf.link.attach_iter()", _errno.EINVAL)
    if attach_type == AttachType.LSM_CGROUP:
        raise InvalidObjectError(f"program {name!r} is an lsm_cgroup program: it attaches to a cgroup", _errno.EINVAL)

    if ptype == ProgramType.EXT:
        return _attach_freplace(prog, fd, target, target_name or (spec.attach_to if spec else ""), cookie)
    if target is not None:
        raise InvalidObjectError("target= is only for freplace programs", _errno.EINVAL)

    kind = _TRACING_ATTACH.get(attach_type)
    hook = f"{kind or 'tracing'} {spec.attach_to if spec is not None and spec.attach_to else name}".strip()
    try:
        if kind is None:
            # Unknown expected attach type (e.g. a pinned program): the raw
            # tracepoint command attaches any tracing program to its target.
            if cookie:
                raise NotSupportedError("a BPF cookie for a tracing program of unknown attach type",
                                        detail="load the program from a spec so its attach type is known")
            lfd = _libbpf.raw_tracepoint_open(None, fd)
        elif cookie and attach_type == AttachType.TRACE_RAW_TP:
            # libbpf 1.1 drops the cookie of BPF_TRACE_RAW_TP links.
            attr = _syscall.link_create_attr(prog_fd=fd, attach_type=int(attach_type))
            attr.tracing.cookie = cookie
            lfd = _syscall.link_create(attr, f"attaching {hook}")
        else:
            # libbpf falls back to BPF_RAW_TRACEPOINT_OPEN on kernels whose
            # link_create does not know tracing programs (before 5.8/5.10).
            lfd = _libbpf.link_create(fd, 0, int(attach_type), cookie=cookie)
    except EBPFError as exc:
        raise _tracing_error(exc, hook, cookie) from None
    return FDLink(lfd, hook)


def attach_lsm(prog: Any, cookie: int = 0) -> FDLink:
    """Attach a ``SEC("lsm/...")`` program to its LSM hook."""
    check_program_type(prog, {ProgramType.LSM}, "an LSM hook")
    return attach_tracing(prog, cookie)


def _tracing_error(exc: EBPFError, hook: str, cookie: int) -> EBPFError:
    if exc.errno == _errno.ENOENT:
        return KeyNotExistError(f"{hook}: attach target not found", exc.errno)
    if cookie and exc.errno in (_errno.EINVAL, _errno.E2BIG):
        return NotSupportedError(f"BPF cookies on {hook.split()[0]} links", min_kernel="5.19", errno=exc.errno)
    if exc.errno == _errno.EINVAL:
        return InvalidObjectError(f"attaching {hook}: the kernel refused the program (EINVAL)", exc.errno)
    return exc


def _attach_freplace(prog: Any, fd: int, target: Any, target_name: str, cookie: int) -> FDLink:
    if target is None:
        try:
            lfd = _libbpf.raw_tracepoint_open(None, fd)
        except EBPFError as exc:
            raise _tracing_error(exc, f"freplace {target_name}", 0) from None
        return FDLink(lfd, f"freplace {target_name}")
    if not target_name:
        raise InvalidObjectError("freplace needs target_name= (the function to replace)", _errno.EINVAL)
    target_fd = program_fd(target)
    btf_id = function_btf_id(target, target_name)
    if cookie:
        raise NotSupportedError("BPF cookies on freplace links")
    hook = f"freplace {target_name}"
    try:
        lfd = _libbpf.link_create(fd, target_fd, 0, target_btf_id=btf_id)
    except EBPFError as exc:
        raise _tracing_error(exc, hook, 0) from None
    return FDLink(lfd, hook)


def function_btf_id(prog: Any, func: str) -> int:
    """The BTF id of function ``func`` in a loaded program's own BTF.

    This is the ``target_btf_id`` a ``freplace`` program needs to replace
    ``func`` inside ``prog``.
    """
    from ..btf.spec import Spec  # a lazily loaded subpackage

    info = program_info(program_fd(prog))
    pname = getattr(prog, "name", "") or info.name
    if not info.btf_id:
        raise InvalidObjectError(f"program {pname!r} has no BTF: it cannot be a freplace target", _errno.EINVAL)
    btf_fd = _libbpf.btf_get_fd_by_id(info.btf_id)
    try:
        raw = _syscall.btf_data(btf_fd)
    finally:
        os.close(btf_fd)
    spec = Spec.from_raw(raw, validate=False)
    found = spec.types_by_name(func, "func")
    if not found:
        raise KeyNotExistError(f"function {func!r} not found in the BTF of program {pname!r}", _errno.ENOENT)
    return spec.type_id(found[0])


# --------------------------------------------------------------------------
# kprobes


def kprobe(symbol: str, prog: Any, offset: int = 0, cookie: int = 0) -> Link:
    """Attach a ``SEC("kprobe/...")`` program to kernel function ``symbol``
    (plus ``offset`` bytes).

    Kernels without kprobes (``CONFIG_KPROBES`` off) raise
    :class:`NotSupportedError`; an unknown symbol :class:`KeyNotExistError`.
    """
    return _kprobe(symbol, prog, offset, cookie, ret=False)


def kretprobe(symbol: str, prog: Any, cookie: int = 0) -> Link:
    """Attach a ``SEC("kretprobe/...")`` program to the return of ``symbol``."""
    return _kprobe(symbol, prog, 0, cookie, ret=True)


_NO_KPROBES = ("the kernel has no kprobe PMU (/sys/bus/event_source/devices/kprobe) and no tracefs "
               "kprobe_events: it was built without CONFIG_KPROBES / CONFIG_KPROBE_EVENTS")


def _check_kprobe_program(prog: Any, hook: str, multi: bool) -> None:
    check_program_type(prog, {ProgramType.KPROBE}, hook)
    spec = getattr(prog, "spec", None)
    if spec is None:
        return
    is_multi = getattr(prog, "attach_type", None) == AttachType.TRACE_KPROBE_MULTI
    if is_multi and not multi:
        raise InvalidObjectError(f"program {prog.name!r} was loaded for kprobe.multi: use kprobe_multi()",
                                 _errno.EINVAL)
    if multi and not is_multi:
        raise InvalidObjectError(f"program {prog.name!r} was not loaded for kprobe.multi "
                                 f"(its section must start with kprobe.multi/ or kretprobe.multi/)", _errno.EINVAL)


def _kprobe(symbol: str, prog: Any, offset: int, cookie: int, ret: bool) -> Link:
    kind = "kretprobe" if ret else "kprobe"
    if not isinstance(symbol, str) or not symbol or any(c.isspace() for c in symbol) or "\0" in symbol:
        raise InvalidObjectError(f"invalid {kind} symbol {symbol!r}", _errno.EINVAL)
    if offset < 0:
        raise ValueError("offset must be >= 0")
    hook = f"{kind} {symbol}" + (f"+{offset:#x}" if offset else "")
    _check_kprobe_program(prog, hook, multi=False)
    program_fd(prog)
    try:
        ptype = pmu_type("kprobe")
    except (OSError, ValueError):
        return _kprobe_tracefs(symbol, prog, offset, cookie, ret, hook)
    attr = perf_event_attr(type=ptype, sample_period=1, wakeup_events=1)
    if ret:
        attr.config = 1 << pmu_retprobe_bit("kprobe")
    attr.set_probe(symbol.encode(), offset)  # kprobe_func, probe_offset
    try:
        fd = open_perf_fd(attr, -1, 0, what=f"opening {hook}")
    except EBPFError as exc:
        raise _kprobe_error(exc, symbol, kind, hook) from None
    return attach_owned_perf_fd(fd, prog, cookie, hook)


def _kprobe_error(exc: EBPFError, symbol: str, kind: str, hook: str) -> EBPFError:
    # As cilium/ebpf: ENOENT/EINVAL mean the symbol does not resolve, EILSEQ
    # that symbol+offset is not an instruction boundary.
    if exc.errno in (_errno.ENOENT, _errno.EINVAL):
        return KeyNotExistError(f"{kind}: kernel symbol {symbol!r} not found (or not probeable)", exc.errno)
    if exc.errno == _errno.EILSEQ:
        return KeyNotExistError(f"{hook}: offset is not at an instruction boundary", exc.errno)
    return exc


_probe_counter = 0
_probe_lock = threading.Lock()


def _kprobe_tracefs(symbol: str, prog: Any, offset: int, cookie: int, ret: bool, hook: str) -> Link:
    """The pre-4.17 way: create a kprobe event in tracefs, then attach to it
    as to a tracepoint.  The event is removed when the link closes."""
    global _probe_counter
    kind = "kretprobe" if ret else "kprobe"
    try:
        root = tracefs()
    except NotSupportedError as exc:
        raise NotSupportedError("kprobes", detail=f"{_NO_KPROBES} ({exc})") from None
    events = os.path.join(root, "kprobe_events")
    if not os.path.exists(events):
        raise NotSupportedError("kprobes", detail=_NO_KPROBES)
    with _probe_lock:
        _probe_counter += 1
        n = _probe_counter
    group = f"ebpf_{os.getpid()}"
    event = re.sub(r"[^A-Za-z0-9_]", "_", symbol)[:48] + f"_{n}"
    target = symbol + (f"+{offset}" if offset else "")
    line = f"{'r' if ret else 'p'}:{group}/{event} {target}\n"
    try:
        with open(events, "a") as f:
            f.write(line)
    except OSError as exc:
        err = EBPFError(f"{hook}: {exc.strerror}", exc.errno)
        raise _kprobe_error(err, symbol, kind, hook) from None

    def remove() -> None:
        with open(events, "a") as f:
            f.write(f"-:{group}/{event}\n")

    try:
        tid = tracepoint_id(group, event)
        attr = perf_event_attr(type=PERF_TYPE_TRACEPOINT, config=tid, sample_period=1, wakeup_events=1)
        fd = open_perf_fd(attr, -1, 0, what=f"opening {hook}")
    except BaseException:
        try:
            remove()
        except OSError:
            pass
        raise
    return attach_owned_perf_fd(fd, prog, cookie, hook, cleanups=[remove])


def kprobe_multi(symbols: Sequence[Union[str, int]], prog: Any, cookies: Optional[Sequence[int]] = None) -> FDLink:
    """Attach a ``SEC("kprobe.multi/...")`` program to many kernel functions at once.

    ``symbols`` are function names, or addresses (ints).  ``cookies``, one
    per function, are what ``bpf_get_attach_cookie()`` returns there.
    Needs Linux 5.18 with ``CONFIG_FPROBE``; otherwise :class:`NotSupportedError`.
    """
    return _kprobe_multi(symbols, prog, cookies, ret=False)


def kretprobe_multi(symbols: Sequence[Union[str, int]], prog: Any, cookies: Optional[Sequence[int]] = None) -> FDLink:
    """:func:`kprobe_multi` on function returns."""
    return _kprobe_multi(symbols, prog, cookies, ret=True)


def _kprobe_multi(symbols: Sequence[Union[str, int]], prog: Any, cookies: Optional[Sequence[int]], ret: bool) -> FDLink:
    kind = "kretprobe.multi" if ret else "kprobe.multi"
    if isinstance(symbols, (str, bytes)):
        symbols = [symbols]  # type: ignore[list-item]
    items = list(symbols)
    if not items:
        raise ValueError(f"{kind}: no symbols or addresses")
    by_name = all(isinstance(s, str) for s in items)
    if not by_name and not all(isinstance(s, int) and not isinstance(s, bool) for s in items):
        raise TypeError(f"{kind}: give either symbol names or addresses, not a mix")
    if cookies is not None and len(cookies) != len(items):
        raise ValueError(f"{kind}: {len(cookies)} cookies for {len(items)} functions")
    hook = f"{kind} " + (", ".join(map(str, items[:3])) + (", ..." if len(items) > 3 else ""))
    _check_kprobe_program(prog, hook, multi=True)
    fd = program_fd(prog)
    try:
        lfd = _libbpf.kprobe_multi_link_create(
            fd, int(AttachType.TRACE_KPROBE_MULTI),
            symbols=[s.encode() for s in items] if by_name else None,  # type: ignore[union-attr]
            addresses=None if by_name else items,  # type: ignore[arg-type]
            cookies=cookies, flags=BPF_F_KPROBE_MULTI_RETURN if ret else 0,
        )
    except EBPFError as exc:
        if exc.errno in (_errno.ESRCH, _errno.ENOENT):
            raise KeyNotExistError(f"{hook}: kernel symbol not found (or not traceable)", exc.errno) from None
        if exc.errno in (_errno.EOPNOTSUPP, ENOTSUPP):
            detail = "the kernel has no fprobe support (CONFIG_FPROBE / CONFIG_KPROBES)"
            raise NotSupportedError("kprobe.multi links", min_kernel="5.18", errno=exc.errno, detail=detail) from None
        if exc.errno == _errno.EINVAL:
            raise InvalidObjectError(f"attaching {hook}: the kernel refused it (EINVAL; kernels before 5.18 "
                                     f"have no kprobe.multi links)", exc.errno) from None
        raise
    return FDLink(lfd, hook)
