"""Run-time statistics of programs: ``BPF_ENABLE_STATS`` (cilium's ``EnableStats``).

The kernel counts how often each program ran and for how long only while
statistics are on, since taking two timestamps per run costs time.
:func:`enable_stats` turns them on for as long as the returned handle is
open (``BPF_ENABLE_STATS`` hands out an fd; closing the last such fd turns
them off again, unless ``kernel.bpf_stats_enabled`` is set)::

    with ebpf.enable_stats():
        prog.run()
        s = prog.stats()      # ebpf.ProgramStats(run_count=1, run_time_ns=..., ...)

:meth:`ebpf.Program.stats` reads the counters (``bpf_prog_info``) at any
time; they keep what was counted while statistics were on.
"""

from __future__ import annotations

import errno
import os
from typing import Callable

from . import _libbpf
from ._handle import Handle
from .errors import ClosedError, EBPFError, NotSupportedError, PermissionDeniedError

__all__ = ["enable_stats", "StatsHandle", "BPF_STATS_RUN_TIME"]

BPF_STATS_RUN_TIME = _libbpf.BPF_STATS_RUN_TIME


class StatsHandle(Handle):
    """Statistics collection, on while this is open: a context manager
    (``with ebpf.enable_stats(): ...``) owning the fd of ``BPF_ENABLE_STATS``.

    ``close()`` (or the end of the ``with`` block, or the finalizer) gives
    the fd back; statistics stop when no one else keeps them on.
    """

    _kind = "statistics handle"

    def __init__(self, kind: int = BPF_STATS_RUN_TIME) -> None:
        self._fd = -1
        self._stats_kind = kind
        try:
            fd = _libbpf.enable_stats(kind)
        except PermissionDeniedError as exc:
            raise PermissionDeniedError(f"enabling program statistics: {os.strerror(exc.errno or errno.EPERM)} "
                                        "(BPF_ENABLE_STATS needs CAP_SYS_ADMIN)", exc.errno) from None
        except NotSupportedError:
            raise
        except EBPFError as exc:
            if exc.errno == errno.EINVAL:
                # Unknown command (before 5.8) or unknown kind of statistics.
                raise NotSupportedError(f"BPF_ENABLE_STATS of kind {kind}", min_kernel="5.8",
                                        errno=exc.errno) from None
            raise
        self._fd = fd
        Handle.__init__(self)

    @property
    def fd(self) -> int:
        """The fd that keeps statistics on (ClosedError after close())."""
        if self._closed:
            raise ClosedError(self._kind)
        return self._fd

    @property
    def kind(self) -> int:
        """What is collected (``BPF_STATS_RUN_TIME``, the only kind so far)."""
        return self._stats_kind

    def _release(self, _close: Callable[[int], None] = os.close) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            _close(fd)

    def __enter__(self) -> "StatsHandle":
        return self

    def __repr__(self) -> str:
        return "<StatsHandle closed>" if self._closed else f"<StatsHandle fd={self._fd}>"


def enable_stats(kind: int = BPF_STATS_RUN_TIME) -> StatsHandle:
    """Turn on program run-time statistics until the handle is closed.

    Raises :class:`~ebpf.errors.NotSupportedError` on kernels before 5.8 and
    :class:`~ebpf.errors.PermissionDeniedError` without CAP_SYS_ADMIN.
    """
    return StatsHandle(kind)
