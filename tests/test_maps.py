"""Maps on the real kernel: element operations, special types, pins, errors."""

from __future__ import annotations

import ctypes
import os
import threading

import pytest

import ebpf
from ebpf import MapSpec, MapType, UpdateFlags
from ebpf.errors import (
    ClosedError,
    IterationAbortedError,
    KeyExistError,
    KeyNotExistError,
    MapIncompatibleError,
    MarshalError,
    PermissionDeniedError,
    PinError,
)

pytestmark = pytest.mark.kernel

NCPU = None


def ncpus() -> int:
    from ebpf import _libbpf

    return _libbpf.num_possible_cpus()


def u32(x: int) -> bytes:
    return x.to_bytes(4, "little")


def u64(x: int) -> bytes:
    return x.to_bytes(8, "little")


@pytest.fixture
def hmap():
    with ebpf.Map(MapSpec("test_hash", MapType.HASH, 4, 8, 16)) as m:
        yield m


def test_lookup_update_delete(hmap):
    hmap.update(1, 100)
    assert hmap.lookup(1) == u64(100)
    assert hmap[1] == u64(100)
    hmap[2] = u64(200)
    assert hmap.get(2) == u64(200)
    assert hmap.get(3) is None and hmap.get(3, "d") == "d"
    assert 1 in hmap and 3 not in hmap
    del hmap[1]
    assert 1 not in hmap
    with pytest.raises(KeyNotExistError):
        hmap.lookup(1)
    with pytest.raises(KeyError):  # also a KeyError
        hmap[1]
    with pytest.raises(KeyNotExistError):
        hmap.delete(1)


def test_update_flags(hmap):
    hmap.update(1, 1, UpdateFlags.NOEXIST)
    with pytest.raises(KeyExistError):
        hmap.update(1, 2, UpdateFlags.NOEXIST)
    hmap.update(1, 3, UpdateFlags.EXIST)
    with pytest.raises(KeyNotExistError):
        hmap.update(2, 3, UpdateFlags.EXIST)
    assert hmap[1] == u64(3)
    hmap.put(5, 5)
    assert hmap[5] == u64(5)


def test_lookup_and_delete_and_next_key(hmap):
    for i in range(5):
        hmap[i] = i * 10
    keys = []
    k = hmap.next_key(None)
    while k is not None:
        keys.append(int.from_bytes(k, "little"))
        k = hmap.next_key(k)
    assert sorted(keys) == list(range(5))
    assert hmap.lookup_and_delete(3) == u64(30)
    assert 3 not in hmap


def test_iteration(hmap):
    for i in range(10):
        hmap[i] = i
    items = {int.from_bytes(k, "little"): int.from_bytes(v, "little") for k, v in hmap.items()}
    assert items == {i: i for i in range(10)}
    assert sorted(int.from_bytes(k, "little") for k in hmap) == list(range(10))
    assert sorted(int.from_bytes(v, "little") for v in hmap.values()) == list(range(10))


def test_iteration_survives_concurrent_deletes():
    with ebpf.Map(MapSpec("it_del", MapType.HASH, 4, 4, 1000)) as m:
        for i in range(1000):
            m[i] = i
        seen = set()
        for n, k in enumerate(m.keys()):
            seen.add(k)
            if n == 10:
                for j in range(0, 1000, 2):
                    try:
                        del m[j]
                    except KeyNotExistError:
                        pass
        assert len(seen) >= 10
        remaining = set(m.keys())
        assert remaining == {u32(i) for i in range(1, 1000, 2)}


def test_next_key_iteration_aborts_instead_of_looping():
    # An LPM trie has no batch ops: iteration walks next_key.  A map that
    # keeps changing under the walk must end in IterationAbortedError, not
    # an endless loop or a silent stop.
    spec = MapSpec("it_abort", MapType.LPM_TRIE, 8, 4, 64, flags=1)
    with ebpf.Map(spec) as m:
        for i in range(4):
            m[u32(32) + u32(i)] = i
        n = 0
        with pytest.raises(IterationAbortedError):
            for k in m.keys():
                n += 1
                # Replace the current key by a new one: next_key of a deleted
                # key restarts the walk, so it never reaches the end.
                m.delete(k)
                m[u32(32) + u32(1000 + n)] = 0
        assert n > 4


def test_batch_ops(hmap):
    assert hmap.batch_update([1, 2, 3], [10, 20, 30]) == 3
    items, cursor = hmap.batch_lookup(count=16)
    assert cursor is None
    assert sorted((int.from_bytes(k, "little"), int.from_bytes(v, "little")) for k, v in items) == [(1, 10), (2, 20), (3, 30)]
    assert hmap.batch_delete([1, 2]) == 2
    assert list(hmap.keys()) == [u32(3)]
    with pytest.raises(ValueError):
        hmap.batch_update([1], [1, 2])


