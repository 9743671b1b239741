"""BPF ring buffers: read ``BPF_MAP_TYPE_RINGBUF``, write ``BPF_MAP_TYPE_USER_RINGBUF``.

:class:`Reader` consumes what BPF programs emit with ``bpf_ringbuf_output``
or ``bpf_ringbuf_reserve``/``submit``::

    with ebpf.ringbuf.Reader(coll.maps["events"]) as rd:
        for record in rd:                 # blocks; ends when rd is closed
            handle(record.raw_sample)

    rec = rd.read(timeout=1.0)            # TimeoutError after 1 s
    batch = rd.read_batch(1000)           # 1..1000 records in one call
    samples = rd.read_samples()           # only the bytes: the fastest way
    rest = rd.flush()                     # what is there, without waiting

    async for record in rd: ...           # asyncio, through loop.add_reader

The reader maps the ring into the process (consumer page read-write, then
the producer page and the data area, mapped twice by the kernel so that no
record wraps) and walks it in Python: no callback per event.  Records of
equal length -- the usual fixed-size event struct -- are cut out many at a
time with one precompiled ``struct`` unpack.  Discarded samples are skipped;
a sample still being written (busy) ends the batch.  ``bench/ringbuf.py``
measures this against libbpf's ``ring_buffer__consume``.

On architectures whose memory model is weaker than x86-64's (loads from the
ring could be reordered without the barriers Python cannot issue) the reader
consumes through libbpf's ``ring_buffer__consume`` instead, one callback per
record (``backend="libbpf"``; 5-10x slower, but ordered correctly).

:class:`Writer` is the other direction: user space produces samples that a
BPF program consumes with ``bpf_user_ringbuf_drain``.

Thread-safety: a reader may be used from several threads (each record is
returned once, the order between threads is unspecified); ``close()`` may be
called from any thread and wakes blocked reads.  At most one coroutine may
wait on a reader at a time.  A writer is for one producer thread at a time
(it takes a lock per call).
"""

from __future__ import annotations

import functools
import itertools
import mmap
import os
import platform
import select
import struct
import threading
import time
from typing import Any, Callable, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from . import _libbpf
from ._epoll import EventReader, Poller, close_all
from ._handle import Handle
from ._marshal import SampleDecoder, value_codec
from .errors import ClosedError, InvalidObjectError, MarshalError
from .maps import Map
from .types import MapType

__all__ = ["Reader", "Record", "Writer"]

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER_SIZE = 8  # struct bpf_ringbuf_hdr: u32 len (+ busy/discard bits), u32 pg_off
_LEN_MASK = DISCARD_BIT - 1

_U32 = struct.Struct("=I")
_HDR = struct.Struct("=II")

# x86-64 and s390x never reorder loads with loads nor stores with stores,
# which is all the ring protocol needs from a reader that cannot fence.
_STRONG_ORDER = platform.machine() in ("x86_64", "AMD64", "s390x", "i686", "i386")

# Most records cut out per struct unpack (a power of two; see _uniform).
_MAX_RUN = 1024


class Record(NamedTuple):
    """One sample from a ring buffer (a named tuple).

    ``raw_sample`` is the bytes the program submitted; ``remaining`` is how
    many bytes were left in the ring after this record (cilium's
    ``Record.Remaining``; 0 with the libbpf backend); ``value`` is the
    sample decoded as the reader's BTF ``value_type`` (None without one, or
    when the sample is shorter than the type); ``ring`` is the index of the
    map in the reader's :attr:`Reader.maps` the sample came from.
    """

    raw_sample: bytes
    remaining: int = 0
    value: Any = None
    ring: int = 0


# Builds a Record from a (raw_sample, remaining, value, ring) tuple in C:
# no Python frame per record (see bench/ringbuf.py).
_new = tuple.__new__


@functools.lru_cache(maxsize=64)  # a 1024-record Struct is ~100 KB
def _uniform(length: int, stride: int, count: int) -> struct.Struct:
    """Unpacks ``count`` consecutive records of one ``length``: yields
    (len, sample) pairs, so a busy/discarded/different record is seen."""
    return struct.Struct("=" + f"I4x{length}s{stride - HEADER_SIZE - length}x" * count)


