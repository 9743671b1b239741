"""Perf event buffers: read what BPF programs emit with ``bpf_perf_event_output``.

:class:`Reader` opens one ``PERF_COUNT_SW_BPF_OUTPUT`` perf event per CPU,
maps its ring (one metadata page plus a power of two of data pages) and
stores the event fds in the ``BPF_MAP_TYPE_PERF_EVENT_ARRAY`` at each CPU's
index, so that ``bpf_perf_event_output(ctx, &map, BPF_F_CURRENT_CPU, ...)``
reaches it::

    with ebpf.perf.Reader(coll.maps["events"], per_cpu_buffer=64 * 1024) as rd:
        for record in rd:
            if record.lost_samples:
                print("lost", record.lost_samples, "on CPU", record.cpu)
            else:
                handle(record.cpu, record.raw_sample)

Records carry the CPU; when a ring was full the kernel drops samples and
later reports how many, which arrives as a record with ``lost_samples`` set
and an empty ``raw_sample`` (as in cilium/ebpf); :attr:`Reader.lost_samples`
keeps the running total.  Records of one CPU come in order; records of
different CPUs are not ordered with respect to each other.

As with perf itself, ``raw_sample`` is padded by the kernel so that the
sample plus its 4-byte size is a multiple of 8: it may carry up to 7 bytes
after what the program wrote (a 16-byte sample reads back as 20 bytes).  A
``value_type`` decodes the leading bytes and ignores the padding.

Reading, timeouts, ``close()``, ``flush()``, iteration and asyncio behave as
for :class:`ebpf.ringbuf.Reader` (same thread-safety rules).  The rings are
walked in Python through the mapping, like the ring buffer reader.

``Reader(..., overwritable=True)`` keeps the newest records instead: the
kernel writes each ring backwards and overwrites the oldest records when it
is full; the reader is read while paused, newest first (see
:class:`Reader`).
"""

from __future__ import annotations

import functools
import itertools
import mmap
import os
import struct
import sys
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from . import _libbpf, _syscall
from ._epoll import EventReader, Poller, close_all
from ._marshal import SampleDecoder, value_codec
from ._syscall import (
    PERF_COUNT_SW_BPF_OUTPUT,
    PERF_FLAG_FD_CLOEXEC,
    PERF_RECORD_LOST,
    PERF_RECORD_SAMPLE,
    PERF_SAMPLE_RAW,
    PERF_TYPE_SOFTWARE,
)
from .errors import ClosedError, EBPFError, InvalidObjectError
from .maps import Map
from .types import MapType

__all__ = ["Reader", "Record"]

# struct perf_event_mmap_page: where the ring's positions live.
_DATA_HEAD = 1024
_DATA_TAIL = 1032
_DATA_OFFSET = 1040
_DATA_SIZE = 1048

_ENODEV = 19
_EBUSY = 16
_ORDER = sys.byteorder

_HEADER = struct.Struct("=IHH")  # perf_event_header: type, misc, size
_LOST = struct.Struct("=8xQQ")  # header, id, lost
_SAMPLE_HEAD = struct.Struct("=I2xHI")  # type, size, raw size
_MAX_RUN = 1024
_U64 = (1 << 64) - 1
# enum perf_event_type, PERF_RECORD_MMAP .. PERF_RECORD_AUX_OUTPUT_HW_ID.
_KNOWN_RECORDS = frozenset(range(1, 22))


class Record(NamedTuple):
    """One record of a perf buffer (a named tuple).

    ``cpu`` is the CPU whose ring it came from.  A sample has
    ``raw_sample`` (padded, see the module docstring), ``value`` when the
    reader decodes, and ``lost_samples == 0``; a loss report has
    ``lost_samples > 0`` and ``raw_sample == b""``.  ``remaining`` is how
    many bytes were left in that CPU's ring after this record.
    """

    cpu: int
    raw_sample: bytes
    lost_samples: int = 0
    remaining: int = 0
    value: Any = None


_new = tuple.__new__  # a Record from a tuple of its fields, in C


