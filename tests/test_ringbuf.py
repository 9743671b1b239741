"""Ring buffers on the real kernel (fixtures/ringbuf.bpf.c).

Events are produced in the kernel by a syscall program run with
BPF_PROG_TEST_RUN; event i has seq = start + i and val = seq * MAGIC, so
every test checks exact counts, order and content.  Also: discarded
samples, variable lengths, wraparound, several maps, timeouts, close()
from another thread, the libbpf backend, and user ring buffers drained by
a BPF program.
"""

from __future__ import annotations

import gc
import os
import struct
import threading
import time

import pytest

import ebpf
from ebpf import MapSpec, MapType, ringbuf
from ebpf.errors import ClosedError, EBPFError, InvalidObjectError, MarshalError

from conftest import fixture_path

pytestmark = pytest.mark.kernel

MAGIC = 0x9E3779B97F4A7C15
MASK64 = (1 << 64) - 1
EVENT = struct.Struct("<QQ")
RECORD_BYTES = 24  # 8-byte header + 16-byte event


def event(seq: int) -> bytes:
    return EVENT.pack(seq, (seq * MAGIC) & MASK64)


def seqs(records) -> list:
    return [EVENT.unpack(r.raw_sample)[0] for r in records]


class Fixture:
    """The ringbuf fixture loaded, with a producer helper."""

    def __init__(self, sizes: dict | None = None, **kwargs) -> None:
        self.spec = ebpf.load_collection_spec(fixture_path("ringbuf.o"))
        for name, size in (sizes or {}).items():
            self.spec.maps[name].max_entries = size
        self.coll = ebpf.Collection(self.spec, **kwargs)
        self.maps = self.coll.maps
        self.vars = self.coll.variables
        self._lock = threading.Lock()

    def produce(self, count: int, start: int = 0, mode: int = 0, target: int = 0) -> None:
        with self._lock:  # the arguments are globals: one run at a time
            v = self.vars
            v["count"].set(count)
            v["start"].set(start)
            v["mode"].set(mode)
            v["target"].set(target)
            assert self.coll.programs["produce"].run().retval == 0

    def counter(self, name: str) -> int:
        return self.vars[name].get()

    def close(self) -> None:
        self.coll.close()


@pytest.fixture
def fx():
    f = Fixture()
    try:
        yield f
    finally:
        f.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- reading ------------------------------------------------------------------


def test_counts_order_and_content(fx):
    n = 10000
    with ringbuf.Reader(fx.maps["events"]) as rd:
        fx.produce(n, start=7)
        assert fx.counter("emitted") == n and fx.counter("dropped") == 0
        records = rd.read_batch()
        assert len(records) == n  # 240 KB fit the 1 MiB ring: one call takes all
        assert [r.raw_sample for r in records] == [event(7 + i) for i in range(n)]
        assert all(r.ring == 0 and r.value is None for r in records)
        # remaining counts down to 0 by one record each
        assert [r.remaining for r in records[-3:]] == [2 * RECORD_BYTES, RECORD_BYTES, 0]
        assert records[0].remaining == (n - 1) * RECORD_BYTES
        with pytest.raises(TimeoutError):
            rd.read(timeout=0)


def test_read_read_batch_read_into_and_samples_share_one_stream(fx):
    with ringbuf.Reader(fx.maps["events"]) as rd:
        fx.produce(3000)
        got = [rd.read() for _ in range(5)]  # read() reads ahead; nothing is lost
        got += rd.read_batch(max_records=100)
        out: list = []
        assert rd.read_into(out, max_records=1000) == 1000
        got += out
        samples = rd.read_samples(max_records=500)
        assert samples == [event(i) for i in range(1105, 1605)]
        got += rd.read_batch()
        assert seqs(got) == list(range(1105)) + list(range(1605, 3000))
        assert rd.flush() == []


def test_read_batch_limit_is_exact(fx):
    with ringbuf.Reader(fx.maps["events"]) as rd:
        fx.produce(1000)
        sizes = []
        total = []
        while len(total) < 1000:
            b = rd.read_batch(max_records=77)
            sizes.append(len(b))
            total += b
        assert sizes == [77] * 12 + [76]
        assert seqs(total) == list(range(1000))
        with pytest.raises(ValueError):
            rd.read_batch(max_records=0)


def test_value_type_decodes_with_btf(fx):
    t = fx.spec.types.type_by_name("event")
    with ringbuf.Reader(fx.maps["events"], value_type=t) as rd:
        fx.produce(2000, start=100)
        records = rd.read_batch()
        assert len(records) == 2000
        assert [(r.value.seq, r.value.val) for r in records] == [
            (100 + i, ((100 + i) * MAGIC) & MASK64) for i in range(2000)
        ]
        # read() (read-ahead) and iteration decode too
        fx.produce(3, start=5)
        assert rd.read().value.seq == 5
        assert [r.value.seq for r in rd.flush()] == [6, 7]


