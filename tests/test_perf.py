"""Perf event buffers on the real kernel (fixtures/perfbuf.bpf.c).

A raw tracepoint program, run with BPF_PROG_TEST_RUN on a chosen CPU
(BPF_F_TEST_RUN_ON_CPU), emits numbered events with bpf_perf_event_output;
the tests check exact counts, order, content and CPU, lost samples on a
tiny buffer, watermarks, pause/resume, timeouts and close().
"""

from __future__ import annotations

import gc
import os
import select
import struct
import threading
import time

import pytest

import ebpf
from ebpf import MapSpec, MapType, perf
from ebpf.errors import ClosedError, InvalidObjectError

from conftest import fixture_path

pytestmark = pytest.mark.kernel

MAGIC = 0x9E3779B97F4A7C15
MASK64 = (1 << 64) - 1
BPF_F_TEST_RUN_ON_CPU = 1
# A 16-byte sample: 8 header + 4 size + 16 data + 4 padding
SAMPLE_RECORD = 32


def event(seq: int, extra: int = 0) -> bytes:
    """What the program emits for ``seq``."""
    return struct.pack("<QQ", seq, (seq * MAGIC) & MASK64) + bytes([seq & 0xFF]) * extra


def padded(n: int) -> int:
    """Length of a raw sample of ``n`` bytes as perf delivers it (the
    padding bytes are whatever the ring held before)."""
    return (n + 4 + 7) // 8 * 8 - 4


def trim(raw: bytes, n: int) -> bytes:
    assert len(raw) == padded(n), (len(raw), n)
    return raw[:n]


def seqs(records) -> list:
    return [struct.unpack_from("<Q", r.raw_sample)[0] for r in records]


class Fixture:
    def __init__(self, **kwargs) -> None:
        self.spec = ebpf.load_collection_spec(fixture_path("perfbuf.o"))
        self.coll = ebpf.Collection(self.spec, **kwargs)
        self.map = self.coll.maps["perf_events"]
        self.vars = self.coll.variables
        self._lock = threading.Lock()

    def produce(self, count: int, start: int = 0, extra: int = 0, cpu: int = 0) -> None:
        with self._lock:
            self.vars["count"].set(count)
            self.vars["start"].set(start)
            self.vars["extra"].set(extra)
            res = self.coll.programs["produce"].run(flags=BPF_F_TEST_RUN_ON_CPU, cpu=cpu)
            assert res.retval == 0

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


def ncpus() -> int:
    from ebpf import _libbpf

    return _libbpf.num_possible_cpus()


def test_counts_order_content_and_cpu(fx):
    with perf.Reader(fx.map, per_cpu_buffer=1 << 20) as rd:
        assert rd.cpus == list(range(ncpus()))
        for cpu in rd.cpus:
            fx.produce(5000, start=cpu * 100000, cpu=cpu)
            records = rd.read_batch()
            assert len(records) == 5000
            assert all(r.cpu == cpu and r.lost_samples == 0 for r in records)
            assert [trim(r.raw_sample, 16) for r in records] == [event(cpu * 100000 + i) for i in range(5000)]
            assert records[-1].remaining == 0 and records[-2].remaining == SAMPLE_RECORD
        assert fx.counter("failed") == 0
        assert rd.lost_samples == 0


def test_per_cpu_order_with_both_cpus_pending(fx):
    with perf.Reader(fx.map, per_cpu_buffer=1 << 20) as rd:
        for k in range(10):
            for cpu in rd.cpus:
                fx.produce(100, start=cpu * 100000 + k * 100, cpu=cpu)
        records = rd.flush()
        for cpu in rd.cpus:
            assert seqs([r for r in records if r.cpu == cpu]) == [cpu * 100000 + i for i in range(1000)]


def test_variable_sizes_and_padding(fx):
    with perf.Reader(fx.map, per_cpu_buffer=1 << 16) as rd:
        expected, lengths = [], []
        for extra in range(0, 49, 3):
            fx.produce(3, start=extra * 10, extra=extra)
            expected += [event(extra * 10 + i, extra) for i in range(3)]
            lengths += [16 + extra] * 3
        records = rd.flush()
        assert [trim(r.raw_sample, n) for r, n in zip(records, lengths)] == expected
        assert len(records) == len(expected)