@functools.lru_cache(maxsize=64)  # a 1024-record Struct is ~100 KB
def _uniform(size: int, count: int) -> struct.Struct:
    """``count`` consecutive samples of one record ``size``: yields
    (type, size, raw_size, sample) per record."""
    return struct.Struct("=" + f"I2xHI{size - 12}s" * count)


def ring_bytes(per_cpu_buffer: int) -> int:
    """Data bytes of a per-CPU ring for ``per_cpu_buffer`` (rounded up to a
    power of two number of pages, as perf requires)."""
    page = mmap.PAGESIZE
    pages = max(1, -(-per_cpu_buffer // page))
    return (1 << (pages - 1).bit_length()) * page


class _CPURing:
    """One CPU's perf event and its mapped ring.

    ``overwritable``: the kernel writes backwards into a ring mapped
    read-only, overwriting the oldest records when it is full (perf's
    overwrite mode, cilium's ``Overwritable``).  Such a ring has no tail the
    reader moves: each time the unread window is used up, the window
    becomes what was written since the last look (at most the ring's size),
    read from the newest record to the oldest.
    """

    def __init__(self, cpu: int, data_size: int, watermark: int, wakeup_events: int, decoders: Optional[SampleDecoder],
                 overwritable: bool = False) -> None:
        attr = _syscall.perf_event_attr(
            type=PERF_TYPE_SOFTWARE,
            config=PERF_COUNT_SW_BPF_OUTPUT,
            sample_period=1,
            sample_type=PERF_SAMPLE_RAW,
        )
        if watermark:
            attr.watermark = 1
            attr.wakeup_watermark = watermark
        else:
            attr.wakeup_events = wakeup_events or 1
        attr.write_backward = int(overwritable)
        self.cpu = cpu
        self.decoders = decoders
        self.overwritable = overwritable
        self.fd = _syscall.perf_event_open(attr, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC,
                                           what=f"perf_event_open(BPF_OUTPUT, cpu {cpu})")
        # A mapping without PROT_WRITE is what puts the ring in overwrite mode.
        prot = mmap.PROT_READ if overwritable else mmap.PROT_READ | mmap.PROT_WRITE
        try:
            self._mm = mmap.mmap(self.fd, mmap.PAGESIZE + data_size, mmap.MAP_SHARED, prot)
        except OSError as exc:
            os.close(self.fd)
            raise _libbpf.errno_error(exc.errno or 22, f"mmap of the perf ring of CPU {cpu}") from None
        self._mv = memoryview(self._mm)
        self._q = self._mv.cast("Q")
        meta = self._q
        self.offset = meta[_DATA_OFFSET // 8] or mmap.PAGESIZE
        self.size = meta[_DATA_SIZE // 8] or data_size
        self.mask = self.size - 1
        # Overwritable rings: the unread window [read, end) of positions,
        # and head, where the kernel had written last time we looked.
        self.head = self.read = self.end = meta[_DATA_HEAD // 8]

    def available(self) -> int:
        if self.overwritable:
            new = (self.head - self._q[_DATA_HEAD // 8]) & _U64
            return min(new + ((self.end - self.read) & _U64), self.size)
        return self._q[_DATA_HEAD // 8] - self._q[_DATA_TAIL // 8]

    def drain(self, out: List[Any], limit: int, raw: bool, lost: List[int]) -> int:
        if self.overwritable:
            return self._drain_backward(out, limit, raw, lost)
        tail = self._q[_DATA_TAIL // 8]  # re-read: another reader may have consumed
        head = self._q[_DATA_HEAD // 8]
        if tail >= head:
            return 0
        n, used = self._parse_window(tail, head - tail, out, limit, raw, lost)
        if used:
            self._q[_DATA_TAIL // 8] = tail + used  # aligned 8-byte store: release on x86-64
        return n

    def _drain_backward(self, out: List[Any], limit: int, raw: bool, lost: List[int]) -> int:
        if self.read == self.end:
            # The last window is used up: the next one is everything the
            # kernel wrote (backwards, from the new head) since, unless it
            # wrapped, in which case the newest ring's worth.
            head = self._q[_DATA_HEAD // 8]
            written = (self.head - head) & _U64
            if not written:
                return 0
            self.end = (head + min(written, self.size)) & _U64
            self.read = self.head = head
        left = (self.end - self.read) & _U64
        n, used = self._parse_window(self.read, left, out, limit, raw, lost)
        if n < limit:
            used = left  # the rest is no whole record: the oldest, partly overwritten, or none
        self.read = (self.read + used) & _U64
        return n

    def _parse_window(self, pos: int, length: int, out: List[Any], limit: int, raw: bool,
                      lost: List[int]) -> Tuple[int, int]:
        """Parse up to ``limit`` records of the ``length`` bytes at ring
        position ``pos``; returns (records, bytes used)."""
        # A bounded window (a record is under 64 KiB), so a call that wants
        # few records does not touch a whole large ring.
        window = min(length, max(1 << 17, limit * 64))
        start = self.offset + (pos & self.mask)
        stop = start + window
        end_of_ring = self.offset + self.size
        if stop <= end_of_ring:
            buf: Any = self._mv[start:stop]
        else:
            # The window wraps (perf maps the ring once, unlike BPF ring
            # buffers): parse a contiguous copy.
            buf = self._mm[start:end_of_ring] + self._mm[self.offset : self.offset + (stop - end_of_ring)]
        try:
            return self._parse(buf, out, limit, raw, lost)
        finally:
            if type(buf) is memoryview:
                buf.release()

    def _parse(self, buf: Any, out: List[Any], limit: int, raw: bool, lost: List[int]) -> Tuple[int, int]:
        avail = len(buf)
        cpu, dec, backward = self.cpu, self.decoders, self.overwritable
        rep = itertools.repeat
        head_of = _HEADER.unpack_from
        singles: List[Any] = []
        pos = 0
        n = 0
        while pos + 8 <= avail and n < limit:
            rtype, _misc, size = head_of(buf, pos)
            if size < 8 or pos + size > avail:
                break  # cannot happen with a sane kernel: stop rather than misparse
            if rtype == PERF_RECORD_SAMPLE:
                run = min((avail - pos) // size, limit - n, _MAX_RUN)
                if run >= 4 and head_of(buf, pos + size) == (rtype, _misc, size):
                    run = 1 << (run.bit_length() - 1)
                    t = _uniform(size, run).unpack_from(buf, pos)
                    if t[0::4].count(PERF_RECORD_SAMPLE) != run or t[1::4].count(size) != run:
                        run = _first_other(t, size)
                    samples = t[3 : 4 * run : 4]
                    if singles:
                        out.append([r.raw_sample for r in singles] if raw else singles)
                        singles = []
                    if raw:
                        out.append(samples)
                    else:
                        left = avail - pos
                        remaining: Any = range(left - size, left - size * (run + 1), -size) if not backward \
                            else rep(-1)
                        values = dec.many(size - 12, samples, buf, pos + 12, size) if dec is not None else rep(None)
                        out.append(map(_new, rep(Record), zip(rep(cpu), samples, rep(0), remaining, values)))
                    pos += run * size
                    n += run
                    continue
                raw_size = _SAMPLE_HEAD.unpack_from(buf, pos)[2]
                if raw_size + 12 > size:
                    break  # not a sample: an overwritten record of a backward ring
                sample = bytes(buf[pos + 12 : pos + 12 + raw_size])
                pos += size
                value = dec.one(sample) if dec is not None and not raw else None
                singles.append(Record(cpu, sample, 0, -1 if backward else avail - pos, value))
                n += 1
            elif rtype == PERF_RECORD_LOST:
                count = _LOST.unpack_from(buf, pos)[1]
                pos += size
                lost[0] += count
                if not raw:  # read_samples() returns samples only; the total still counts
                    singles.append(Record(cpu, b"", count, -1 if backward else avail - pos))
                    n += 1
            elif backward and rtype not in _KNOWN_RECORDS:
                break  # bytes of a record the kernel overwrote, not a header
            else:
                pos += size  # other record kinds carry nothing for us
        if singles:
            out.append([r.raw_sample for r in singles] if raw else singles)
        return n, pos

    def close(self, _close: Callable[[int], None] = os.close) -> None:
        self._q.release()
        self._mv.release()
        self._mm.close()
        fd, self.fd = self.fd, -1
        if fd >= 0:
            _close(fd)


def _first_other(t: Tuple[Any, ...], size: int) -> int:
    for i in range(0, len(t), 4):
        if t[i] != PERF_RECORD_SAMPLE or t[i + 1] != size:
            return i // 4
    return len(t) // 4


class Reader(EventReader[Record]):
    """Reads a ``BPF_MAP_TYPE_PERF_EVENT_ARRAY``: one ring per CPU.

    ``per_cpu_buffer`` is the size of each CPU's ring in bytes, rounded up
    to a power of two number of pages.  ``watermark`` (bytes) or
    ``wakeup_events`` (samples) say how much a ring must hold before a
    waiting read is woken; the default wakes on every sample.  ``flush()``
    returns what is there regardless.  ``value_type`` decodes samples as in
    :class:`ebpf.ringbuf.Reader`.

    The reader keeps its own reference to the map, removes its event fds
    from the map when closed, and must be closed (``close()``, ``with``, or
    at the latest when garbage collected).  CPUs that are offline are
    skipped.  :meth:`pause` and :meth:`resume` take the fds out of the map
    and put them back (programs' outputs fail with ENOENT meanwhile).

    ``overwritable=True`` (cilium's ``ReaderOptions.Overwritable``) makes
    each ring a flight recorder: when it is full the kernel overwrites the
    oldest records instead of dropping new ones (no ``lost_samples`` then).
    Such a reader is read while paused (else :class:`~ebpf.errors.EBPFError`
    with ``EBUSY``): each CPU's records come newest first, each once, with
    ``remaining == -1``; after a :meth:`resume`, the next reads while paused
    return what was written since (the newest ring's worth of it)::

        rd = perf.Reader(m, 4096, overwritable=True)
        ...                       # programs write; old records are overwritten
        rd.pause()
        newest_first = rd.flush()
        rd.resume()
    """

    _kind = "perf reader"

    def __init__(
        self,
        map: Any,
        per_cpu_buffer: int,
        *,
        watermark: int = 0,
        wakeup_events: int = 0,
        value_type: Any = None,
        overwritable: bool = False,
    ) -> None:
        self._init_state()
        self._rings: List[_CPURing] = []
        self._map_fd = -1
        self._overwritable = bool(overwritable)
        self._paused = False
        # Bound now: _free() runs from the finalizer too, when module
        # globals may already be gone.
        self._delete_elem = _libbpf.map_elem_calls()[3]
        if not isinstance(map, Map):
            raise TypeError(f"perf.Reader needs an ebpf.Map, not {type(map).__name__}")
        if map.closed:
            raise ClosedError("map")
        if map.type != MapType.PERF_EVENT_ARRAY:
            t = map.type.name if isinstance(map.type, MapType) else map.type
            hint = " (ring buffers are read with ebpf.ringbuf.Reader)" if map.type == MapType.RINGBUF else ""
            raise InvalidObjectError(f"perf.Reader: map {map.name!r} is a {t} map, not PERF_EVENT_ARRAY{hint}")
        if not isinstance(per_cpu_buffer, int) or per_cpu_buffer < 1:
            raise ValueError(f"per_cpu_buffer must be a positive number of bytes, not {per_cpu_buffer!r}")
        if watermark and wakeup_events:
            raise ValueError("give watermark or wakeup_events, not both")
        if watermark < 0 or wakeup_events < 0:
            raise ValueError("watermark and wakeup_events cannot be negative")
        data_size = ring_bytes(per_cpu_buffer)
        if watermark >= data_size:
            raise ValueError(f"watermark ({watermark}) must be smaller than the per-CPU buffer ({data_size} bytes)")
        codec = value_codec(value_type)
        decoders = SampleDecoder(codec) if codec is not None else None
        self._map = map
        self.per_cpu_buffer = data_size
        self._lost = [0]
        self._fd_cpu: Dict[int, int] = {}
        self._next = 0
        self._poller = Poller()
        try:
            # Closing the last fd of the array's file removes our entries:
            # keep one of our own.
            self._map_fd = map._dup()
            # The kernel's size: a spec may say 0 ("one slot per CPU").
            ncpus = min(map.info().max_entries, _libbpf.num_possible_cpus())
            for cpu in range(ncpus):
                try:
                    ring = _CPURing(cpu, data_size, watermark, wakeup_events, decoders, self._overwritable)
                except EBPFError as exc:
                    if exc.errno == _ENODEV:
                        continue  # offline CPU
                    raise
                self._rings.append(ring)
                self._poller.add(ring.fd)
                self._fd_cpu[ring.fd] = cpu
            if not self._rings:
                raise EBPFError(f"perf.Reader: no CPU ring could be opened for map {map.name!r}")
            self.resume()
        except BaseException:
            self.close()
            raise

    @property
    def map(self) -> Any:
        return self._map

    @property
    def cpus(self) -> List[int]:
        """The CPUs with a ring (offline CPUs have none)."""
        return [r.cpu for r in self._rings]

    @property
    def overwritable(self) -> bool:
        """Whether the rings overwrite their oldest records (see the class docstring)."""
        return self._overwritable

    @property
    def paused(self) -> bool:
        """Whether :meth:`pause` took the event fds out of the map."""
        return self._paused

    @property
    def lost_samples(self) -> int:
        """Samples the kernel reported lost so far (all CPUs)."""
        return self._lost[0]

    def available_bytes(self) -> int:
        """Bytes written to the rings and not consumed yet."""
        with self._lock:
            if self._closed:
                raise ClosedError(self._kind)
            return sum(r.available() for r in self._rings)

    def _set_entries(self, install: bool) -> None:
        with self._lock:
            if self._closed:
                raise ClosedError(self._kind)
            _, _, update, delete, _, _ = _libbpf.map_elem_calls()
            for r in self._rings:
                key = r.cpu.to_bytes(4, _ORDER)
                if install:
                    ret = update(self._map_fd, key, r.fd.to_bytes(4, _ORDER), _libbpf.u64(0))
                    if ret < 0:
                        what = f"perf.Reader: storing the event fd of CPU {r.cpu} in map {self._map.name}"
                        raise _libbpf.errno_error(-ret, what)
                else:
                    ret = delete(self._map_fd, key)
                    if ret < 0 and ret != -2:
                        what = f"perf.Reader: removing the event fd of CPU {r.cpu} from map {self._map.name}"
                        raise _libbpf.errno_error(-ret, what)
            self._paused = not install

    def pause(self) -> None:
        """Stop accepting samples: the event fds leave the map."""
        self._set_entries(False)

    def resume(self) -> None:
        """Accept samples again (the reader starts resumed)."""
        self._set_entries(True)

    def _drain(self, out: List[Any], limit: int, raw: bool) -> int:
        if self._overwritable and not self._paused:
            # The kernel may be overwriting what would be read.
            raise EBPFError(f"perf.Reader of map {self._map.name!r}: an overwritable reader is read while paused "
                            "(call pause() first)", _EBUSY)
        rings = self._rings
        k = len(rings)
        start = self._next
        self._next = (start + 1) % k
        n = 0
        for i in range(k):
            n += rings[(start + i) % k].drain(out, limit - n, raw, self._lost)
            if n >= limit:
                break
        return n

    def _free(self, _close: Callable[[int], None] = os.close) -> None:
        rings, self._rings = self._rings, []
        fd, self._map_fd = self._map_fd, -1
        closers: List[Callable[[], Any]] = []
        if fd >= 0:
            delete = self._delete_elem
            # Programs must not keep writing into rings nobody reads.
            closers.extend(functools.partial(delete, fd, r.cpu.to_bytes(4, _ORDER)) for r in rings)
        closers.extend(r.close for r in rings)
        if self._poller is not None:
            closers.append(self._poller.close)
        if fd >= 0:
            closers.append(functools.partial(_close, fd))
        close_all(closers)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._rings)} CPUs x {self.per_cpu_buffer} bytes" + (
            " overwritable" if self._overwritable else "")
        return f"<perf.Reader {self._map.name!r} {state}>"

