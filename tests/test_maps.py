"""Maps on the real kernel: element operations, special types, pins, errors."""

from __future__ import annotations

import ctypes
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

from conftest import fixture_path as fixture

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
    got = sorted((int.from_bytes(k, "little"), int.from_bytes(v, "little")) for k, v in items)
    assert got == [(1, 10), (2, 20), (3, 30)]
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
        got = (info.type, info.key_size, info.value_size, info.max_entries, info.name)
        assert got == (MapType.HASH, 4, 8, 7, "info_me")
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
        m.fd  # noqa: B018 - reading it raises


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


# -- pins are type-checked and move (issue #11, item 3) -------------------------


def _prog() -> ebpf.Program:
    spec = ebpf.ProgramSpec("pinned_prog", ebpf.ProgramType.SOCKET_FILTER, instructions=_ret(0), license="GPL")
    return ebpf.Program(spec)


def test_load_pinned_map_of_a_pinned_program_says_what_is_there(pin_dir):
    with _prog() as p:
        p.pin(pin_dir / "p")
        with pytest.raises(PinError, match="is a program, not a map") as info:
            ebpf.load_pinned_map(pin_dir / "p")
        assert info.value.found == "program"


def test_load_pinned_program_of_a_pinned_map_says_what_is_there(pin_dir):
    with ebpf.Map(MapSpec("pinned_map", MapType.ARRAY, 4, 4, 1)) as m:
        m.pin(pin_dir / "m")
        with pytest.raises(PinError, match="is a map, not a program") as info:
            ebpf.load_pinned_program(pin_dir / "m")
        assert info.value.found == "map"


def test_load_pinned_outside_bpffs_is_a_pin_error():
    for load in (ebpf.load_pinned_map, ebpf.load_pinned_program):
        with pytest.raises(PinError, match="not a bpf filesystem"):
            load("/etc/passwd")


def test_load_pinned_map_checks_a_given_spec(pin_dir):
    spec = MapSpec("pin_spec", MapType.HASH, 4, 8, 16)
    with ebpf.Map(spec) as m:
        m[1] = 5
        m.pin(pin_dir / "m")
        with ebpf.load_pinned_map(pin_dir / "m", spec=spec) as again:
            assert again[1] == u64(5)
        wrong = spec.copy()
        wrong.value_size, wrong.max_entries = 4, 32
        with pytest.raises(MapIncompatibleError) as info:
            ebpf.load_pinned_map(pin_dir / "m", spec=wrong)
        assert set(info.value.differences) == {"value_size", "max_entries"}


def test_pinning_a_pinned_map_moves_the_pin(pin_dir):
    a, b = pin_dir / "a", pin_dir / "b"
    with ebpf.Map(MapSpec("pin_move", MapType.ARRAY, 4, 4, 1)) as m:
        m[0] = 3
        m.pin(a)
        m.pin(b)
        assert not a.exists() and b.exists()
        assert m.pinned_path == str(b)
        with ebpf.load_pinned_map(b) as again:
            assert again.info().id == m.info().id
        # Never over an existing file, and the old pin stays where it is.
        (pin_dir / "c").mkdir()
        with pytest.raises(PinError):
            m.pin(pin_dir / "c")
        assert b.exists() and m.pinned_path == str(b)
        m.unpin()
        assert not b.exists()


# -- values' errors (issue #11, item 7) -------------------------------------------


@pytest.mark.parametrize("bad", [None, "1", 1.5, [1], object()])
def test_wrong_type_keys_and_values_are_marshal_type_errors(hmap, bad):
    with pytest.raises(MarshalError) as info:
        hmap.update(bad, 1)
    assert isinstance(info.value, TypeError)
    with pytest.raises(MarshalError) as info:
        hmap.lookup(bad)
    assert isinstance(info.value, TypeError)
    with pytest.raises(MarshalError) as info:
        hmap.update(1, bad)
    assert isinstance(info.value, TypeError)
    assert list(hmap.keys()) == []


