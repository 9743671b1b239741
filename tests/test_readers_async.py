"""Ring buffer and perf readers under asyncio.

Everything runs in ``asyncio.run``: ``async for``, ``read_async`` waiting
through ``loop.add_reader`` on the reader's epoll fd (no thread per reader:
the thread count is checked), timeouts, and ``close()`` waking a waiting
coroutine.
"""

from __future__ import annotations

import asyncio
import struct
import threading

import pytest

import ebpf
from ebpf import perf, ringbuf
from ebpf.errors import ClosedError

from conftest import fixture_path

pytestmark = pytest.mark.kernel

MAGIC = 0x9E3779B97F4A7C15
MASK64 = (1 << 64) - 1


def seqs(records) -> list:
    return [struct.unpack_from("<Q", r.raw_sample)[0] for r in records]


class Producer:
    def __init__(self, name: str) -> None:
        self.spec = ebpf.load_collection_spec(fixture_path(name))
        self.coll = ebpf.Collection(self.spec)
        self.perf = name.startswith("perf")

    def __call__(self, count: int, start: int = 0) -> None:
        v = self.coll.variables
        v["count"].set(count)
        v["start"].set(start)
        if self.perf:
            self.coll.programs["produce"].run(flags=1, cpu=0)
        else:
            self.coll.programs["produce"].run()


@pytest.fixture
def rb():
    p = Producer("ringbuf.o")
    try:
        yield p
    finally:
        p.coll.close()


@pytest.fixture
def pb():
    p = Producer("perfbuf.o")
    try:
        yield p
    finally:
        p.coll.close()


def readers(rb, pb):
    return [
        (lambda: ringbuf.Reader(rb.coll.maps["events"]), rb),
        (lambda: perf.Reader(pb.coll.maps["perf_events"], per_cpu_buffer=1 << 20), pb),
    ]


@pytest.mark.parametrize("kind", ["ringbuf", "perf"])
def test_async_for_reads_everything_in_order(rb, pb, kind):
    make, produce = dict(zip(["ringbuf", "perf"], readers(rb, pb)))[kind]

    async def main() -> list:
        rd = make()
        got = []
        # Produce from the loop while the consumer waits in `async for`.
        loop = asyncio.get_running_loop()
        for k in range(5):
            loop.call_later(0.01 * (k + 1), produce, 1000, k * 1000)
        async for record in rd:
            got.append(record)
            if len(got) == 5000:
                rd.close()
        return got

    got = asyncio.run(main())
    assert seqs(got) == list(range(5000))


@pytest.mark.parametrize("kind", ["ringbuf", "perf"])
def test_read_async_waits_through_the_loop_not_a_thread(rb, pb, kind):
    make, produce = dict(zip(["ringbuf", "perf"], readers(rb, pb)))[kind]

    async def main():
        with make() as rd:
            threads = threading.active_count()
            task = asyncio.ensure_future(rd.read_async(timeout=60))
            await asyncio.sleep(0.02)
            assert not task.done()  # really waiting
            assert threading.active_count() == threads
            produce(3, 40)
            first = await task
            rest = await rd.read_batch_async(timeout=60)
            return [first] + rest

    assert seqs(asyncio.run(main())) == [40, 41, 42]


@pytest.mark.parametrize("kind", ["ringbuf", "perf"])
def test_read_async_timeout(rb, pb, kind):
    make, _ = dict(zip(["ringbuf", "perf"], readers(rb, pb)))[kind]

    async def main() -> None:
        with make() as rd:
            with pytest.raises(TimeoutError):
                await rd.read_async(timeout=0.05)
            with pytest.raises(TimeoutError):
                await rd.read_batch_async(timeout=0)

    asyncio.run(asyncio.wait_for(main(), 60))


@pytest.mark.parametrize("kind", ["ringbuf", "perf"])
def test_close_wakes_an_awaiting_reader(rb, pb, kind):
    make, _ = dict(zip(["ringbuf", "perf"], readers(rb, pb)))[kind]

    async def main() -> None:
        rd = make()
        task = asyncio.ensure_future(rd.read_async())
        await asyncio.sleep(0.02)
        assert not task.done()
        rd.close()
        with pytest.raises(ClosedError):
            await asyncio.wait_for(task, 30)
        assert rd._freed

    asyncio.run(main())


def test_close_from_another_thread_wakes_the_loop(rb):
    async def main() -> None:
        rd = ringbuf.Reader(rb.coll.maps["events"])
        timer = threading.Timer(0.05, rd.close)
        timer.start()
        try:
            got = [r async for r in rd]  # ends when closed
        finally:
            timer.join()
        assert got == []

    asyncio.run(asyncio.wait_for(main(), 60))


def test_cancelled_read_leaves_the_reader_usable(rb):
    async def main() -> list:
        with ringbuf.Reader(rb.coll.maps["events"]) as rd:
            task = asyncio.ensure_future(rd.read_async())
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            rb(2, 8)
            return await rd.read_batch_async(timeout=30)

    assert seqs(asyncio.run(main())) == [8, 9]


def test_decoded_records_async(rb):
    t = rb.spec.types.type_by_name("event")

    async def main() -> list:
        with ringbuf.Reader(rb.coll.maps["events"], value_type=t) as rd:
            rb(100, 1)
            return [await rd.read_async(timeout=30) for _ in range(100)]

    got = asyncio.run(main())
    assert [(r.value.seq, r.value.val) for r in got] == [(s, (s * MAGIC) & MASK64) for s in range(1, 101)]


def test_one_coroutine_at_a_time(rb):
    async def main() -> None:
        with ringbuf.Reader(rb.coll.maps["events"]) as rd:
            first = asyncio.ensure_future(rd.read_async(timeout=30))
            await asyncio.sleep(0.01)
            with pytest.raises(RuntimeError, match="another coroutine"):
                await rd.read_async(timeout=30)
            rb(1, 5)
            assert seqs([await first]) == [5]

    asyncio.run(main())