def test_value_type_rejects_non_types(fx):
    with pytest.raises(TypeError):
        ringbuf.Reader(fx.maps["events"], value_type="event")


def test_discarded_samples_are_skipped(fx):
    with ringbuf.Reader(fx.maps["events"]) as rd:
        fx.produce(3000, mode=1)  # reserve + submit, discard every seq % 3 == 2
        assert fx.counter("discarded") == 1000 and fx.counter("emitted") == 2000
        records = rd.read_batch()
        assert seqs(records) == [s for s in range(3000) if s % 3 != 2]
        assert [r.raw_sample for r in records] == [event(s) for s in range(3000) if s % 3 != 2]


def test_variable_length_samples(fx):
    with ringbuf.Reader(fx.maps["events"]) as rd:
        fx.produce(1000, start=3, mode=2)  # (seq % 64) + 1 bytes of seq repeated
        records = rd.read_batch()
        assert len(records) == 1000
        for i, r in enumerate(records):
            s = 3 + i
            assert r.raw_sample == (s.to_bytes(8, "little") * 8)[: (s & 63) + 1]


def test_mixed_runs_and_singles_keep_order(fx):
    with ringbuf.Reader(fx.maps["events"]) as rd:
        expected = []
        for k in range(20):
            fx.produce(50, start=1000 * k)
            expected += [event(1000 * k + i) for i in range(50)]
            fx.produce(7, start=1000 * k + 100, mode=2)
            expected += [((1000 * k + 100 + i).to_bytes(8, "little") * 8)[: ((1000 * k + 100 + i) & 63) + 1]
                         for i in range(7)]
        assert [r.raw_sample for r in rd.flush()] == expected


def test_wraparound_on_a_one_page_ring(fx):
    small = fx.maps["small"]
    assert small.max_entries == 4096
    with ringbuf.Reader(small) as rd:
        got = []
        for k in range(60):  # 60 x 100 records of 24 bytes: the 4 KiB ring wraps ~35 times
            fx.produce(100, start=100 * k, target=1)
            got += rd.read_batch()
        assert fx.counter("dropped") == 0
        assert seqs(got) == list(range(6000))


def test_full_ring_drops_in_the_kernel_and_the_reader_gets_the_rest(fx):
    with ringbuf.Reader(fx.maps["small"]) as rd:
        fx.produce(1000, target=1)
        emitted, dropped = fx.counter("emitted"), fx.counter("dropped")
        assert emitted == 4096 // RECORD_BYTES and emitted + dropped == 1000
        assert seqs(rd.flush()) == list(range(emitted))
        fx.produce(10, start=5000, target=1)  # room again
        assert seqs(rd.read_batch()) == list(range(5000, 5010))


def test_several_maps_in_one_reader(fx):
    with ringbuf.Reader(fx.maps["events"], fx.maps["events2"]) as rd:
        assert rd.maps == (fx.maps["events"], fx.maps["events2"])
        fx.produce(500, start=0, target=0)
        fx.produce(300, start=10000, target=2)
        records = rd.flush()
        assert seqs([r for r in records if r.ring == 0]) == list(range(500))
        assert seqs([r for r in records if r.ring == 1]) == list(range(10000, 10300))
        fx.produce(1, start=42, target=2)
        r = rd.read(timeout=5)
        assert (r.ring, seqs([r])) == (1, [42])


def test_no_wakeup_samples_are_found(fx):
    with ringbuf.Reader(fx.maps["events"]) as rd:
        fx.produce(10, mode=3)  # BPF_RB_NO_WAKEUP: nobody is notified
        assert seqs([rd.read(timeout=0) for _ in range(10)]) == list(range(10))
        fx.produce(10, start=10, mode=3)
        assert seqs(rd.flush()) == list(range(10, 20))


def test_iteration_yields_in_order_and_ends_on_close(fx):
    rd = ringbuf.Reader(fx.maps["events"])
    fx.produce(5000)
    got = []
    for r in rd:
        got.append(r)
        if len(got) == 5000:
            rd.close()
    assert seqs(got) == list(range(5000))
    assert rd.closed


def test_libbpf_backend_gives_the_same_records(fx):
    t = fx.spec.types.type_by_name("event")
    with ringbuf.Reader(fx.maps["events"], backend="libbpf", value_type=t) as rd:
        assert rd.backend == "libbpf"
        fx.produce(3000, mode=1)
        records = rd.read_batch(max_records=500)
        assert len(records) == 500
        records += rd.read_batch()
        assert seqs(records) == [s for s in range(3000) if s % 3 != 2]
        assert [r.value.seq for r in records] == seqs(records)
        with pytest.raises(TimeoutError):
            rd.read(timeout=0.01)
    with pytest.raises(ValueError):
        ringbuf.Reader(fx.maps["events"], backend="poll")


