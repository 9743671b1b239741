"""Ownership of whatever the kernel keeps until it is released.

A :class:`Handle` owns kernel state that outlives a plain ``close(2)`` of
one fd or that needs a call to undo: an attachment without a ``bpf_link``
(legacy cgroup attach, tc filter, socket filter, struct_ops registration,
perf-event ioctl), the uprobes of a USDT attachment, mapped rings, a link's
fd together with its perf event.  :class:`ebpf._fd.FDOwner` (maps,
programs, links) is one too.  Every handle has the same life cycle:

* ``close()`` releases exactly once.  It may be called from any thread and
  any number of times: concurrent callers wait until the release finished,
  later calls return at once.
* ``closed`` says whether it was closed (or finalized).
* It is a context manager.
* A handle dropped without ``close()`` is released by its finalizer.  The
  finalizer touches no module globals, so it is safe at interpreter
  shutdown, when modules may already have been torn down (the model is
  llvmlite's ``binding/ffi.py`` ``ObjectRef``).

A subclass acquires its resource, then calls ``Handle.__init__(self)``: a
constructor that fails before that leaves an object that reads as closed
and releases nothing.  It implements :meth:`Handle._release`, which runs
once, either from ``close()`` (with the handle's lock held) or from the
finalizer.  Since the finalizer may run at shutdown, ``_release`` should use
only what the object holds: bind module functions as default arguments or
attributes at construction (``def _release(self, _close=os.close)``).
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

from .errors import ClosedError

__all__ = ["Handle"]

_H = TypeVar("_H", bound="Handle")


class Handle:
    """Base of objects that own a kernel resource released by ``close()``."""

    _kind = "handle"
    # Class-level defaults: until Handle.__init__ ran, the object reads as
    # closed and neither close() nor the finalizer releases anything.
    _closed = True
    _handle_lock: Any = None

    def __init__(self) -> None:
        # Re-entrant: a release that reaches close() of the same handle again
        # (through a callback, say) returns instead of deadlocking.
        self._handle_lock = threading.RLock()
        self._closed = False

    # -- what a subclass writes ----------------------------------------------

    def _release(self) -> None:  # pragma: no cover - abstract
        """Give the resource back to the kernel.  Runs at most once."""
        raise NotImplementedError

    def _finalize(self) -> None:
        """What the finalizer runs for a handle nobody closed.

        Defaults to :meth:`_release`; a subclass overrides it only when an
        unreachable handle can skip part of the release (nobody can be
        waiting on it, for instance)."""
        self._release()

    # -- the life cycle ---------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` (or the finalizer) has run."""
        return self._closed

    def close(self) -> None:
        """Release the resource; calling it again does nothing.

        Thread-safe: of concurrent callers exactly one releases, the others
        return when it is done.  If the release fails, the error propagates
        to that caller and the handle stays closed (as a file does).
        """
        lock = self._handle_lock
        if lock is None:  # never initialised: nothing is held
            return
        with lock:
            if self._closed:
                return
            self._closed = True
            self._release()

    def _check_open(self) -> None:
        """Raise :class:`ClosedError` when the handle is closed."""
        if self._closed:
            raise ClosedError(self._kind)

    def __enter__(self: _H) -> _H:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self, _ignored: Any = Exception) -> None:
        # Unreachable: no other thread can hold the lock or use the handle,
        # so it is not taken.  Only the object's own attributes are touched.
        if self._closed:
            return
        self._closed = True
        try:
            self._finalize()
        except _ignored:
            pass