def test_value_type_decodes_and_ignores_padding(fx):
    t = fx.spec.types.type_by_name("event")  # 16 bytes; samples read back as 20
    with perf.Reader(fx.map, per_cpu_buffer=1 << 20, value_type=t) as rd:
        fx.produce(1000, start=5)
        records = rd.read_batch()
        assert [len(r.raw_sample) for r in records[:1]] == [20]
        want = [(5 + i, ((5 + i) * MAGIC) & MASK64) for i in range(1000)]
        assert [(r.value.seq, r.value.val) for r in records] == want
    big = fx.spec.types.type_by_name("big_event")
    with perf.Reader(fx.map, per_cpu_buffer=1 << 20, value_type=big) as rd:
        fx.produce(100, start=5, extra=48)  # 64 bytes (+4 padding)
        records = rd.read_batch()
        assert [(r.value.seq, r.value.extra) for r in records] == [(5 + i, bytes([5 + i]) * 48) for i in range(100)]
        fx.produce(2, start=1, extra=0)  # shorter than the type: no value
        assert [r.value for r in rd.flush()] == [None, None]


def test_lost_samples_are_reported(fx):
    with perf.Reader(fx.map, per_cpu_buffer=4096) as rd:  # one page per CPU
        n = 1000
        fx.produce(n, cpu=0)
        emitted, failed = fx.counter("emitted"), fx.counter("failed")
        assert emitted + failed == n and failed > 0
        samples = rd.flush()
        assert seqs(samples) == list(range(emitted))
        # The kernel reports the loss with the next sample that fits.
        fx.produce(1, start=n, cpu=0)
        records = rd.flush()
        assert [(r.cpu, r.lost_samples, r.raw_sample) for r in records[:1]] == [(0, failed, b"")]
        assert seqs(records[1:]) == [n]
        assert rd.lost_samples == failed


def test_read_samples_skips_loss_records_but_counts_them(fx):
    with perf.Reader(fx.map, per_cpu_buffer=4096) as rd:
        fx.produce(500, cpu=1)
        failed = fx.counter("failed")
        rd.flush()
        fx.produce(1, start=500, cpu=1)
        assert [trim(s, 16) for s in rd.read_samples()] == [event(500)]
        assert rd.lost_samples == failed > 0


