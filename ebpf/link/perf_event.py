"""Perf events: opening them, and attaching programs to them.

Tracepoints, kprobes and uprobes are all perf events underneath: the hook is
opened with ``perf_event_open(2)`` and the program is attached to that event.
Since Linux 5.15 the attachment is a ``bpf_link`` (``BPF_LINK_CREATE`` with
``BPF_PERF_EVENT``), which can be pinned and carries a BPF cookie; older
kernels only have the ``PERF_EVENT_IOC_SET_BPF`` ioctl, whose attachment lives
exactly as long as the perf event's file descriptor.  Both kinds of link here
own the perf event and close it with the link.

``open_cpu_clock`` opens a sampling software event, the usual target of a
``SEC("perf_event")`` program::

    events = open_cpu_clocks(sample_freq=1000)
    links = [attach_perf_event(ev, prog) for ev in events]
"""

from __future__ import annotations

import errno as _errno
import fcntl
import functools
import os
from typing import Any, Callable, List, Optional, Sequence

from .. import _libbpf, _syscall
from .._fd import FDOwner
from .._syscall import (
    PERF_COUNT_SW_CPU_CLOCK,
    PERF_EVENT_IOC_DISABLE,
    PERF_EVENT_IOC_ENABLE,
    PERF_EVENT_IOC_SET_BPF,
    PERF_FLAG_FD_CLOEXEC,
    PERF_TYPE_HARDWARE,
    PERF_TYPE_SOFTWARE,
    PERF_TYPE_TRACEPOINT,
    perf_event_attr,
)
from ..errors import ENOTSUPP, ClosedError, EBPFError, InvalidObjectError, NotSupportedError
from ..types import AttachType, ProgramType
from ._link import FDLink, Link, check_program_type, program_fd

__all__ = [
    "PerfEvent",
    "PerfEventLink",
    "PerfEventIoctlLink",
    "attach_perf_event",
    "open_cpu_clock",
    "open_cpu_clocks",
    "online_cpus",
    # Re-exported from ebpf._syscall: the kernel's perf ABI, for callers
    # opening events of their own.
    "perf_event_attr",
    "PERF_COUNT_SW_CPU_CLOCK",
    "PERF_EVENT_IOC_DISABLE",
    "PERF_EVENT_IOC_ENABLE",
    "PERF_EVENT_IOC_SET_BPF",
    "PERF_FLAG_FD_CLOEXEC",
    "PERF_TYPE_HARDWARE",
    "PERF_TYPE_SOFTWARE",
    "PERF_TYPE_TRACEPOINT",
]

# Program types a perf event accepts.
PERF_PROGRAM_TYPES = frozenset({ProgramType.KPROBE, ProgramType.TRACEPOINT, ProgramType.PERF_EVENT})


def open_perf_fd(attr: perf_event_attr, pid: int = -1, cpu: int = 0, what: str = "perf_event_open") -> int:
    """perf_event_open(2) with close-on-exec; typed errors name ``what``."""
    return _syscall.perf_event_open(attr, pid, cpu, -1, PERF_FLAG_FD_CLOEXEC, what=what)


class PerfEvent(FDOwner):
    """An open perf event (a ``perf_event_open(2)`` file descriptor).

    Pass it to :func:`attach_perf_event`; the link keeps its own reference,
    so closing this object afterwards does not detach the program.
    """

    _kind = "perf event"

    def __init__(self, fd: int, cpu: int = -1, type: int = -1, config: int = 0) -> None:
        FDOwner.__init__(self, fd)
        self.cpu = cpu
        self.type = type
        self.config = config

    def enable(self) -> None:
        """``PERF_EVENT_IOC_ENABLE``."""
        _ioctl(self.fd, PERF_EVENT_IOC_ENABLE, 0, "enabling perf event")

    def disable(self) -> None:
        """``PERF_EVENT_IOC_DISABLE``."""
        _ioctl(self.fd, PERF_EVENT_IOC_DISABLE, 0, "disabling perf event")

    def pin(self, path: Any) -> None:
        raise NotSupportedError("pinning a perf event", detail="only bpf objects can be pinned; pin the link")

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self._fd}"
        return f"<PerfEvent type={self.type} config={self.config} cpu={self.cpu} {state}>"


