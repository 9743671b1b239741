"""close() racing operations in other threads (issue #11, item 2).

A worker thread operates on an object while the main thread closes it and
at once creates objects of the same kind, which the kernel gives the
lowest free fd numbers -- the closed object's number, if it was released.
Every value of the first object carries its own mark, every value of the
others another: an operation that reached a newcomer shows its mark (or
leaves the first object's mark in it, for writes).  Operations must finish
on the object they started on or raise ClosedError, nothing else.
"""

from __future__ import annotations

import os
import struct
import threading
from typing import Any, Callable, List

import pytest

import ebpf
from ebpf import MapSpec, MapType, ProgramSpec, ProgramType
from ebpf.errors import ClosedError
from ebpf.maps import map_from_id

from conftest import fixture_path

pytestmark = pytest.mark.kernel

TRIALS = 1000
NEWCOMERS = 4  # objects created right after each close, to take the freed numbers


def _ret(v: int) -> bytes:
    # r0 = v; exit
    return bytes([0xB7, 0, 0, 0]) + v.to_bytes(4, "little") + bytes([0x95, 0, 0, 0, 0, 0, 0, 0])


class Race:
    """A worker thread running ``op(obj)`` in a loop on each object handed
    to it until the op raises ClosedError; it collects what ``op`` returns
    that is not the object's own mark, and any other exception."""

    def __init__(self, op: Callable[[Any, int], Any]) -> None:
        self.op = op
        self.foreign: List[Any] = []
        self.errors: List[BaseException] = []
        self.ops = 0
        self._cv = threading.Condition()
        self._job: Any = None
        self._started = threading.Event()
        self._done = True
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._job is None and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                obj, mark = self._job
            try:
                while True:
                    got = self.op(obj, mark)
                    self.ops += 1
                    self._started.set()
                    if got is not None and got != mark:
                        self.foreign.append(got)
            except ClosedError:
                pass
            except BaseException as exc:  # reported by the test
                self.errors.append(exc)
            self._started.set()
            with self._cv:
                self._job = None
                self._done = True
                self._cv.notify_all()

    def start(self, obj: Any, mark: int) -> None:
        with self._cv:
            self._started.clear()
            self._done = False
            self._job = (obj, mark)
            self._cv.notify_all()
        # Back as soon as one operation finished: the next is under way
        # when the caller closes the object (it runs while the worker
        # sits in a syscall, with the GIL released).
        self._started.wait(5)

    def wait(self) -> None:
        with self._cv:
            while not self._done:
                self._cv.wait(5)

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(5)


def _array(mark: int, entries: int = 4) -> ebpf.Map:
    m = ebpf.Map(MapSpec("race", MapType.ARRAY, 4, 8, entries))
    for i in range(entries):
        m[i] = mark
    return m


def _trials(race: Race, make: Callable[[int], Any], trials: int = TRIALS,
            after: Callable[[List[Any], int], None] = lambda objs, mark: None) -> None:
    try:
        for t in range(trials):
            mark, other = 2 * t + 1, 2 * t + 2
            obj = make(mark)
            race.start(obj, mark)
            obj.close()
            newcomers = [make(other) for _ in range(NEWCOMERS)]
            race.wait()
            after(newcomers, mark)
            for n in newcomers:
                n.close()
    finally:
        race.stop()
    assert race.errors == []
    assert race.foreign == [], f"{len(race.foreign)} results came from other objects"
    assert race.ops > trials  # the operations really ran


def _int(raw: Any) -> int:
    return int.from_bytes(raw, "little") if isinstance(raw, bytes) else raw


def test_lookup_never_reads_a_map_that_reused_the_fd():
    def op(m: ebpf.Map, mark: int) -> int:
        return _int(m.lookup(0))

    _trials(Race(op), _array)


def test_items_never_return_another_maps_values():
    def op(m: ebpf.Map, mark: int) -> Any:
        values = {_int(v) for _, v in m.items()}
        return next(iter(values - {mark}), None)

    _trials(Race(op), _array)


def test_next_key_iteration_never_walks_another_map():
    # An LPM trie iterates by next_key, one syscall per key.
    def make(mark: int) -> ebpf.Map:
        m = ebpf.Map(MapSpec("race_lpm", MapType.LPM_TRIE, 8, 8, 8, flags=1))
        for i in range(4):
            m[struct.pack("<I4B", 32, 10, 0, 0, i)] = mark
        return m

    def op(m: ebpf.Map, mark: int) -> Any:
        values = {_int(v) for v in m.values()}
        return next(iter(values - {mark}), None)

    _trials(Race(op), make)