def _first_mismatch(lens: Sequence[int], length: int) -> int:
    for i, x in enumerate(lens):
        if x != length:
            return i
    return len(lens)


def _check_map(m: Any, want: MapType, what: str) -> int:
    """The ring size of ``m`` after checking it is a usable ``want`` map."""
    if not isinstance(m, Map):
        raise TypeError(f"{what} needs an ebpf.Map, not {type(m).__name__}")
    if m.closed:
        raise ClosedError("map")
    if m.type != want:
        t = m.type.name if isinstance(m.type, MapType) else m.type
        hint = ""
        if want == MapType.RINGBUF and m.type == MapType.USER_RINGBUF:
            hint = " (user ring buffers are written with ebpf.ringbuf.Writer)"
        elif want == MapType.RINGBUF and m.type == MapType.PERF_EVENT_ARRAY:
            hint = " (perf event arrays are read with ebpf.perf.Reader)"
        elif want == MapType.USER_RINGBUF and m.type == MapType.RINGBUF:
            hint = " (ring buffers are read with ebpf.ringbuf.Reader)"
        raise InvalidObjectError(f"{what}: map {m.name!r} is a {t} map, not {want.name}{hint}")
    size = int(m.max_entries)
    page = mmap.PAGESIZE
    if size <= 0 or size & (size - 1) or size % page:
        raise InvalidObjectError(
            f"{what}: map {m.name!r} has max_entries {size}: a ring size must be a power of two "
            f"and a multiple of the page size ({page})"
        )
    return size


def _mmap(fd: int, length: int, prot: int, offset: int, what: str) -> mmap.mmap:
    try:
        return mmap.mmap(fd, length, mmap.MAP_SHARED, prot, offset=offset)
    except OSError as exc:
        raise _libbpf.errno_error(exc.errno or 22, f"{what}: mmap") from None