def test_batch_lookup_paged():
    with ebpf.Map(MapSpec("paged", MapType.ARRAY, 4, 4, 100)) as m:
        for i in range(100):
            m[i] = i
        got, cursor, pages = [], None, 0
        while True:
            items, cursor = m.batch_lookup(cursor, count=30)
            got += items
            pages += 1
            if cursor is None:
                break
        assert pages >= 4
        assert [int.from_bytes(v, "little") for _, v in got] == list(range(100))


def test_batch_lookup_and_delete(hmap):
    hmap.batch_update([1, 2], [1, 2])
    items, _ = hmap.batch_lookup_and_delete(count=16)
    assert len(items) == 2 and list(hmap.keys()) == []


def test_wrong_sizes_rejected_before_syscall(hmap):
    with pytest.raises(MarshalError):
        hmap.lookup(b"\x01\x02")  # short key: the kernel must never read past it
    with pytest.raises(MarshalError):
        hmap.update(1, b"\x01")
    with pytest.raises(MarshalError):
        hmap.update(1 << 40, 1)
    with pytest.raises(TypeError):
        hmap.update(1.5, 1)
    assert list(hmap.keys()) == []


def test_ctypes_and_bytes_like_keys(hmap):
    hmap[ctypes.c_uint32(7)] = ctypes.c_uint64(70)
    assert hmap[bytearray(u32(7))] == u64(70)

    class K:
        def __bytes__(self):
            return u32(7)

    assert hmap[K()] == u64(70)
    assert hmap[memoryview(u32(7))] == u64(70)


def test_per_cpu_values():
    n = ncpus()
    with ebpf.Map(MapSpec("pcpu", MapType.PERCPU_ARRAY, 4, 4, 2)) as m:
        m[0] = [u32(i) for i in range(n)]
        assert m[0] == [u32(i) for i in range(n)]
        with pytest.raises(MarshalError):
            m[0] = [u32(1)] * (n + 1)
        with pytest.raises(TypeError):
            m[0] = u32(1)


def test_per_cpu_hash_odd_value_size_uses_8_byte_stride():
    n = ncpus()
    with ebpf.Map(MapSpec("pcpu_h", MapType.PERCPU_HASH, 4, 3, 4)) as m:
        vals = [bytes([i, i, i]) for i in range(n)]
        m[1] = vals
        assert m[1] == vals


def test_queue_and_stack():
    with ebpf.Map(MapSpec("q", MapType.QUEUE, 0, 4, 4)) as q:
        q.update(None, 1)
        q.update(None, 2)
        assert q.lookup() == u32(1)  # peek
        assert q.lookup_and_delete() == u32(1)
        assert q.lookup_and_delete() == u32(2)
        with pytest.raises(KeyNotExistError):
            q.lookup_and_delete()
        with pytest.raises(MarshalError):
            q.update(1, 1)
    with ebpf.Map(MapSpec("s", MapType.STACK, 0, 4, 4)) as s:
        s.update(None, 1)
        s.update(None, 2)
        assert s.lookup_and_delete() == u32(2)


def test_lpm_trie():
    with ebpf.Map(MapSpec("lpm", MapType.LPM_TRIE, 8, 4, 16, flags=1)) as m:
        m[u32(8) + bytes([10, 0, 0, 0])] = 1
        m[u32(24) + bytes([10, 1, 2, 0])] = 2
        assert m[u32(32) + bytes([10, 1, 2, 3])] == u32(2)
        assert m[u32(32) + bytes([10, 9, 9, 9])] == u32(1)
        with pytest.raises(KeyNotExistError):
            m[u32(32) + bytes([11, 0, 0, 0])]


def test_map_in_map_values_are_maps():
    inner = MapSpec("inner", MapType.ARRAY, 4, 4, 1)
    with ebpf.Map(MapSpec("outer", MapType.ARRAY_OF_MAPS, 4, 4, 2, inner_map=inner)) as outer, ebpf.Map(inner) as a:
        a[0] = 42
        outer[0] = a
        got = outer[0]
        try:
            assert isinstance(got, ebpf.Map)
            assert got.info().id == a.info().id
            assert got[0] == u32(42)
        finally:
            got.close()
        with pytest.raises(TypeError):
            outer[1] = "nope"


