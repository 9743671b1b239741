"""BPF iterators on the real kernel: a task iterator that must list this
process, and a bpf_map_elem iterator over a hash map filled from Python.

Each test loads only the programs it exercises: kernels differ in what their
policy refuses (some refuse bpf_map_elem iterators, while task iterators
load), and one refused program must not fail the tests of the others."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

import ebpf
from ebpf import features, link
from ebpf.errors import ClosedError, InvalidObjectError, KernelPolicyError
from ebpf.link import LinkType

from conftest import fixture_path, require

pytestmark = pytest.mark.kernel


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class TaskObjs:
    dump_tgids: ebpf.Program
    dump_tgids_tagged: ebpf.Program


class ElemObjs:
    dump_elems: ebpf.Program
    dump_elems_raw: ebpf.Program
    elems: ebpf.Map


def _loaded(objs_class):
    objs = ebpf.load_collection_spec(fixture_path("link_iter.o")).load_and_assign(objs_class)
    try:
        yield objs
    finally:
        for name in objs_class.__annotations__:
            getattr(objs, name).close()


@pytest.fixture
def tasks():
    yield from _loaded(TaskObjs)


@pytest.fixture
def elems():
    require(features.have_iterator, "bpf_map_elem")
    yield from _loaded(ElemObjs)


def tgids(data: bytes) -> set:
    return {int(line) for line in data.decode().split()}


def test_task_iterator_lists_our_process(tasks):
    with link.attach_iter(tasks.dump_tgids) as it:
        assert isinstance(it, link.Iter)
        first = tgids(it.read())
        assert os.getpid() in first
        # Each open() is a fresh walk; a child started in between shows up.
        r, w = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - child waits for the parent
            os.close(w)
            os.read(r, 1)
            os._exit(0)
        os.close(r)
        try:
            with it.open() as f:
                second = tgids(f.read())
        finally:
            os.close(w)
            os.waitpid(child, 0)
        assert child in second and child not in first
        info = it.info()
        assert info.type == LinkType.ITER
        assert info.extra["target_name"] == "task"
        assert info.program_id == tasks.dump_tgids.info().id


def test_iterator_program_loaded_alone():
    # A program loaded alone gets its maps by name: the data sections that
    # hold the format strings (frozen: bpf_seq_printf wants a read-only
    # format) and the running sum.
    # Where this kernel refuses map-element iterators by policy, the load
    # alone must say so in the same typed way as the probe.
    try:
        features.have_iterator("bpf_map_elem")
        refused = None
    except KernelPolicyError as exc:
        refused = exc
    spec = ebpf.load_collection_spec(fixture_path("link_iter.o"))
    maps = {name: ebpf.Map(spec.maps[name]) for name in (".rodata", ".bss", "elems")}
    try:
        maps[".rodata"].freeze()
        for k in range(3):
            maps["elems"][k] = k + 40
        if refused is not None:
            with pytest.raises(KernelPolicyError, match="dump_elems") as exc:
                ebpf.Program(spec.programs["dump_elems"], maps=maps)
            assert exc.value.errno == refused.errno
            assert "ulimit" not in str(exc.value)
            return
        with ebpf.Program(spec.programs["dump_elems"], maps=maps) as prog:
            with link.attach_iter(prog, map=maps["elems"]) as it:
                lines = it.read().decode().splitlines()
        assert sorted(lines[:-1]) == ["0 40", "1 41", "2 42"]
        assert lines[-1] == "sum 123"
    finally:
        for m in maps.values():
            m.close()


def test_task_iterator_loaded_alone_is_relocated():
    """The task iterator reads task_struct fields through CO-RE: loaded alone
    it goes through libbpf and still lists the right tgids."""
    spec = ebpf.load_collection_spec(fixture_path("link_iter.o"))
    with ebpf.Program(spec.programs["dump_tgids"]) as prog:
        with link.attach_iter(prog) as it:
            assert os.getpid() in tgids(it.read())


def test_iterator_read_in_small_pieces(tasks):
    with link.attach_iter(tasks.dump_tgids) as it:
        with it.open() as f:
            chunks = []
            while True:
                b = f.read(3)
                if not b:
                    break
                chunks.append(b)
        assert os.getpid() in tgids(b"".join(chunks))


def test_iterator_update_swaps_program(tasks):
    with link.attach_iter(tasks.dump_tgids) as it:
        assert not it.read().startswith(b"tgid=")
        it.update(tasks.dump_tgids_tagged)
        out = it.read().decode().split()
        assert out and all(line.startswith("tgid=") for line in out)
        assert f"tgid={os.getpid()}" in out
        assert it.info().program_id == tasks.dump_tgids_tagged.info().id


def test_map_elem_iterator(elems):
    m = elems.elems
    values = {k: (k + 1) * 1000 + 7 for k in range(20)}
    for k, v in values.items():
        m[k] = v
    with link.attach_iter(elems.dump_elems, map=m) as it:
        lines = it.read().decode().splitlines()
        info = it.info()
    assert lines[-1] == f"sum {sum(values.values())}"
    got = dict(tuple(map(int, line.split())) for line in lines[:-1])
    assert got == values
    assert info.extra["target_name"] == "bpf_map_elem"
    assert info.extra["map_id"] == m.info().id


def test_map_elem_iterator_binary_records(elems):
    m = elems.elems
    m[5] = 55
    m[6] = 66
    with link.attach_iter(elems.dump_elems_raw, map=m) as it:
        data = it.read()
    recs = dict(struct.iter_unpack("<IQ", data))
    assert recs == {5: 55, 6: 66}


def test_map_elem_iterator_follows_map_changes(elems):
    m = elems.elems
    with link.attach_iter(elems.dump_elems, map=m) as it:
        assert it.read().decode().splitlines() == ["sum 0"]
        m[1] = 10
        assert it.read().decode().splitlines() == ["1 10", "sum 10"]


def test_iterator_pinned(tasks, pin_dir: Path):
    # A pinned iterator can be read by anyone with `cat`; here, via the pin.
    with link.attach_iter(tasks.dump_tgids) as it:
        it.pin(pin_dir / "tasks")
        try:
            with open(pin_dir / "tasks", "rb") as f:
                assert os.getpid() in tgids(f.read())
            again = link.load_pinned_link(pin_dir / "tasks")
            with again:
                assert again.info().id == it.info().id
                assert isinstance(again, link.Iter)
                assert os.getpid() in tgids(again.read())
            with link.link_from_id(it.info().id) as by_id:
                assert isinstance(by_id, link.Iter)
        finally:
            it.unpin()
    assert not (pin_dir / "tasks").exists()


def test_iterator_errors(tasks):
    m = ebpf.Map(ebpf.MapSpec("some", ebpf.MapType.HASH, 4, 8, 4))
    fds = open_fds()
    try:
        with pytest.raises(InvalidObjectError, match="does not walk a map"):
            link.attach_iter(tasks.dump_tgids, map=m)
    finally:
        m.close()
    # An iterator is a tracing program the other attach functions refuse.
    with pytest.raises(InvalidObjectError, match="attach_iter"):
        link.attach_tracing(tasks.dump_tgids)
    with pytest.raises(InvalidObjectError):
        link.attach_tracepoint("syscalls", "sys_enter_getppid", tasks.dump_tgids)
    assert open_fds() == fds - 1  # the map's fd is gone, nothing else changed
    tasks.dump_tgids.close()
    fds = open_fds()
    with pytest.raises(ClosedError):
        link.attach_iter(tasks.dump_tgids)
    assert open_fds() == fds


def test_map_iterator_errors(elems):
    fds = open_fds()
    with pytest.raises(InvalidObjectError, match="pass map="):
        link.attach_iter(elems.dump_elems)
    small = ebpf.Map(ebpf.MapSpec("small", ebpf.MapType.HASH, 2, 8, 4))
    try:
        with pytest.raises(InvalidObjectError, match="more of each key or value"):
            link.attach_iter(elems.dump_elems, map=small)
    finally:
        small.close()
    assert open_fds() == fds


def test_closed_iterator_link(tasks):
    it = link.attach_iter(tasks.dump_tgids)
    it.close()
    with pytest.raises(ClosedError):
        it.open()
    with pytest.raises(ClosedError):
        it.read()