def online_cpus() -> List[int]:
    """The CPUs that are online now (``/sys/devices/system/cpu/online``)."""
    try:
        with open("/sys/devices/system/cpu/online") as f:
            text = f.read().strip()
    except OSError:
        return list(range(os.cpu_count() or 1))
    cpus: List[int] = []
    for part in text.split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def open_cpu_clock(cpu: int, sample_period: Optional[int] = None, sample_freq: Optional[int] = None) -> PerfEvent:
    """A ``PERF_COUNT_SW_CPU_CLOCK`` sampling event on ``cpu`` (all tasks).

    Give either ``sample_period`` (nanoseconds of CPU time between samples)
    or ``sample_freq`` (samples per second); the default is 1000 Hz.  A
    ``SEC("perf_event")`` program attached to it runs at every sample.
    """
    if sample_period is not None and sample_freq is not None:
        raise ValueError("give sample_period or sample_freq, not both")
    if cpu < 0:
        raise ValueError(f"cpu must be >= 0, not {cpu}")
    attr = perf_event_attr(type=PERF_TYPE_SOFTWARE, config=PERF_COUNT_SW_CPU_CLOCK)
    if sample_period is not None:
        if sample_period <= 0:
            raise ValueError("sample_period must be positive")
        attr.sample_period = sample_period
    else:
        freq = 1000 if sample_freq is None else sample_freq
        if freq <= 0:
            raise ValueError("sample_freq must be positive")
        attr.sample_freq = freq
        attr.freq = 1
    try:
        fd = open_perf_fd(attr, -1, cpu, what=f"opening cpu-clock perf event on CPU {cpu}")
    except EBPFError as exc:
        if exc.errno in (_errno.ENODEV, _errno.ENXIO) or (exc.errno == _errno.EINVAL and cpu not in online_cpus()):
            raise InvalidObjectError(f"CPU {cpu} is not online", exc.errno) from None
        raise
    return PerfEvent(fd, cpu, PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK)


def open_cpu_clocks(sample_period: Optional[int] = None, sample_freq: Optional[int] = None) -> List[PerfEvent]:
    """:func:`open_cpu_clock` on every online CPU (all or none are opened)."""
    events: List[PerfEvent] = []
    try:
        for cpu in online_cpus():
            events.append(open_cpu_clock(cpu, sample_period, sample_freq))
    except BaseException:
        for ev in events:
            ev.close()
        raise
    return events


# --------------------------------------------------------------------------
# Links


def _ioctl(fd: int, request: int, arg: int, what: str) -> None:
    try:
        fcntl.ioctl(fd, request, arg)
    except OSError as exc:
        raise _libbpf.errno_error(exc.errno or _errno.EINVAL, what) from None


def _run_cleanups(cleanups: Sequence[Callable[[], None]]) -> None:
    for fn in cleanups:
        try:
            fn()
        except Exception:
            pass


class PerfEventLink(FDLink):
    """A ``bpf_link`` to a perf event; owns the perf event fd as well.

    ``cleanups`` run after both fds are closed (e.g. removing a tracefs
    kprobe event that backed the perf event).
    """

    def __init__(self, fd: int, perf_fd: int, description: str = "",
                 cleanups: Sequence[Callable[[], None]] = ()) -> None:
        self._perf_fd = perf_fd
        self._cleanups = list(cleanups)
        FDLink.__init__(self, fd, description)

    @property
    def perf_fd(self) -> int:
        """The perf event's fd (owned by the link)."""
        if self._perf_fd < 0:
            raise ClosedError("link")
        return self._perf_fd

    def _release(self, _close: Any = os.close, _run: Any = _run_cleanups) -> None:
        try:
            super()._release()
        finally:
            perf_fd, self._perf_fd = self._perf_fd, -1
            cleanups, self._cleanups = self._cleanups, []
            try:
                _close(perf_fd)
            finally:
                _run(cleanups)