def test_wrong_type_values_of_btf_maps_are_marshal_type_errors():
    spec = ebpf.load_collection_spec(fixture("btf_values.o"))
    ms = spec.maps["u32_map"]
    with ebpf.Map(MapSpec("btf_u32", MapType.ARRAY, 4, 4, 4, key=ms.key, value=ms.value)) as m:
        for bad in (None, "x", 1.5):
            with pytest.raises(MarshalError) as info:
                m[0] = bad
            assert isinstance(info.value, TypeError)
            with pytest.raises(MarshalError) as info:
                m[bad]
            assert isinstance(info.value, TypeError)


def test_batch_update_length_mismatch_is_a_marshal_error(hmap):
    with pytest.raises(MarshalError, match="2 keys but 1 values"):
        hmap.batch_update([1, 2], [1])


def test_full_hash_map_names_max_entries():
    with ebpf.Map(MapSpec("h2", MapType.HASH, 4, 4, 2)) as m:
        m[1] = 1
        m[2] = 2
        with pytest.raises(ebpf.EBPFError, match=r"map is full \(max_entries 2\)") as info:
            m[3] = 3
        assert info.value.errno == 7  # E2BIG
    with ebpf.Map(MapSpec("a2", MapType.ARRAY, 4, 4, 2)) as m:
        with pytest.raises(ebpf.EBPFError, match=r"index 5 is out of range \(max_entries 2\)"):
            m[5] = 1


def test_negative_int_keys_are_refused_unless_the_key_is_signed():
    """One rule everywhere: a slot is unsigned unless its BTF type is a
    signed integer; a negative int never wraps silently."""
    spec = ebpf.load_collection_spec(fixture("btf_values.o"))
    u32_t, s16_t = spec.maps["u32_map"].value, spec.maps["s16_map"].value
    with ebpf.Map(MapSpec("neg_plain", MapType.HASH, 4, 4, 4)) as plain, \
            ebpf.Map(MapSpec("neg_u32", MapType.HASH, 4, 4, 4, key=u32_t)) as typed:
        for m in (plain, typed):
            for call in (lambda m=m: m.update(-1, 1), lambda m=m: m.lookup(-1), lambda m=m: m.delete(-1),
                         lambda m=m: m.batch_update([-1], [1]), lambda m=m: m.update({-1: 1}), lambda m=m: -1 in m):
                with pytest.raises(MarshalError, match="-1 does not fit"):
                    call()
            assert list(m.keys()) == []
            m.update(2**32 - 1, 1)  # the largest unsigned key is fine
            assert (2**32 - 1) in m
    with ebpf.Map(MapSpec("neg_s16", MapType.HASH, 2, 4, 4, key=s16_t)) as signed:
        signed[-1] = 7
        assert signed[-1] == u32(7)
        assert list(signed.keys()) == [-1]
        with pytest.raises(MarshalError):
            signed[2**15] = 1


def test_update_without_a_value_is_a_marshal_type_error(hmap):
    with pytest.raises(MarshalError) as info:
        hmap.update(1)
    assert isinstance(info.value, TypeError)


def test_ctypes_keys_of_the_wrong_size_are_refused(hmap):
    with pytest.raises(MarshalError, match="expected 4 bytes, got 2"):
        hmap[ctypes.c_uint16(1)] = 1
    hmap[ctypes.c_uint32(1)] = ctypes.c_uint64(9)
    assert hmap[ctypes.c_uint32(1)] == u64(9)
    with pytest.raises(MarshalError, match="expected 8 bytes, got 4"):
        hmap[1] = ctypes.c_uint32(1)


# -- Map is a MutableMapping (issue #15, item 4) --------------------------------