def test_update_never_writes_another_map():
    def op(m: ebpf.Map, mark: int) -> None:
        m[1] = mark
        m.update(2, mark)

    def after(newcomers: List[ebpf.Map], mark: int) -> None:
        for n in newcomers:
            for k in range(4):
                assert _int(n[k]) != mark, "a write meant for a closed map landed in another one"

    _trials(Race(op), _array, after=after)


def test_delete_never_deletes_from_another_map():
    def make(mark: int) -> ebpf.Map:
        m = ebpf.Map(MapSpec("race_hash", MapType.HASH, 4, 8, 64))
        m.batch_update(list(range(64)), [mark] * 64)
        return m

    # One delete per operation (not a sweep of 64): the close then lands
    # between many short syscalls, and each trial counts several operations.
    counter = iter(range(1 << 62))

    def op(m: ebpf.Map, mark: int) -> None:
        try:
            del m[next(counter) % 64]
        except KeyError:
            pass

    def after(newcomers: List[ebpf.Map], mark: int) -> None:
        for n in newcomers:
            assert sum(1 for _ in n.keys()) == 64, "a delete meant for a closed map removed another map's key"

    _trials(Race(op), make, trials=300, after=after)


def test_close_releases_the_number_only_when_nothing_is_in_flight():
    m = _array(7)
    fd, map_id = m.fd, m.info().id
    tok = m._enter()  # what every operation holds around its syscall
    m.close()
    assert m.closed
    with pytest.raises(ClosedError):
        m.lookup(0)
    # The number still belongs to the closed map: a new map gets another.
    with _array(9) as other:
        assert other.fd != fd
        with map_from_id(map_id) as again:  # the kernel map lives on
            assert again.info().id == map_id
    m._leave(tok)
    with pytest.raises(OSError):
        os.fstat(fd)  # released by the last operation


def test_operations_on_a_closed_map_raise_closed_error():
    m = ebpf.Map(MapSpec("closed_ops", MapType.HASH, 4, 8, 4))
    m[1] = 1
    m.close()
    for call in (lambda: m.lookup(1), lambda: m.update(1, 2), lambda: m.delete(1), lambda: 1 in m,
                 lambda: list(m.items()), lambda: m.next_key(None), lambda: m.batch_update([1], [1]),
                 lambda: m.batch_lookup(), lambda: len(m), lambda: m.info(), lambda: m.lookup_and_delete(1)):
        with pytest.raises(ClosedError):
            call()


def test_program_run_never_runs_another_program():
    def make(mark: int) -> ebpf.Program:
        return ebpf.Program(ProgramSpec("race_prog", ProgramType.SOCKET_FILTER, instructions=_ret(mark),
                                        license="GPL"))

    def op(p: ebpf.Program, mark: int) -> int:
        return p.run(b"\0" * 14).retval

    # Program loads are slow (the verifier): fewer trials.
    _trials(Race(op), make, trials=150)


def test_link_info_never_describes_another_link():
    from ebpf import link

    prog = ebpf.Program(ProgramSpec("race_rawtp", ProgramType.RAW_TRACEPOINT, instructions=_ret(0), license="GPL"))
    ids: dict = {}

    def make(mark: int) -> Any:
        lk = link.attach_raw_tracepoint("sys_enter", prog)
        ids[id(lk)] = lk.info().id
        lk._race_mark = mark  # the Race compares what op returns with it
        return lk

    def op(lk: Any, mark: int) -> Any:
        got = lk.info().id
        return mark if got == ids[id(lk)] else ("foreign link", got)

    try:
        _trials(Race(op), make, trials=150)
    finally:
        prog.close()


def test_ring_buffer_reader_never_returns_another_rings_records():
    from ebpf import ringbuf

    a_spec = ebpf.load_collection_spec(fixture_path("ringbuf.o"))
    with ebpf.Collection(a_spec) as a, ebpf.Collection(a_spec.copy()) as b:
        def produce(coll: Any, start: int) -> None:
            v = coll.variables
            v["count"].set(8)
            v["start"].set(start)
            v["mode"].set(0)
            v["target"].set(0)
            coll.programs["produce"].run()

        produce(a, 0)

        def make(mark: int) -> Any:
            src = a if mark % 2 else b
            rd = ringbuf.Reader(src.maps["events"])
            if src is b:
                produce(b, 1 << 40)  # b's records: far away from a's
            return rd

        def op(rd: Any, mark: int) -> Any:
            recs = rd.read_batch(64, timeout=0.001) if rd.available_bytes() else []
            produce(a, 0)
            bad = [r for r in recs if struct.unpack_from("<Q", r.raw_sample)[0] >= 1 << 40]
            return ("foreign records", len(bad)) if bad else None

        _trials(Race(op), make, trials=200)