def test_wraparound_on_a_small_ring(fx):
    with perf.Reader(fx.map, per_cpu_buffer=4096) as rd:
        got = []
        for k in range(50):  # 50 x 100 records of 32..40 bytes through a 4 KiB ring
            fx.produce(100, start=k * 100, extra=k % 9, cpu=0)
            got += rd.read_batch()
        assert fx.counter("failed") == 0
        assert len(got) == 5000
        assert [trim(r.raw_sample, 16 + (i // 100) % 9) for i, r in enumerate(got)] == [
            event(k * 100 + i, k % 9) for k in range(50) for i in range(100)
        ]


def test_watermark_defers_the_wakeup_but_flush_returns_everything(fx):
    with perf.Reader(fx.map, per_cpu_buffer=1 << 16, watermark=8192) as rd:
        fx.produce(1, cpu=0)
        assert select.select([rd.fileno()], [], [], 0)[0] == []  # below the watermark: no wakeup
        fx.produce(400, start=1, cpu=0)  # 12.8 KB: above it
        assert select.select([rd.fileno()], [], [], 10)[0] == [rd.fileno()]
        assert seqs(rd.flush()) == list(range(401))
    with perf.Reader(fx.map, per_cpu_buffer=1 << 16) as rd:
        fx.produce(1, cpu=0)
        assert select.select([rd.fileno()], [], [], 10)[0] == [rd.fileno()]  # default: every sample
        assert len(rd.flush()) == 1
    with perf.Reader(fx.map, per_cpu_buffer=1 << 16, wakeup_events=10) as rd:
        fx.produce(9, cpu=0)
        assert select.select([rd.fileno()], [], [], 0)[0] == []
        fx.produce(1, cpu=0)
        assert select.select([rd.fileno()], [], [], 10)[0] == [rd.fileno()]
        assert len(rd.flush()) == 10


def test_pause_resume_and_close_take_the_fds_out_of_the_map(fx):
    rd = perf.Reader(fx.map, per_cpu_buffer=1 << 16)
    fx.produce(3, cpu=0)
    rd.pause()
    fx.produce(3, start=3, cpu=0)
    assert fx.counter("failed") == 3  # ENOENT while paused
    rd.resume()
    fx.produce(3, start=6, cpu=0)
    assert seqs(rd.flush()) == [0, 1, 2, 6, 7, 8]
    rd.close()
    fx.produce(3, start=9, cpu=0)
    assert fx.counter("failed") == 6  # closed: nobody's ring is in the map
    assert fx.counter("emitted") == 6


def test_standalone_map_used_by_a_program():
    m = ebpf.Map(MapSpec(name="standalone_pa", type=MapType.PERF_EVENT_ARRAY))  # one slot per CPU
    f = Fixture(map_replacements={"perf_events": m})
    try:
        with perf.Reader(m, per_cpu_buffer=8192) as rd:
            f.produce(100, start=1, cpu=ncpus() - 1)
            records = rd.read_batch()
            assert seqs(records) == list(range(1, 101))
            assert {r.cpu for r in records} == {ncpus() - 1}
    finally:
        f.close()
        m.close()


def test_timeout_and_close_wake_blocked_reads(fx):
    rd = perf.Reader(fx.map, per_cpu_buffer=8192)
    with pytest.raises(TimeoutError):
        rd.read(timeout=0.05)
    with pytest.raises(TimeoutError):
        rd.read(timeout=0)
    errors: list = []
    t = threading.Thread(target=lambda: errors.append(pytest.raises(ClosedError, rd.read)))
    t.start()
    deadline = time.monotonic() + 10
    while rd._waiters == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert rd._waiters == 1
    rd.close()
    t.join(30)
    assert not t.is_alive() and len(errors) == 1
    with pytest.raises(ClosedError):
        rd.read()
    assert list(rd) == []


def test_blocked_read_gets_a_later_record(fx):
    with perf.Reader(fx.map, per_cpu_buffer=8192) as rd:
        got: list = []
        t = threading.Thread(target=lambda: got.append(rd.read(timeout=60)))
        t.start()
        time.sleep(0.05)
        fx.produce(1, start=77, cpu=1)
        t.join(60)
        assert seqs(got) == [77] and got[0].cpu == 1


def test_iteration_ends_on_close(fx):
    rd = perf.Reader(fx.map, per_cpu_buffer=1 << 16)
    fx.produce(1000, cpu=0)
    got = []
    for r in rd:
        got.append(r)
        if len(got) == 1000:
            rd.close()
    assert seqs(got) == list(range(1000))


def test_concurrent_producer_loses_and_reorders_nothing(fx):
    total, burst = 100_000, 1000
    rd = perf.Reader(fx.map, per_cpu_buffer=1 << 20)
    errors: list = []

    def producer() -> None:
        try:
            for k in range(total // burst):
                # perf keeps one byte of the ring free: leave a record's room more
                while rd.available_bytes() > rd.per_cpu_buffer - (burst + 1) * SAMPLE_RECORD:
                    time.sleep(0.0005)
                fx.produce(burst, start=k * burst, cpu=0)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=producer)
    t.start()
    got: list = []
    try:
        while len(got) < total:
            got.extend(rd.read_samples(timeout=60))
    finally:
        t.join(60)
        rd.close()
    assert not errors and fx.counter("failed") == 0
    assert [s[:16] for s in got] == [event(i) for i in range(total)]


def test_bad_arguments(fx):
    with ebpf.Map(MapSpec(name="rb", type=MapType.RINGBUF, max_entries=4096)) as rb:
        with pytest.raises(InvalidObjectError, match="ringbuf.Reader"):
            perf.Reader(rb, per_cpu_buffer=4096)
    with pytest.raises(TypeError):
        perf.Reader(None, per_cpu_buffer=4096)
    for bad in (0, -1):
        with pytest.raises(ValueError):
            perf.Reader(fx.map, per_cpu_buffer=bad)
    with pytest.raises(ValueError, match="watermark"):
        perf.Reader(fx.map, per_cpu_buffer=4096, watermark=4096)
    with pytest.raises(ValueError):
        perf.Reader(fx.map, per_cpu_buffer=4096, watermark=10, wakeup_events=1)


def test_buffer_size_rounding():
    assert perf.ring_bytes(1) == 4096
    assert perf.ring_bytes(4097) == 8192
    assert perf.ring_bytes(3 * 4096) == 4 * 4096
    assert perf.ring_bytes(1 << 20) == 1 << 20


def test_resources_released(fx):
    fx.produce(0)
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with perf.Reader(fx.map, per_cpu_buffer=8192) as rd:
            fx.produce(5)
            assert len(rd.read_batch()) == 5
    rd = perf.Reader(fx.map, per_cpu_buffer=8192)
    del rd
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before