class _MmapRing:
    """One RINGBUF map mapped into the process and walked in Python."""

    def __init__(self, fd: int, size: int, index: int, decoders: Optional[SampleDecoder]) -> None:
        page = mmap.PAGESIZE
        self.page = page
        self.mask = size - 1
        self.size = size
        self.index = index
        self.decoders = decoders
        self._cons_mm = _mmap(fd, page, mmap.PROT_READ | mmap.PROT_WRITE, 0, "ring buffer consumer page")
        try:
            self._data_mm = _mmap(fd, page + 2 * size, mmap.PROT_READ, page, "ring buffer data")
        except BaseException:
            self._cons_mm.close()
            raise
        # An aligned 8-byte store through a 'Q' view is one plain store: on
        # the orderings this backend runs on, that is a release store.
        self.cons_q = memoryview(self._cons_mm).cast("Q")
        self.data = memoryview(self._data_mm)
        self.prod_q = self.data.cast("Q")  # [0]: producer position

    def available(self) -> int:
        return self.prod_q[0] - self.cons_q[0]

    def drain(self, out: List[Any], limit: int, raw: bool) -> int:
        """Append chunks of up to ``limit`` records to ``out`` (see
        EventReader._drain); return how many records."""
        # Both positions are re-read on every call: the producer moves on
        # while we parse, and another reader of the same map (one after the
        # other, say) may have consumed since.
        cons = self.cons_q[0]
        prod = self.prod_q[0]
        if cons >= prod:
            return 0
        data, mask, page = self.data, self.mask, self.page
        hdr = _U32.unpack_from
        dec = self.decoders
        ring = self.index
        rep = itertools.repeat
        singles: List[Any] = []  # records of no run, gathered into one chunk
        n = 0
        while cons < prod and n < limit:
            off = page + (cons & mask)
            h = hdr(data, off)[0]
            if h & BUSY_BIT:
                break  # not committed yet: try again on the next call
            length = h & _LEN_MASK
            stride = (length + HEADER_SIZE + 7) & ~7
            if h & DISCARD_BIT:
                cons += stride
                continue
            run = min((prod - cons) // stride, limit - n, _MAX_RUN)
            if run >= 4 and hdr(data, off + stride)[0] == length:
                # A run of equal-length records: cut up to `run` of them out
                # in one unpack (power-of-two counts keep the cache small).
                run = 1 << (run.bit_length() - 1)
                t = _uniform(length, stride, run).unpack_from(data, off)
                lens = t[0::2]
                if lens.count(length) == run:
                    samples = t[1::2]
                else:  # busy, discarded or another length: stop before it
                    run = _first_mismatch(lens, length)
                    samples = t[1 : 2 * run : 2]
                if singles:
                    out.append([r.raw_sample for r in singles] if raw else singles)
                    singles = []
                end = cons + run * stride
                if raw:
                    out.append(samples)
                else:
                    # Lazy: records are built when the caller takes them.
                    remaining = range(prod - cons - stride, prod - end - stride, -stride)
                    values = (dec.many(length, samples, data, off + HEADER_SIZE, stride) if dec is not None
                              else rep(None))
                    out.append(map(_new, rep(Record), zip(samples, remaining, values, rep(ring))))
                cons = end
                n += run
                continue
            sample = data[off + HEADER_SIZE : off + HEADER_SIZE + length].tobytes()
            cons += stride
            singles.append(Record(sample, prod - cons, dec.one(sample) if dec is not None and not raw else None, ring))
            n += 1
        if singles:
            out.append([r.raw_sample for r in singles] if raw else singles)
        if n or cons != self.cons_q[0]:
            self.cons_q[0] = cons
        return n

    def close(self) -> None:
        for v in (self.cons_q, self.prod_q, self.data):
            v.release()
        self._data_mm.close()
        self._cons_mm.close()


class _LibbpfRing:
    """One RINGBUF map consumed through libbpf's ring_buffer__consume."""

    def __init__(self, fd: int, size: int, index: int, decoders: Optional[SampleDecoder]) -> None:
        self.index = index
        self.decoders = decoders
        self._out: List[Any] = []
        self._left = 0
        self._error: Optional[BaseException] = None
        string_at = _libbpf.string_at

        def on_sample(_ctx: Any, data: int, size: int) -> int:
            try:
                sample = string_at(data, size)
                value = decoders.one(sample) if decoders is not None else None
                self._out.append(Record(sample, 0, value, index))
            except BaseException as exc:  # never let it cross into C
                self._error = exc
                return -1
            self._left -= 1
            # A negative return stops libbpf after this sample, which it has
            # already consumed: the record is kept.
            return -1 if self._left <= 0 else 0

        self._rb, self._cb = _libbpf.ring_buffer_new(fd, on_sample)

    def available(self) -> int:
        return 0

    def drain(self, out: List[Any], limit: int, raw: bool) -> int:
        got: List[Any] = []
        self._out, self._left, self._error = got, limit, None
        _libbpf.ring_buffer_consume(self._rb)
        self._out = []
        if self._error is not None:
            raise self._error
        if got:
            out.append([r.raw_sample for r in got] if raw else got)
        return len(got)

    def close(self) -> None:
        rb, self._rb = self._rb, None
        if rb:
            _libbpf.ring_buffer_free(rb)


class Reader(EventReader[Record]):
    """Reads samples from one or more ``BPF_MAP_TYPE_RINGBUF`` maps.

    ``Reader(map, *more_maps, value_type=None)``: with several maps, one
    wait covers them all and :attr:`Record.ring` says which map a record
    came from; records of one map stay in order.  ``value_type`` (a BTF
    type, e.g. ``spec.types.type_by_name("event")``, or a codec) decodes
    every sample into :attr:`Record.value`; by default the map's own BTF
    value type is used when it has one.

    The reader holds its own reference to each map (closing the ``Map``
    does not stop it) and must be closed: ``close()``, a ``with`` block, or
    at the latest when it is garbage collected.  See the module docstring
    for reading methods and thread-safety.
    """

    _kind = "ring buffer reader"

    def __init__(self, map: Any, *more_maps: Any, value_type: Any = None, backend: Optional[str] = None) -> None:
        self._init_state()
        self._rings: List[Any] = []
        self._fds: List[int] = []
        maps = (map,) + more_maps
        sizes = [_check_map(m, MapType.RINGBUF, "ringbuf.Reader") for m in maps]
        if backend is None:
            backend = "mmap" if _STRONG_ORDER else "libbpf"
        if backend not in ("mmap", "libbpf"):
            raise ValueError(f"backend must be 'mmap' or 'libbpf', not {backend!r}")
        ring_cls = _MmapRing if backend == "mmap" else _LibbpfRing
        self.backend = backend
        self._maps = maps
        self._next = 0  # ring to drain first (rotates, so none starves)
        self._poller = Poller()
        try:
            for i, (m, size) in enumerate(zip(maps, sizes)):
                # Our own fd: epoll and the mapping outlive a closed Map.
                fd = m._dup()
                self._fds.append(fd)
                self._poller.add(fd)
                codec = value_codec(value_type if value_type is not None else m.spec.value)
                self._rings.append(ring_cls(fd, size, i, SampleDecoder(codec) if codec is not None else None))
        except BaseException:
            self.close()
            raise

    @property
    def maps(self) -> Tuple[Any, ...]:
        """The maps read, in the order of :attr:`Record.ring`."""
        return self._maps

    @property
    def buffer_size(self) -> int:
        """Size in bytes of the (first) ring."""
        return int(self._maps[0].max_entries)

    def available_bytes(self) -> int:
        """Bytes written to the rings and not consumed yet (records still
        buffered for :meth:`read` are not counted)."""
        with self._lock:
            if self._closed:
                raise ClosedError(self._kind)
            return sum(r.available() for r in self._rings)

    def _drain(self, out: List[Any], limit: int, raw: bool) -> int:
        rings = self._rings
        if len(rings) == 1:
            return int(rings[0].drain(out, limit, raw))
        n = 0
        k = len(rings)
        start = self._next
        self._next = (start + 1) % k
        for i in range(k):
            n += rings[(start + i) % k].drain(out, limit - n, raw)
            if n >= limit:
                break
        return n

    def _free(self, _close: Callable[[int], None] = os.close) -> None:
        rings, self._rings = self._rings, []
        fds, self._fds = self._fds, []
        closers: List[Callable[[], Any]] = [r.close for r in rings]
        if self._poller is not None:
            closers.append(self._poller.close)
        closers.extend(functools.partial(_close, fd) for fd in fds)
        close_all(closers)

    def __repr__(self) -> str:
        names = ", ".join(repr(m.name) for m in self._maps)
        return f"<ringbuf.Reader {names} {'closed' if self._closed else self.backend}>"


class Writer(Handle):
    """Writes samples into a ``BPF_MAP_TYPE_USER_RINGBUF`` map, for BPF
    programs that consume them with ``bpf_user_ringbuf_drain()``.

    ``write(sample)`` adds one sample; ``write_batch(samples)`` adds many
    and makes them visible to the kernel at once.  When the ring is full
    they wait up to ``timeout`` seconds (0: not at all, None: forever) for a
    program to drain it.  The ring is mapped into the process (libbpf's
    ``user_ring_buffer__*`` would cost three C calls per sample).  One
    writer per map: the kernel side does not arbitrate between producers.
    """

    _kind = "user ring buffer writer"

    def __init__(self, map: Any) -> None:
        self._lock = threading.Lock()
        size = _check_map(map, MapType.USER_RINGBUF, "ringbuf.Writer")
        self._map = map
        self.size = size
        self._mask = size - 1
        page = self._page = mmap.PAGESIZE
        self._ep: Optional[Any] = None
        self._cons_mm = self._data_mm = None
        self._views: List[memoryview] = []
        self._fd = map._dup()
        Handle.__init__(self)
        try:
            # The kernel owns the consumer page: read-only for us.
            self._cons_mm = _mmap(self._fd, page, mmap.PROT_READ, 0, "user ring buffer consumer page")
            self._data_mm = _mmap(self._fd, page + 2 * size, mmap.PROT_READ | mmap.PROT_WRITE, page,
                                  "user ring buffer data")
            self._cons_q = memoryview(self._cons_mm).cast("Q")
            self._data = memoryview(self._data_mm)
            self._prod_q = self._data.cast("Q")
            self._views = [self._cons_q, self._prod_q, self._data]
            self._prod = self._prod_q[0]
            self._ep = select.epoll()
            self._ep.register(self._fd, select.EPOLLOUT)
        except BaseException:
            self.close()
            raise

    @property
    def map(self) -> Any:
        return self._map

    def free_bytes(self) -> int:
        """Bytes the producer may still use (headers included)."""
        with self._lock:  # close() unmaps under the same lock
            self._check_open()
            return self.size - (self._prod - self._cons_q[0])

    def _record_size(self, n: int) -> int:
        total = (n + HEADER_SIZE + 7) & ~7
        if total > self.size or n > _LEN_MASK:
            raise MarshalError(f"user ring buffer {self._map.name}: a {n}-byte sample cannot fit a "
                               f"{self.size}-byte ring")
        return total

    def _wait_room(self, need: int, deadline: Optional[float]) -> bool:
        """Wait until ``need`` bytes are free; False at the deadline."""
        while self.size - (self._prod - self._cons_q[0]) < need:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            # The kernel signals EPOLLOUT when a drain freed room; poll in
            # slices too, since a drain with BPF_RB_NO_WAKEUP signals nothing.
            self._ep.poll(0.05 if left is None else min(left, 0.05))  # type: ignore[union-attr]
            if self._closed:
                raise ClosedError(self._kind)
        return True

    def _put(self, sample: bytes) -> None:
        off = self._page + (self._prod & self._mask)
        n = len(sample)
        _HDR.pack_into(self._data, off, n, 0)
        self._data[off + HEADER_SIZE : off + HEADER_SIZE + n] = sample
        self._prod += (n + HEADER_SIZE + 7) & ~7

    def write(self, sample: Any, timeout: Optional[float] = 0) -> None:
        """Submit one sample (bytes-like).  Raises :class:`TimeoutError`
        when no room appeared within ``timeout`` seconds."""
        self.write_batch([sample], timeout=timeout, _strict=True)

    def write_batch(self, samples: Iterable[Any], timeout: Optional[float] = 0, *, _strict: bool = False) -> int:
        """Submit samples in order; the kernel sees each group that fits at
        once (one producer-position update).  Returns how many were written:
        fewer than given when the ring stayed full for ``timeout`` seconds."""
        blobs = [bytes(s) for s in samples]
        with self._lock:
            self._check_open()
            for b in blobs:
                self._record_size(len(b))
            deadline = None if timeout is None else time.monotonic() + timeout
            done = 0
            while done < len(blobs):
                free = self.size - (self._prod - self._cons_q[0])
                start = done
                while done < len(blobs):
                    need = (len(blobs[done]) + HEADER_SIZE + 7) & ~7
                    if need > free:
                        break
                    self._put(blobs[done])
                    free -= need
                    done += 1
                if done > start:
                    # Publish: samples and headers were stored before this
                    # position, and stores are not reordered with stores.
                    self._prod_q[0] = self._prod
                if done < len(blobs):
                    need = (len(blobs[done]) + HEADER_SIZE + 7) & ~7
                    if not self._wait_room(need, deadline):
                        if _strict:
                            raise TimeoutError(
                                f"user ring buffer {self._map.name}: no room for a {len(blobs[done])}-byte sample"
                                + (f" within {timeout} s" if timeout else " (ring full)")
                            )
                        break
            return done

    def close(self) -> None:
        """Unmap the ring and close the writer's fds (samples already
        written stay in the ring for the kernel).  A write waiting for room
        in another thread raises :class:`~ebpf.errors.ClosedError`."""
        Handle.close(self)

    def _release(self, _close: Callable[[int], None] = os.close) -> None:
        # closed is set already: a waiting write notices within 50 ms and
        # lets go of the lock.
        with self._lock:
            for v in self._views:
                v.release()
            self._views = []
            for mm in (self._data_mm, self._cons_mm):
                if mm is not None:
                    mm.close()
            if self._ep is not None:
                self._ep.close()
            fd, self._fd = self._fd, -1
            _close(fd)

    def __repr__(self) -> str:
        return f"<ringbuf.Writer {self._map.name!r} {'closed' if self._closed else f'size={self.size}'}>"