def test_prog_array_values_are_programs():
    spec = ebpf.ProgramSpec("ret1", ebpf.ProgramType.SOCKET_FILTER, instructions=_ret(1), license="GPL")
    with ebpf.Program(spec) as p, ebpf.Map(MapSpec("pa", MapType.PROG_ARRAY, 4, 4, 2)) as pa:
        pa[0] = p
        got = pa[0]
        try:
            assert isinstance(got, ebpf.Program)
            assert got.info().id == p.info().id
        finally:
            got.close()


def _ret(v: int) -> bytes:
    # r0 = v; exit
    return bytes([0xB7, 0, 0, 0]) + v.to_bytes(4, "little") + bytes([0x95, 0, 0, 0, 0, 0, 0, 0])


def test_freeze():
    with ebpf.Map(MapSpec("frz", MapType.ARRAY, 4, 4, 1)) as m:
        m[0] = 1
        m.freeze()
        with pytest.raises(PermissionDeniedError):
            m[0] = 2
        assert m[0] == u32(1)


def test_info_and_clone():
    with ebpf.Map(MapSpec("info_me", MapType.HASH, 4, 8, 7, flags=1)) as m:
        info = m.info()
        assert (info.type, info.key_size, info.value_size, info.max_entries, info.name) == (MapType.HASH, 4, 8, 7, "info_me")
        c = m.clone()
        with c:
            assert c.fd != m.fd and c.info().id == info.id
            c[1] = 5
            assert m[1] == u64(5)
        assert c.closed and not m.closed


def test_closed_map_raises():
    m = ebpf.Map(MapSpec("closed", MapType.ARRAY, 4, 4, 1))
    m.close()
    m.close()  # idempotent
    with pytest.raises(ClosedError):
        m.lookup(0)
    with pytest.raises(ValueError):  # like a closed file
        m[0] = 1
    with pytest.raises(ClosedError):
        m.fd


def test_pin_and_load_pinned(pin_dir):
    path = pin_dir / "m"
    with ebpf.Map(MapSpec("pinme", MapType.ARRAY, 4, 4, 1)) as m:
        m[0] = 9
        m.pin(path)
        assert path.exists()
        with ebpf.load_pinned_map(path) as again:
            assert again[0] == u32(9)
            assert again.type == MapType.ARRAY and again.max_entries == 1
        m.unpin()
        assert not path.exists()


def test_bad_pin_paths(tmp_path, pin_dir):
    with ebpf.Map(MapSpec("badpin", MapType.ARRAY, 4, 4, 1)) as m:
        with pytest.raises(PinError, match="not a bpf filesystem"):
            m.pin(tmp_path / "x")
        with pytest.raises(PinError, match="does not exist"):
            m.pin(pin_dir / "missing" / "x")
        m.pin(pin_dir / "x")
        with pytest.raises(PinError, match="exists"):
            m.pin(pin_dir / "x")
    with pytest.raises(PinError):
        ebpf.load_pinned_map(pin_dir / "nothing")
    with pytest.raises(PinError):
        ebpf.load_pinned_map(tmp_path)


def test_memory_of_mmapable_array():
    spec = MapSpec("mm", MapType.ARRAY, 4, 8, 4, flags=ebpf.MapFlags.MMAPABLE)
    with ebpf.Map(spec) as m:
        mem = m.memory()
        mem[8:16] = u64(77)
        assert m[1] == u64(77)
        m[2] = 5
        assert mem[16:24] == u64(5)
    with ebpf.Map(MapSpec("nomm", MapType.ARRAY, 4, 8, 4)) as m:
        with pytest.raises(ebpf.NotSupportedError):
            m.memory()


def test_map_full_is_clear_error():
    with ebpf.Map(MapSpec("full", MapType.HASH, 4, 4, 2)) as m:
        m[1] = 1
        m[2] = 2
        with pytest.raises(ebpf.EBPFError, match="full"):
            m[3] = 3


def test_threads_share_a_map(hmap):
    errors = []

    def work(base):
        try:
            for i in range(200):
                hmap[base] = i
                assert int.from_bytes(hmap[base], "little") == i
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(b,)) for b in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_name_sanitized_never_fails():
    with ebpf.Map(MapSpec("a name with spaces and way too long!", MapType.ARRAY, 4, 4, 1)) as m:
        assert m.info().name == "a_name_with_spa"


@pytest.mark.kernel
def test_perf_event_array_without_sizes_gets_one_slot_per_cpu():
    """cilium's fixup: key/value 4 bytes, one entry per possible CPU, and the
    Map reports what the kernel created."""
    from ebpf import _libbpf

    with ebpf.Map(MapSpec("perf", MapType.PERF_EVENT_ARRAY)) as m:
        n = _libbpf.num_possible_cpus()
        assert (m.key_size, m.value_size, m.max_entries) == (4, 4, n)
        assert m.info().max_entries == n