def test_standalone_map_used_by_a_program():
    m = ebpf.Map(MapSpec(name="standalone_rb", type=MapType.RINGBUF, max_entries=4096 * 4))
    # A replacement must match the spec (as in cilium): same size.
    f = Fixture(sizes={"events": 4096 * 4}, map_replacements={"events": m})
    try:
        with ringbuf.Reader(m) as rd:
            assert rd.buffer_size == 16384
            f.produce(600, start=1)
            assert f.counter("emitted") == 600
            assert seqs(rd.read_batch()) == list(range(1, 601))
    finally:
        f.close()
        m.close()


def test_reader_outlives_the_map_object(fx):
    rd = ringbuf.Reader(fx.maps["events"])
    try:
        fx.coll.detach_map("events").close()  # our own fd keeps the ring
        fx.produce(100)
        assert seqs(rd.read_batch()) == list(range(100))
    finally:
        rd.close()


# -- waiting, timeouts, closing ----------------------------------------------------


def test_timeout_raises(fx):
    with ringbuf.Reader(fx.maps["events"]) as rd:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            rd.read(timeout=0.05)
        with pytest.raises(TimeoutError):
            rd.read_batch(timeout=0)
        assert time.monotonic() - start < 30  # generous: only proves it returned


def test_blocked_read_gets_a_later_record(fx):
    with ringbuf.Reader(fx.maps["events"]) as rd:
        result: list = []
        t = threading.Thread(target=lambda: result.append(rd.read(timeout=60)))
        t.start()
        time.sleep(0.05)
        fx.produce(1, start=99)
        t.join(60)
        assert not t.is_alive()
        assert seqs(result) == [99]


def test_close_wakes_a_blocked_reader(fx):
    rd = ringbuf.Reader(fx.maps["events"])
    errors: list = []
    started = threading.Event()

    def reader() -> None:
        started.set()
        try:
            rd.read()  # no timeout: only close() can end this
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    started.wait(10)
    deadline = time.monotonic() + 10
    while rd._waiters == 0 and time.monotonic() < deadline:  # wait until it really blocks
        time.sleep(0.005)
    assert rd._waiters == 1
    rd.close()
    t.join(30)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ClosedError)
    assert rd._freed  # the waiter freed the rings on its way out


def test_closed_reader_raises_and_close_is_idempotent(fx):
    rd = ringbuf.Reader(fx.maps["events"])
    rd.close()
    rd.close()
    for call in (rd.read, rd.read_batch, rd.flush, rd.available_bytes, rd.fileno):
        with pytest.raises(ClosedError):
            call()
    assert list(rd) == []


def test_close_drops_read_ahead_and_flush_keeps_it(fx):
    rd = ringbuf.Reader(fx.maps["events"])
    fx.produce(10)
    assert seqs([rd.read()]) == [0]
    assert seqs(rd.flush()) == list(range(1, 10))
    rd.close()


def test_available_bytes(fx):
    with ringbuf.Reader(fx.maps["events"]) as rd:
        assert rd.available_bytes() == 0
        fx.produce(10)
        assert rd.available_bytes() == 10 * RECORD_BYTES
        rd.read_batch()
        assert rd.available_bytes() == 0


def test_resources_released(fx):
    fx.produce(0)  # the first variable access opens what the collection caches
    gc.collect()
    before = open_fds()
    for _ in range(5):
        with ringbuf.Reader(fx.maps["events"], fx.maps["events2"]) as rd:
            fx.produce(10)
            rd.read_batch()
    rd = ringbuf.Reader(fx.maps["events"])
    del rd  # the finalizer frees it
    gc.collect()
    assert open_fds() == before


def test_concurrent_producer_loses_and_reorders_nothing(fx):
    """The producer waits for room (the consumer keeps up): every event
    arrives once, in order."""
    total, burst = 200_000, 2000
    rd = ringbuf.Reader(fx.maps["events"])
    size = rd.buffer_size
    errors: list = []

    def producer() -> None:
        try:
            for k in range(total // burst):
                while rd.available_bytes() > size - (burst + 1) * RECORD_BYTES:
                    time.sleep(0.0005)
                fx.produce(burst, start=k * burst)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=producer)
    t.start()
    got = []
    try:
        while len(got) < total:
            got.extend(rd.read_samples(timeout=60))
    finally:
        t.join(60)
        rd.close()
    assert not errors
    assert fx.counter("dropped") == 0
    assert len(got) == total
    assert got == [event(i) for i in range(total)]


