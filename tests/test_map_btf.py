"""BTF handed to the kernel with maps created alone (cilium's ``MapSpec.Key``/
``Value``, ``Map.Handle``, ``Program.Handle``), on the real kernel.

A value holding a ``struct bpf_spin_lock``, a ``struct bpf_timer`` or a kptr
exists only with BTF: the kernel finds those fields through the map's value
type, so they work (``UpdateFlags.LOCK``) and user space cannot overwrite
them, which is what these tests watch for.
"""

from __future__ import annotations

import errno

import pytest

import ebpf
from ebpf import MapSpec, MapType, UpdateFlags
from ebpf.btf import Int, Member, Pointer, Struct, TypeTag
from ebpf.errors import EBPFError, MapIncompatibleError, NotSupportedError

from conftest import fixture_path

pytestmark = pytest.mark.kernel

U32 = Int("unsigned int", 4)
U64 = Int("unsigned long long", 8)
SPIN_LOCK = Struct("bpf_spin_lock", 4, [Member("val", U32, 0)])
LOCKED = Struct("locked_value", 8, [Member("lock", SPIN_LOCK, 0), Member("count", U32, 32)])


def locked_spec(mtype: MapType = MapType.HASH) -> MapSpec:
    return MapSpec("locked", mtype, 4, 8, 16, key=U32, value=LOCKED)


def test_spin_lock_value_in_a_standalone_map():
    with ebpf.Map(locked_spec()) as m:
        info = m.info()
        assert info.btf_id > 0 and info.btf_key_type_id > 0 and info.btf_value_type_id > 0
        with m.handle() as h:
            assert h.id == info.btf_id
            types = h.spec()
            assert types.type_by_id(info.btf_key_type_id).name == "unsigned int"
            assert types.type_by_id(info.btf_value_type_id).name == "locked_value"
        m.update(1, {"lock": {"val": 0}, "count": 5}, flags=UpdateFlags.LOCK)
        m.update(2, {"lock": {"val": 0}, "count": 6}, flags=UpdateFlags.LOCK | UpdateFlags.NOEXIST)
        got = m.lookup(1, flags=UpdateFlags.LOCK)
        assert (got.count, got.lock.val) == (5, 0)
        assert m.lookup(2, flags=UpdateFlags.LOCK).count == 6
        assert sorted((k, v.count) for k, v in m.items()) == [(1, 5), (2, 6)]


def test_lock_flag_needs_the_btf():
    """The same map without BTF: the kernel knows of no lock (EINVAL)."""
    with ebpf.Map(MapSpec("unlocked", MapType.HASH, 4, 8, 16)) as m:
        assert m.info().btf_id == 0
        with pytest.raises(EBPFError) as info:
            m.update(1, bytes(8), flags=UpdateFlags.LOCK)
        assert info.value.errno == errno.EINVAL
        with pytest.raises(NotSupportedError, match="BTF of map unlocked"):
            m.handle()


def test_the_kernel_keeps_user_space_off_timers_and_kptrs():
    timer = Struct("bpf_timer", 16, [Member("", U64, 0), Member("", U64, 64)])
    timer_value = Struct("timer_value", 24, [Member("t", timer, 0), Member("n", U64, 128)])
    task = Struct("task_struct", 0, [])
    kptr_value = Struct("kptr_value", 16, [Member("task", Pointer(TypeTag("kptr", task)), 0),
                                           Member("n", U64, 64)])
    for value, name in ((timer_value, "t"), (kptr_value, "task")):
        spec = MapSpec(f"special_{name}", MapType.ARRAY, 4, value.size, 1, key=U32, value=value)
        with ebpf.Map(spec) as m:
            assert m.info().btf_value_type_id > 0
            m[0] = b"\xff" * value.size  # the special field's bytes are not copied in
            raw = bytes(ebpf.Map._from_fd(m._dup(), MapSpec(m.name, MapType.ARRAY, 4, value.size, 1))[0])
            special = raw[:16] if name == "t" else raw[:8]
            assert not any(special), raw.hex()
            assert raw[-8:] == b"\xff" * 8  # the plain field is
    # Without BTF all the bytes are stored.
    with ebpf.Map(MapSpec("plain", MapType.ARRAY, 4, 24, 1)) as m:
        m[0] = b"\xff" * 24
        assert m[0] == b"\xff" * 24


def test_types_read_from_an_object_reach_the_kernel():
    spec = ebpf.load_collection_spec(fixture_path("core.o"))
    ms = spec.maps["hash_map"]
    assert ms.key is not None and ms.value is not None
    with ebpf.Map(ms) as m:
        info = m.info()
        assert info.btf_id > 0
        with m.handle() as h:
            types = h.spec()
            assert types.type_by_id(info.btf_key_type_id).name == ms.key.name
            assert types.type_by_id(info.btf_value_type_id).name == ms.value.name
        m[3] = 4
        assert m[3] == 4


def test_sizes_that_disagree_with_the_types_are_refused_before_the_kernel():
    with pytest.raises(MapIncompatibleError, match="value type .* is 8 bytes, value_size is 12") as info:
        ebpf.Map(MapSpec("wrong", MapType.HASH, 4, 12, 4, key=U32, value=LOCKED))
    assert info.value.differences == {"value_size": (12, 8)}
    with pytest.raises(MapIncompatibleError, match="key type"):
        ebpf.Map(MapSpec("wrong", MapType.HASH, 8, 8, 4, key=U32, value=LOCKED))


def test_map_types_without_btf_values_fall_back():
    """As cilium: a type the kernel refuses BTF for is created without it."""
    with ebpf.Map(MapSpec("events", MapType.PERF_EVENT_ARRAY, 4, 4, 2, key=U32, value=U32)) as m:
        assert m.info().btf_id == 0
    with ebpf.Map(MapSpec("queue", MapType.QUEUE, 0, 4, 4, value=U32)) as q:
        q.update(None, 7)
        assert q.lookup() == 7


def test_handle_outlives_nothing_it_should_not():
    """The handle made for the creation is closed at once; the map keeps its
    BTF, and each handle() is a new fd of it."""
    m = ebpf.Map(locked_spec())
    try:
        btf_id = m.info().btf_id
        h1, h2 = m.handle(), m.handle()
        assert h1.fd != h2.fd and h1.id == h2.id == btf_id
        h1.close()
        assert h2.spec().type_by_name("locked_value") is not None
        h2.close()
        assert m.info().btf_id == btf_id
    finally:
        m.close()


def test_program_handle():
    spec = ebpf.load_collection_spec(fixture_path("subprog.o"))
    with ebpf.Collection(spec) as coll:
        prog = coll.programs["uses_subprogs"]
        with prog.handle() as h:
            assert h.id == prog.info().btf_id > 0
            funcs = {f.name for f in h.spec() if isinstance(f, ebpf.btf.Func)}
            assert {"uses_subprogs", "middle", "leaf"} <= funcs
    from ebpf import asm

    plain = ebpf.ProgramSpec("plain", ebpf.ProgramType.SOCKET_FILTER, license="GPL",
                             instructions=[asm.mov_imm(asm.R0, 0), asm.exit()])
    with ebpf.Program(plain) as p:
        with pytest.raises(NotSupportedError, match="BTF of program plain"):
            p.handle()