class PerfEventIoctlLink(Link):
    """A program attached with ``PERF_EVENT_IOC_SET_BPF`` (kernels before 5.15).

    There is no ``bpf_link``: the attachment ends when the perf event is
    closed, and it cannot be pinned, updated or queried.
    """

    def __init__(self, perf_fd: int, description: str = "", cleanups: Sequence[Callable[[], None]] = ()) -> None:
        self._perf_fd = perf_fd
        self._description = description
        self._cleanups = list(cleanups)
        Link.__init__(self)

    @property
    def perf_fd(self) -> int:
        self._check_open()
        return self._perf_fd

    def _release(self, _close: Any = os.close, _ioctl: Any = fcntl.ioctl, _disable: int = PERF_EVENT_IOC_DISABLE,
                 _run: Any = _run_cleanups) -> None:
        perf_fd, self._perf_fd = self._perf_fd, -1
        cleanups, self._cleanups = self._cleanups, []
        try:
            try:
                _ioctl(perf_fd, _disable, 0)
            except OSError:
                pass
            _close(perf_fd)
        finally:
            _run(cleanups)

    def pin(self, path: Any) -> None:
        raise NotSupportedError("pinning a perf event attached by ioctl", min_kernel="5.15",
                                detail="the kernel has no bpf_link for perf events")

    def update(self, prog: Any) -> None:
        raise NotSupportedError("updating a perf event attachment",
                                detail="the kernel cannot swap programs on a perf event")

    def info(self) -> Any:
        raise NotSupportedError("info of a perf event attached by ioctl", min_kernel="5.15",
                                detail="the kernel has no bpf_link for perf events")

    def __repr__(self) -> str:
        if self.closed:
            return "<PerfEventIoctlLink closed>"
        return f"<PerfEventIoctlLink perf_fd={self._perf_fd} {self._description}>".replace(" >", ">")


# Cached answer to "does this kernel have BPF_PERF_EVENT links"; tests may
# set it to False to exercise the ioctl path.
_perf_link_support: Optional[bool] = None


def perf_link_supported(prog: Any) -> bool:
    """Whether ``BPF_LINK_CREATE`` knows ``BPF_PERF_EVENT`` (5.15+).

    Asked with the caller's own program and an invalid target fd: EBADF
    means the kernel got as far as looking up the perf event, EINVAL that it
    does not know the attach type (cilium/ebpf's probe).  The answer is
    cached only when the program's type is known to suit perf events, since
    an unsuitable program also gets EINVAL.
    """
    global _perf_link_support
    if _perf_link_support is not None:
        return _perf_link_support
    try:
        fd = _libbpf.link_create(program_fd(prog), -1, int(AttachType.PERF_EVENT))
    except EBPFError as exc:
        if exc.errno == _errno.EBADF:
            answer = True
        elif exc.errno in (_errno.EINVAL, _errno.EOPNOTSUPP, ENOTSUPP):
            answer = False
        else:
            raise
    else:  # pragma: no cover - the kernel cannot accept fd -1
        os.close(fd)
        answer = True
    if getattr(prog, "type", None) in PERF_PROGRAM_TYPES:
        _perf_link_support = answer
    return answer