# -- argument errors --------------------------------------------------------------


def test_wrong_map_types_are_clear_errors(fx):
    with ebpf.Map(MapSpec(name="h", type=MapType.HASH, key_size=4, value_size=4, max_entries=1)) as h:
        with pytest.raises(InvalidObjectError, match="HASH map, not RINGBUF"):
            ringbuf.Reader(h)
    with pytest.raises(InvalidObjectError, match="ringbuf.Writer"):
        ringbuf.Reader(fx.maps["user_events"])
    with pytest.raises(InvalidObjectError, match="ringbuf.Reader"):
        ringbuf.Writer(fx.maps["events"])
    with pytest.raises(TypeError):
        ringbuf.Reader(3)
    with ebpf.Map(MapSpec(name="pa", type=MapType.PERF_EVENT_ARRAY)) as pa:
        with pytest.raises(InvalidObjectError, match="perf.Reader"):
            ringbuf.Reader(pa)
    m = ebpf.Map(MapSpec(name="rb", type=MapType.RINGBUF, max_entries=4096))
    m.close()
    with pytest.raises(ClosedError):
        ringbuf.Reader(m)


def test_ring_size_must_be_a_power_of_two(fx):
    # The kernel refuses such a map outright ...
    with pytest.raises(EBPFError, match="RINGBUF"):
        ebpf.Map(MapSpec(name="rb3", type=MapType.RINGBUF, max_entries=3 * 4096))
    # ... and a reader checks the size it is given before mapping anything.
    real = fx.maps["events"]
    spec = real.spec
    spec.max_entries = 3 * 4096
    fake = ebpf.Map._from_fd(os.dup(real.fd), spec)
    try:
        with pytest.raises(InvalidObjectError, match="power of two"):
            ringbuf.Reader(fake)
    finally:
        fake.close()


# -- user ring buffers --------------------------------------------------------------


def drain(fx) -> int:
    assert fx.coll.programs["drain"].run().retval == 0
    return fx.counter("drain_ret")


def test_writer_samples_are_drained_in_order_by_a_program(fx):
    with ringbuf.Writer(fx.maps["user_events"]) as w:
        for i in range(100):
            w.write(event(i))
        assert w.write_batch(event(i) for i in range(100, 1000)) == 900
        assert drain(fx) == 1000
        assert fx.counter("drained") == 1000
        assert fx.counter("drain_misordered") == 0
        assert fx.counter("drain_short") == 0
        assert fx.counter("drain_sum") == sum((i * MAGIC) & MASK64 for i in range(1000)) & MASK64
        assert w.free_bytes() == w.size
        assert drain(fx) == 0  # nothing left


def test_writer_full_ring_times_out_then_has_room_after_a_drain(fx):
    with ringbuf.Writer(fx.maps["user_events"]) as w:
        fit = w.size // RECORD_BYTES
        assert w.write_batch([event(i) for i in range(fit + 10)]) == fit
        with pytest.raises(TimeoutError):
            w.write(event(fit))
        with pytest.raises(TimeoutError):
            w.write(event(fit), timeout=0.02)
        assert drain(fx) == fit
        w.write(event(fit))
        assert drain(fx) == 1
        assert fx.counter("drained") == fit + 1 and fx.counter("drain_misordered") == 0


def test_writer_waits_for_a_concurrent_drain(fx):
    with ringbuf.Writer(fx.maps["user_events"]) as w:
        total = 3 * (w.size // RECORD_BYTES)
        stop = threading.Event()

        def drainer() -> None:
            while not stop.is_set():
                drain(fx)
                time.sleep(0.001)

        t = threading.Thread(target=drainer)
        t.start()
        try:
            assert w.write_batch((event(i) for i in range(total)), timeout=60) == total
        finally:
            stop.set()
            t.join(30)
        drain(fx)
        assert fx.counter("drained") == total and fx.counter("drain_misordered") == 0


def test_writer_rejects_oversized_samples_and_closed_use(fx):
    w = ringbuf.Writer(fx.maps["user_events"])
    with pytest.raises(MarshalError):
        w.write(bytes(w.size))
    w.close()
    w.close()
    with pytest.raises(ClosedError):
        w.write(event(0))
    assert drain(fx) == 0


def test_writer_close_wakes_a_write_waiting_for_room(fx):
    w = ringbuf.Writer(fx.maps["user_events"])
    fit = w.size // RECORD_BYTES
    assert w.write_batch([event(i) for i in range(fit)]) == fit
    errors: list = []

    def writer() -> None:
        try:
            w.write(event(fit), timeout=None)  # waits for a drain that never comes
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.05)
    w.close()
    t.join(30)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ClosedError)
    assert drain(fx) == fit  # what was written before stays for the kernel
