"""Waiting for events: the epoll set and the reader plumbing shared by
:mod:`ebpf.ringbuf` and :mod:`ebpf.perf`.

A :class:`Poller` is an epoll set over the rings' file descriptors plus a
wake-up pipe that ``close()`` writes to, so a reader blocked in another thread
(or awaiting in an event loop) wakes up at once.  The epoll fd itself is
pollable: asyncio registers it with ``loop.add_reader`` instead of running a
thread per reader.

:class:`EventReader` holds what both readers do the same way: blocking and
non-blocking reads with timeouts, batches, iteration, asyncio, ``flush()``
and a ``close()`` that may come from any thread.  A subclass only knows how
to take records out of its rings without blocking (``_drain``) and how to
free them (``_free``).

Locking: ``_lock`` guards the rings (consumer positions, mmaps) and is held
only while records are taken out, never while waiting, so ``close()`` never
waits for a blocked read.  Waiters are counted; the rings are freed by
``close()`` when nobody waits, else by the last waiter on its way out, so
no waiter ever touches an unmapped ring or a closed fd.
"""

from __future__ import annotations

import itertools
import os
import select
import threading
import time
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Callable,
    Generic,
    Iterable,
    Iterator,
    List,
    Optional,
    Protocol,
    Sequence,
    TypeVar,
)

from ._handle import Handle
from .errors import ClosedError

if TYPE_CHECKING:  # asyncio is imported by the async methods, when used
    import asyncio

__all__ = ["Poller", "EventReader"]

_EPOLLIN = select.EPOLLIN


class Poller:
    """An epoll set plus a wake-up pipe that interrupts every wait once
    written to.  A pipe rather than an eventfd: ``os.eventfd`` is 3.10+."""

    def __init__(self) -> None:
        self._ep = select.epoll()
        try:
            self._efd, self._wfd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        except BaseException:
            self._ep.close()
            raise
        try:
            self._ep.register(self._efd, _EPOLLIN)
        except BaseException:
            self._ep.close()
            os.close(self._efd)
            os.close(self._wfd)
            raise
        self.interrupted = False

    def add(self, fd: int, events: int = _EPOLLIN) -> None:
        self._ep.register(fd, events)

    def fileno(self) -> int:
        return self._ep.fileno()

    def wait(self, timeout: Optional[float]) -> List[int]:
        """Block until a ring is ready, the poller is interrupted or
        ``timeout`` seconds passed; returns the ready ring fds (the wake-up
        pipe is left out, see :attr:`interrupted`)."""
        events = self._ep.poll(-1 if timeout is None else max(timeout, 0.0))
        efd = self._efd
        ready = []
        for fd, _ in events:
            if fd == efd:
                self.interrupted = True
            else:
                ready.append(fd)
        return ready

    def interrupt(self) -> None:
        """Wake every current and future wait.  The pipe is never read, so
        it stays readable: an interrupt cannot be lost (a full pipe is
        readable already, hence EAGAIN is ignored)."""
        self.interrupted = True
        try:
            os.write(self._wfd, b"\x01")
        except OSError:
            pass

    def close(self) -> None:
        self._ep.close()
        for fd in (self._efd, self._wfd):
            try:
                os.close(fd)
            except OSError:
                pass


class _Record(Protocol):
    """What the records of every reader have."""

    @property
    def raw_sample(self) -> bytes: ...


_R = TypeVar("_R", bound=_Record)  # the reader's record type

# What the rings are drained into: chunks (iterables) of records, or of raw
# samples (bytes) for read_samples().
_Chunks = List[Iterable[Any]]