def attach_owned_perf_fd(perf_fd: int, prog: Any, cookie: int = 0, description: str = "",
                         cleanups: Sequence[Callable[[], None]] = ()) -> Link:
    """Attach ``prog`` to the perf event ``perf_fd`` and give the fd to the link.

    On failure ``perf_fd`` is closed and ``cleanups`` run, so nothing is left
    behind.  Used by tracepoints, kprobes and uprobes.
    """
    try:
        prog_fd = program_fd(prog)
        if perf_link_supported(prog):
            try:
                fd = _libbpf.link_create(prog_fd, perf_fd, int(AttachType.PERF_EVENT), cookie=cookie)
            except EBPFError as exc:
                raise _attach_error(exc, prog, description) from None
            try:
                # A link does not enable the event; events opened disabled
                # start firing here (a no-op for enabled ones).
                _ioctl(perf_fd, PERF_EVENT_IOC_ENABLE, 0, f"enabling {description}")
            except BaseException:
                os.close(fd)
                raise
            return PerfEventLink(fd, perf_fd, description, cleanups)
        if cookie:
            raise NotSupportedError("BPF cookies on perf events", min_kernel="5.15",
                                    detail="this kernel attaches programs to perf events only by ioctl")
        try:
            _ioctl(perf_fd, PERF_EVENT_IOC_SET_BPF, prog_fd, f"attaching program to {description}")
        except EBPFError as exc:
            raise _attach_error(exc, prog, description) from None
        _ioctl(perf_fd, PERF_EVENT_IOC_ENABLE, 0, f"enabling {description}")
        return PerfEventIoctlLink(perf_fd, description, cleanups)
    except BaseException:
        os.close(perf_fd)
        _run_cleanups(cleanups)
        raise


def _attach_error(exc: EBPFError, prog: Any, description: str) -> EBPFError:
    if exc.errno == _errno.EBADF:
        return InvalidObjectError(f"attaching to {description}: the fd is not a perf event (EBADF)", exc.errno)
    if exc.errno == _errno.EEXIST:
        return EBPFError(f"attaching to {description}: a program is already attached to this perf event", exc.errno)
    if exc.errno == _errno.EINVAL:
        t = getattr(getattr(prog, "type", None), "name", "this")
        return InvalidObjectError(f"attaching to {description}: the kernel refused a {t} program for this event "
                                  f"(EINVAL: wrong program type or attach type for the hook)", exc.errno)
    return exc


def attach_perf_event(perf_fd: Any, prog: Any, cookie: int = 0) -> Link:
    """Attach ``prog`` to an open perf event (a :class:`PerfEvent` or an fd).

    The link holds its own duplicate of the fd: closing the caller's event
    afterwards does not detach.  ``cookie`` is the value
    ``bpf_get_attach_cookie()`` returns in the program (5.15+).
    """
    check_program_type(prog, PERF_PROGRAM_TYPES, "a perf event")
    program_fd(prog)  # a closed program fails before we dup anything
    if isinstance(perf_fd, PerfEvent):
        desc = f"perf event type={perf_fd.type} config={perf_fd.config} cpu={perf_fd.cpu}"
        raw = perf_fd.fd
    elif isinstance(perf_fd, int):
        desc, raw = f"perf event fd {perf_fd}", perf_fd
    else:
        raise TypeError(f"expected a PerfEvent or an fd, got {type(perf_fd).__name__}")
    try:
        dup = os.dup(raw)
    except OSError as exc:
        raise EBPFError(f"{desc}: {os.strerror(exc.errno or _errno.EBADF)}", exc.errno) from None
    return attach_owned_perf_fd(dup, prog, cookie, desc)


@functools.lru_cache(maxsize=None)
def pmu_type(name: str) -> int:
    """The dynamic PMU type of ``/sys/bus/event_source/devices/<name>``.

    Raises FileNotFoundError when the PMU does not exist.
    """
    with open(f"/sys/bus/event_source/devices/{name}/type") as f:
        return int(f.read().strip())


@functools.lru_cache(maxsize=None)
def pmu_retprobe_bit(name: str) -> int:
    """Bit of ``config`` that makes a kprobe/uprobe PMU event a return probe."""
    with open(f"/sys/bus/event_source/devices/{name}/format/retprobe") as f:
        text = f.read().strip()  # "config:0"
    return int(text.partition(":")[2])