def test_map_is_a_mutable_mapping(hmap):
    import collections.abc

    assert isinstance(hmap, collections.abc.MutableMapping)
    assert len(hmap) == 0 and not hmap
    hmap.update({1: 10, 2: 20})
    hmap.update([(3, 30)])
    assert len(hmap) == 3 and hmap
    assert hmap.pop(3) == u64(30) and 3 not in hmap
    assert hmap.pop(3, "gone") == "gone"
    assert hmap.setdefault(4, u64(40)) == u64(40) and hmap.setdefault(4, 1) == u64(40)
    k, v = hmap.popitem()
    assert int.from_bytes(v, "little") == int.from_bytes(k, "little") * 10
    hmap.clear()
    assert len(hmap) == 0 and list(hmap.items()) == []
    with pytest.raises(KeyError):
        hmap.popitem()
    # Still a handle: identity equality, hashable.
    with ebpf.Map(MapSpec("other", MapType.HASH, 4, 8, 16)) as other:
        assert hmap == hmap and hmap != other and len({hmap: 1, other: 2}) == 2


def test_len_and_clear_of_array_maps():
    with ebpf.Map(MapSpec("arr_len", MapType.ARRAY, 4, 4, 8)) as m:
        assert len(m) == 8 and m  # every index of an array exists
        with pytest.raises(ebpf.NotSupportedError):
            m.clear()


def test_len_counts_by_iteration_without_batches():
    with ebpf.Map(MapSpec("lpm_len", MapType.LPM_TRIE, 8, 4, 16, flags=1)) as m:
        assert len(m) == 0
        for i in range(5):
            m[u32(32) + bytes([10, 0, 0, i])] = i
        assert len(m) == 5
        m.clear()
        assert len(m) == 0


def test_update_mapping_on_maps_without_batches():
    with ebpf.Map(MapSpec("lpm_upd", MapType.LPM_TRIE, 8, 4, 16, flags=1)) as m:
        m.update({u32(32) + bytes([10, 0, 0, i]): i for i in range(3)})
        assert sorted(int.from_bytes(v, "little") for v in m.values()) == [0, 1, 2]


def test_update_mapping_writes_everything_in_batches():
    n = 100_000
    with ebpf.Map(MapSpec("upd_many", MapType.HASH, 4, 8, n + 10)) as m:
        m.update({i: i * 3 for i in range(n)})
        assert len(m) == n
        assert m[n - 1] == u64((n - 1) * 3)
        assert m.batch_update(list(range(n)), [bytes(8)] * n) == n
        assert m[7] == bytes(8)
        # The kernel's batches take no NOEXIST/EXIST: update(mapping) writes
        # entry by entry then, batch_update says so.
        with pytest.raises(ebpf.KeyExistError):
            m.update({n + 1: 1, 1: 2}, flags=UpdateFlags.NOEXIST)
        assert m[n + 1] == u64(1) and m[1] == bytes(8)
        with pytest.raises(ebpf.NotSupportedError, match="LOCK only"):
            m.batch_update([1], [1], flags=UpdateFlags.NOEXIST)


def test_update_mapping_into_a_full_map_says_how_far_it_got():
    with ebpf.Map(MapSpec("upd_full", MapType.HASH, 4, 4, 4)) as m:
        with pytest.raises(ebpf.EBPFError, match=r"full .*after writing 4 of 6 entries"):
            m.update({i: i for i in range(6)})
        assert len(m) == 4


# -- iteration abort, as cilium's MapIterator (issue #15, item 4) ----------------


def test_iteration_that_keeps_restarting_aborts_after_max_entries_plus_one_keys():
    spec = MapSpec("it_restart", MapType.LPM_TRIE, 8, 4, 16, flags=1)
    with ebpf.Map(spec) as m:
        for i in range(4):
            m[u32(32) + u32(i)] = i
        n = 0
        with pytest.raises(IterationAbortedError, match="max_entries 16"):
            for k in m.keys():
                n += 1
                m.delete(k)  # next_key of a deleted key restarts the walk
                m[u32(32) + u32(1000 + n)] = 0
        assert n == spec.max_entries + 1


def test_full_iteration_of_a_full_map_does_not_abort():
    with ebpf.Map(MapSpec("it_full", MapType.LPM_TRIE, 8, 4, 8, flags=1)) as m:
        for i in range(8):
            m[u32(32) + u32(i)] = i
        assert len(list(m.items())) == 8