class EventReader(Handle, Generic[_R]):
    """Shared behaviour of the ring buffer and perf buffer readers, generic
    over the type of their records (``EventReader[ebpf.ringbuf.Record]``).

    Subclasses set ``_poller`` and implement ``_drain(out, limit)`` (take up
    to ``limit`` records without blocking, append them to ``out``, return
    how many) and ``_free()`` (release rings and fds; called once).  The
    life cycle (close once from any thread, context manager, finalizer) is
    :class:`ebpf._handle.Handle`'s.
    """

    _kind = "reader"
    # Records taken from the ring per refill of read()'s read-ahead buffer.
    _READ_AHEAD = 1024
    # Records per batch when iterating or when read_batch() has no limit.
    _ITER_BATCH = 4096

    _poller: Optional[Poller] = None

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        # Records taken out of the ring by read() but not returned yet.
        self._pending: Iterator[_R] = iter(())
        self._freed = False
        self._waiters = 0
        self._async_waiting = False
        Handle.__init__(self)

    # -- subclass interface --------------------------------------------------

    def _drain(self, out: _Chunks, limit: int, raw: bool) -> int:  # pragma: no cover - abstract
        """Take up to ``limit`` records out of the rings without blocking;
        append them to ``out`` as chunks (iterables: lazy maps building
        records, or with ``raw`` sequences of sample bytes); return how
        many records.  Called with ``_lock`` held."""
        raise NotImplementedError

    def _free(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- closing -------------------------------------------------------------

    def close(self) -> None:
        """Release the reader.  Safe from any thread and more than once.

        A read blocked in another thread or coroutine wakes up and raises
        :class:`~ebpf.errors.ClosedError`; iteration ends.  Records taken
        from the ring but not yet returned by :meth:`read` are dropped: call
        :meth:`flush` first to keep them.
        """
        Handle.close(self)

    def _release(self) -> None:
        # closed is set already; a waiter that wakes frees the rings on its
        # way out if it is the last (_leave_wait), else this does.
        with self._lock:
            self._pending = iter(())
            self._pending_left = False
            if self._freed:
                return
            if self._poller is not None:
                self._poller.interrupt()
            if self._waiters == 0:
                self._free_once()

    def _finalize(self) -> None:
        # Nobody can be waiting on an unreachable reader: free what is left.
        # _free() only uses what it bound at construction (no module
        # globals), so this is safe at interpreter shutdown.
        if not self._freed:
            self._freed = True
            self._free()

    def _free_once(self) -> None:
        if not self._freed:
            self._freed = True
            self._free()

    def fileno(self) -> int:
        """The epoll fd: readable when a ring may hold records (for select/asyncio)."""
        if self._closed or self._poller is None:
            raise ClosedError(self._kind)
        return self._poller.fileno()

    # -- reading -------------------------------------------------------------

    def _take(self, out: _Chunks, limit: int, raw: bool = False) -> int:
        """Append chunks of up to ``limit`` records (read-ahead first) to ``out``."""
        with self._lock:
            if self._closed:
                raise ClosedError(self._kind)
            n = 0
            if self._pending_left:
                head = list(itertools.islice(self._pending, limit))
                if len(head) < limit:
                    self._pending_left = False
                if head:
                    out.append([r.raw_sample for r in head] if raw else head)
                    n = len(head)
            if n < limit:
                n += self._drain(out, limit - n, raw)
            return n

    _pending_left = False

    def _enter_wait(self) -> None:
        with self._lock:
            if self._closed:
                raise ClosedError(self._kind)
            self._waiters += 1

    def _leave_wait(self) -> None:
        with self._lock:
            self._waiters -= 1
            if self._closed and self._waiters == 0:
                self._free_once()

    def _collect(self, out: _Chunks, limit: int, timeout: Optional[float], raw: bool = False) -> int:
        """Append chunks of 1..limit records to ``out``, waiting up to ``timeout``."""
        n = self._take(out, limit, raw)
        if n:
            return n
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is not None:
                left: Optional[float] = deadline - time.monotonic()
                if left <= 0:  # type: ignore[operator]
                    raise TimeoutError(f"no record within {timeout} s")
            else:
                left = None
            self._enter_wait()
            try:
                self._poller.wait(left)  # type: ignore[union-attr]
            finally:
                self._leave_wait()
            n = self._take(out, limit, raw)
            if n:
                return n

    def _refill(self, chunks: List[Iterable[_R]]) -> _R:
        """Keep all but the first record of ``chunks`` for later read()s."""
        it = itertools.chain.from_iterable(chunks)
        first = next(it)
        with self._lock:
            if not self._closed:
                # Another thread may have left records too: keep both.
                self._pending = itertools.chain(self._pending, it) if self._pending_left else it
                self._pending_left = True
        return first

    def read(self, timeout: Optional[float] = None) -> _R:
        """The next record, waiting for one up to ``timeout`` seconds (None:
        forever, 0: do not wait).

        Raises :class:`TimeoutError` when none came in time and
        :class:`~ebpf.errors.ClosedError` once the reader is closed (also
        when :meth:`close` is called while this waits).
        """
        if self._pending_left:
            rec = next(self._pending, None)
            if rec is not None:
                return rec
            self._pending_left = False
        chunks: List[Iterable[_R]] = []
        self._collect(chunks, self._READ_AHEAD, timeout)
        return self._refill(chunks)

    def read_batch(self, max_records: Optional[int] = None, timeout: Optional[float] = None) -> List[_R]:
        """Wait (as :meth:`read`) for at least one record and return all that
        are there, at most ``max_records`` (default 65536), oldest first."""
        chunks: List[Iterable[_R]] = []
        self._collect(chunks, _limit(max_records), timeout)
        return list(itertools.chain.from_iterable(chunks))

    def read_into(self, out: List[_R], max_records: Optional[int] = None, timeout: Optional[float] = None) -> int:
        """Like :meth:`read_batch` but appends to ``out``; returns how many."""
        chunks: List[Iterable[_R]] = []
        n = self._collect(chunks, _limit(max_records), timeout)
        out.extend(itertools.chain.from_iterable(chunks))
        return n

    def read_samples(self, max_records: Optional[int] = None, timeout: Optional[float] = None) -> List[bytes]:
        """Like :meth:`read_batch` but returns only the raw samples (bytes),
        no :class:`Record` objects: the fastest way to drain a ring."""
        chunks: List[Iterable[bytes]] = []
        self._collect(chunks, _limit(max_records), timeout, raw=True)
        if len(chunks) == 1:
            return list(chunks[0])
        return list(itertools.chain.from_iterable(chunks))

    def flush(self) -> List[_R]:
        """Everything the rings hold now, without waiting (may be empty).

        Unlike :meth:`read`, this ignores wakeup thresholds (perf watermarks,
        ``BPF_RB_NO_WAKEUP``): what was written is returned.  Use it before
        :meth:`close` to keep the last records.
        """
        chunks: List[Iterable[_R]] = []
        limit = 1 << 20
        # Stop when a pass came back short: a producer that keeps writing
        # cannot keep flush() going forever.
        while self._take(chunks, limit) == limit:
            pass
        return list(itertools.chain.from_iterable(chunks))

    def __iter__(self) -> Iterator[_R]:
        """Records forever, waiting as needed; the iteration ends when the
        reader is closed (from another thread, for instance).

        Records are built as the loop asks for them, so a loop that does not
        keep them costs no garbage-collector work."""
        return itertools.chain.from_iterable(self._chunks())

    def _chunks(self) -> Iterator[Iterable[_R]]:
        while True:
            chunks: List[Iterable[_R]] = []
            try:
                self._collect(chunks, self._ITER_BATCH, None)
            except ClosedError:
                return
            yield from chunks

    # -- asyncio ---------------------------------------------------------------

    async def _collect_async(self, out: _Chunks, limit: int, timeout: Optional[float]) -> int:
        import asyncio

        n = self._take(out, limit)
        if n:
            return n
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise TimeoutError(f"no record within {timeout} s")
            self._enter_wait()
            try:
                await self._wait_readable(loop, left)
            finally:
                self._leave_wait()
            n = self._take(out, limit)
            if n:
                return n

    async def _wait_readable(self, loop: "asyncio.AbstractEventLoop", timeout: Optional[float]) -> None:
        import asyncio

        poller = self._poller
        assert poller is not None
        # Level-triggered epoll keeps a ring on its ready list until the next
        # epoll_wait re-checks it; without this non-blocking wait the epoll
        # fd would look readable forever and the loop would spin.
        if poller.wait(0) or poller.interrupted:
            return
        if self._async_waiting:
            raise RuntimeError(f"another coroutine is already waiting on this {self._kind}")
        fd = poller.fileno()
        fut = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        self._async_waiting = True
        loop.add_reader(fd, ready)
        try:
            if timeout is None:
                await fut
            else:
                try:
                    await asyncio.wait_for(fut, timeout)
                except asyncio.TimeoutError:
                    pass  # the caller sees the deadline and raises TimeoutError
        finally:
            loop.remove_reader(fd)
            self._async_waiting = False

    async def read_async(self, timeout: Optional[float] = None) -> _R:
        """:meth:`read` for asyncio: waits through the event loop (the epoll
        fd is registered with ``loop.add_reader``), never in a thread."""
        if self._pending_left:
            rec = next(self._pending, None)
            if rec is not None:
                return rec
            self._pending_left = False
        chunks: List[Iterable[_R]] = []
        await self._collect_async(chunks, self._READ_AHEAD, timeout)
        return self._refill(chunks)

    async def read_batch_async(self, max_records: Optional[int] = None,
                               timeout: Optional[float] = None) -> List[_R]:
        """:meth:`read_batch` for asyncio."""
        chunks: List[Iterable[_R]] = []
        await self._collect_async(chunks, _limit(max_records), timeout)
        return list(itertools.chain.from_iterable(chunks))

    def __aiter__(self) -> AsyncIterator[_R]:
        """``async for record in reader``: ends when the reader is closed."""
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[_R]:
        while True:
            chunks: List[Iterable[_R]] = []
            try:
                await self._collect_async(chunks, self._ITER_BATCH, None)
            except ClosedError:
                return
            for chunk in chunks:
                for record in chunk:
                    yield record


def _limit(max_records: Optional[int]) -> int:
    if max_records is None:
        return EventReader._ITER_BATCH * 16
    if max_records < 1:
        raise ValueError("max_records must be at least 1")
    return max_records


def close_all(closers: Sequence[Callable[[], Any]]) -> None:
    """Call every closer, ignoring errors (cleanup paths)."""
    for c in closers:
        try:
            c()
        except Exception:
            pass
