"""Overwritable perf readers (cilium's ``ReaderOptions.Overwritable``) on the
real kernel: backward-writing rings the kernel overwrites when full, read
while paused, newest first (fixtures/perfbuf.bpf.c, as in tests/test_perf.py)."""

from __future__ import annotations

import errno
import mmap

import pytest
import test_perf
from test_perf import MAGIC, MASK64, SAMPLE_RECORD, event, seqs, trim

from ebpf import perf
from ebpf.errors import ClosedError, EBPFError

pytestmark = pytest.mark.kernel

fx = test_perf.fx  # the perfbuf collection, one per test

RING = mmap.PAGESIZE  # one page of data per CPU: SAMPLE_RECORD-byte records, RING // 32 of them


def test_records_after_the_ring_wrapped_newest_first(fx):
    fits = RING // SAMPLE_RECORD
    with perf.Reader(fx.map, RING, overwritable=True) as rd:
        assert rd.overwritable and not rd.paused
        fx.produce(3 * fits + 7, start=1000, cpu=0)  # wraps the ring three times
        rd.pause()
        records = rd.flush()
        # The newest ring's worth is kept, newest first; the oldest were overwritten.
        newest = 1000 + 3 * fits + 7 - 1
        assert seqs(records) == list(range(newest, newest - fits, -1))
        assert [trim(r.raw_sample, 16) for r in records[:2]] == [event(newest), event(newest - 1)]
        assert all(r.cpu == 0 and r.lost_samples == 0 and r.remaining == -1 for r in records)
        # Nothing was dropped: the kernel overwrote instead.
        assert fx.counter("failed") == 0 and rd.lost_samples == 0
        assert rd.flush() == []  # each record once


def test_partly_overwritten_oldest_record_is_not_returned(fx):
    # 48-byte records (20 extra bytes): a page holds 85 and a third, so the
    # oldest record in the window has lost its end to newer ones.
    with perf.Reader(fx.map, RING, overwritable=True) as rd:
        fx.produce(500, start=0, extra=20, cpu=0)
        rd.pause()
        records = rd.flush()
        assert seqs(records) == list(range(499, 499 - RING // 48, -1))
        assert all(trim(r.raw_sample, 36) == event(s, 20) for r, s in zip(records, seqs(records)))


def test_reads_need_pause_and_each_pause_reads_what_came_since(fx):
    with perf.Reader(fx.map, RING, overwritable=True) as rd:
        fx.produce(5, start=0)
        with pytest.raises(EBPFError, match="paused") as info:
            rd.read(timeout=0)
        assert info.value.errno == errno.EBUSY
        with pytest.raises(EBPFError, match="paused"):
            rd.flush()
        rd.pause()
        assert rd.paused
        assert seqs(rd.read_batch(timeout=0)) == [4, 3, 2, 1, 0]
        # Paused: programs cannot write (the fds are out of the map) ...
        fx.produce(3, start=100)
        assert fx.counter("failed") == 3
        with pytest.raises(TimeoutError):
            rd.read(timeout=0.05)
        # ... and after a resume the next look sees only the new records.
        rd.resume()
        assert not rd.paused
        fx.produce(4, start=200)
        rd.pause()
        assert rd.available_bytes() == 4 * SAMPLE_RECORD
        assert seqs([rd.read(timeout=0) for _ in range(4)]) == [203, 202, 201, 200]
        rd.resume()
        fx.produce(2, start=300)
        rd.pause()
        assert seqs(rd.flush()) == [301, 300]


def test_records_of_every_cpu_and_decoded_values(fx):
    t = fx.spec.types.type_by_name("event")
    with perf.Reader(fx.map, RING, overwritable=True, value_type=t) as rd:
        for cpu in rd.cpus:
            fx.produce(10, start=cpu * 1000, cpu=cpu)
        rd.pause()
        records = rd.flush()
        for cpu in rd.cpus:
            mine = [r for r in records if r.cpu == cpu]
            assert [r.value.seq for r in mine] == [cpu * 1000 + i for i in range(9, -1, -1)]
            assert all(r.value.val == (r.value.seq * MAGIC) & MASK64 for r in mine)


def test_forward_reader_keeps_its_order_and_tail(fx):
    """The default reader is unchanged: oldest first, and a full ring drops."""
    with perf.Reader(fx.map, RING) as rd:
        assert not rd.overwritable
        fx.produce(3 * (RING // SAMPLE_RECORD), start=0, cpu=0)
        records = [r for r in rd.flush() if not r.lost_samples]
        # The first records, oldest first, as many as fit beside the loss report.
        assert 0 < len(records) <= RING // SAMPLE_RECORD
        assert seqs(records) == list(range(len(records)))
        assert fx.counter("failed") > 0  # dropped (reported lost once there is room again)


def test_overwritable_close_and_repr(fx):
    rd = perf.Reader(fx.map, RING, overwritable=True)
    assert "overwritable" in repr(rd)
    rd.pause()
    rd.close()
    with pytest.raises(ClosedError):
        rd.flush()
    with pytest.raises(ClosedError):
        rd.resume()
