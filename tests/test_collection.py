"""Collections on the real kernel: spec edits take effect, globals are live,
pinning, replacements, load_and_assign, verifier errors, no fd leaks."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import pytest

import ebpf
from ebpf import MapType, PinType
from ebpf.errors import (
    ClosedError,
    MapIncompatibleError,
    PermissionDeniedError,
    VerifierError,
)

from conftest import fixture_path

pytestmark = pytest.mark.kernel


def u32(x: int) -> bytes:
    return x.to_bytes(4, "little")


def u64(x: int) -> bytes:
    return x.to_bytes(8, "little")


def raw(v) -> int:
    """Ints whether the map decoded them through BTF or returned bytes."""
    return v if isinstance(v, int) else int.from_bytes(v, "little")


@pytest.fixture
def core():
    spec = ebpf.load_collection_spec(fixture_path("core.o"))
    # The fixture's pinned map needs a pin path; most tests don't care.
    spec.maps["pinned_map"].pinning = PinType.NONE
    return spec


def test_load_run_and_see_values_from_both_sides(core):
    with ebpf.Collection(core) as c:
        r = c.programs["run_syscall"].run()
        assert r.retval == 7  # .rodata ret_value
        assert raw(c.variables["counter"].get()) == 2
        assert raw(c.variables["bss_value"].get()) == 4  # add_twice(counter) in .text
        assert raw(c.variables["custom_value"].get()) == 43
        assert raw(c.maps["hash_map"][1]) == 10
        c.maps["hash_map"][1] = 41
        c.variables["counter"].set(100)
        c.programs["run_syscall"].run()
        assert raw(c.maps["hash_map"][1]) == 42
        assert raw(c.variables["counter"].get()) == 101
        assert raw(c.variables["bss_value"].get()) == 202


def test_rodata_constant_set_on_spec_takes_effect(core):
    core.variables["ret_value"].set(1234)
    with ebpf.Collection(core) as c:
        assert c.programs["run_syscall"].run().retval == 1234
        with pytest.raises(PermissionDeniedError):
            c.variables["ret_value"].set(1)
        assert raw(c.variables["ret_value"].get()) == 1234


def test_loading_never_mutates_the_spec(core):
    before = core.copy()
    with ebpf.Collection(core) as c:
        c.programs["run_syscall"].run()
    assert core == before


def test_map_spec_edits_take_effect(core):
    core.maps["hash_map"].max_entries = 3
    core.maps["array_map"].max_entries = 9
    core.maps["lpm_map"].max_entries = 5
    with ebpf.Collection(core) as c:
        assert c.maps["hash_map"].info().max_entries == 3
        assert c.maps["array_map"].info().max_entries == 9
        assert c.maps["lpm_map"].info().max_entries == 5


def test_map_type_and_flags_edit(core):
    core.maps["hash_map"].type = MapType.LRU_HASH
    core.maps["hash_map"].flags = ebpf.MapFlags.NO_COMMON_LRU
    with ebpf.Collection(core) as c:
        info = c.maps["hash_map"].info()
        assert info.type == MapType.LRU_HASH
        assert info.flags & ebpf.MapFlags.NO_COMMON_LRU


def test_contents_are_written(core):
    core.maps["array_map"].contents = [(2, u64(22)), (3, u64(33))]
    core.maps["hash_map"].contents = [(5, u64(55))]
    with ebpf.Collection(core) as c:
        assert raw(c.maps["array_map"][2]) == 22 and raw(c.maps["array_map"][3]) == 33
        assert raw(c.maps["hash_map"][5]) == 55


def test_init_slots_from_elf(core):
    with ebpf.Collection(core) as c:
        with c.maps["outer_map"][0] as inner:
            assert inner.info().id == c.maps["inner_a"].info().id
        with c.maps["jump_table"][1] as target:
            assert target.info().id == c.programs["tail_target"].info().id
        # The tail call lands in tail_target, which returns XDP_TX.
        assert c.programs["xdp_pass"].run(b"\x01" * 64).retval == 3


def test_deleted_program_and_map_are_not_loaded(core):
    del core.programs["tp_getpid"]
    del core.maps["pinned_map"]
    del core.programs["raw_tp_prog"]
    del core.maps["queue_map"]
    with ebpf.Collection(core) as c:
        assert "tp_getpid" not in c.programs and "pinned_map" not in c.maps
        assert "queue_map" not in c.maps
        assert c.programs["run_syscall"].run().retval == 7


def test_program_edits_take_effect(core):
    # sock_filter ends in "r0 = skb->len; exit": make it "r0 = 5; exit".
    from ebpf import asm

    prog = core.programs["sock_filter"]
    assert prog.instructions[-1].is_exit
    prog.instructions[-2] = asm.mov_imm(asm.R0, 5)
    with ebpf.Collection(core) as c:
        assert c.programs["sock_filter"].run(b"\0" * 20).retval == 5
        assert c.programs["sock_filter"].run(b"\0" * 20).retval == 5
    # Shorter code than the ELF's is loaded on its own.
    prog.instructions = asm.Instructions([asm.mov_imm(asm.R0, 5), asm.exit()])
    with ebpf.Collection(core) as c:
        assert c.programs["sock_filter"].run(b"\0" * 20).retval == 5


def test_program_type_edit(core):
    core.programs["tail_target"].type = ebpf.ProgramType.SOCKET_FILTER
    core.programs["tail_target"].attach_type = ebpf.AttachType.NONE
    del core.maps["jump_table"]  # a prog array may not mix program types
    del core.programs["xdp_pass"]
    with ebpf.Collection(core) as c:
        assert c.programs["tail_target"].info().type == ebpf.ProgramType.SOCKET_FILTER


def test_added_map_and_program():
    spec = ebpf.load_collection_spec(fixture_path("verifier.o"))
    del spec.programs["bad"]
    spec.maps["extra"] = ebpf.MapSpec("extra", MapType.ARRAY, 4, 4, 2, contents=[(1, u32(7))])
    ret9 = bytes([0xB7, 0, 0, 0, 9, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])
    spec.programs["added"] = ebpf.ProgramSpec("added", ebpf.ProgramType.SOCKET_FILTER, instructions=ret9, license="GPL")
    with ebpf.Collection(spec) as c:
        assert raw(c.maps["extra"][1]) == 7
        assert c.programs["added"].run(b"\0" * 20).retval == 9


def test_map_replacement(core):
    with ebpf.Map(ebpf.MapSpec("mine", MapType.HASH, 4, 8, 64)) as mine:
        mine[1] = u64(1000)
        with ebpf.Collection(core, map_replacements={"hash_map": mine}) as c:
            c.programs["run_syscall"].run()
            assert c.maps["hash_map"].info().id == mine.info().id
        assert raw(mine[1]) == 1001  # the program updated the replacement
        assert not mine.closed
    with ebpf.Map(ebpf.MapSpec("bad", MapType.HASH, 4, 4, 64)) as wrong:
        with pytest.raises(MapIncompatibleError) as exc:
            ebpf.Collection(core, map_replacements={"hash_map": wrong})
        assert "value_size" in exc.value.differences


def test_pin_by_name_reuse_and_incompatible(pin_dir):
    spec = ebpf.load_collection_spec(fixture_path("core.o"))
    with ebpf.Collection(spec, pin_path=str(pin_dir)) as c:
        assert (pin_dir / "pinned_map").exists()
        c.maps["pinned_map"][0] = 77
    with ebpf.Collection(spec, pin_path=str(pin_dir)) as c:
        assert raw(c.maps["pinned_map"][0]) == 77  # reused, not recreated
    bad = spec.copy()
    bad.maps["pinned_map"].max_entries = 2
    bad.maps["pinned_map"].value_size = 8
    with pytest.raises(MapIncompatibleError) as exc:
        ebpf.Collection(bad, pin_path=str(pin_dir))
    assert set(exc.value.differences) == {"max_entries", "value_size"}
    assert "max_entries" in str(exc.value) and "value_size" in str(exc.value)


def test_pin_by_name_needs_pin_path():
    spec = ebpf.load_collection_spec(fixture_path("core.o"))
    with pytest.raises(ValueError, match="pin_path"):
        ebpf.Collection(spec)


def test_detach_outlives_collection(core):
    c = ebpf.Collection(core)
    m = c.detach_map("hash_map")
    p = c.detach_program("run_syscall")
    c.close()
    assert c.maps["array_map"].closed and c.programs["sock_filter"].closed
    try:
        m[3] = 3
        assert p.run().retval == 7
    finally:
        m.close()
        p.close()


def test_verifier_error_carries_log():
    spec = ebpf.load_collection_spec(fixture_path("verifier.o"))
    with pytest.raises(VerifierError) as exc:
        ebpf.Collection(spec)
    err = exc.value
    assert err.program == "bad"
    assert any("invalid mem access" in line for line in err.log), err.log
    assert err.errno == 13
    assert not err.truncated


def test_verifier_log_grows_buffer():
    spec = ebpf.load_collection_spec(fixture_path("verifier.o"))
    with pytest.raises(VerifierError) as exc:
        ebpf.Collection(spec, log_size=1024, log_level=2)
    assert any("invalid mem access" in line for line in exc.value.log)
    assert sum(len(x) + 1 for x in exc.value.log) > 1024


def test_log_level_keeps_verifier_log(core):
    with ebpf.Collection(core, log_level=1) as c:
        assert "processed" in c.programs["run_syscall"].verifier_log


class Objs:
    good: ebpf.Program
    good_map: ebpf.Map
    renamed: Annotated[ebpf.Map, "good_map"]


def test_load_and_assign_loads_only_what_is_asked():
    spec = ebpf.load_collection_spec(fixture_path("verifier.o"))
    objs = Objs()
    spec.load_and_assign(objs)
    try:
        assert isinstance(objs.good, ebpf.Program) and isinstance(objs.good_map, ebpf.Map)
        assert objs.good.run(b"\0" * 20).retval == 1
        assert objs.renamed.info().id == objs.good_map.info().id
    finally:
        objs.good.close()
        objs.good_map.close()
        objs.renamed.close()


def test_load_and_assign_loads_dependencies():
    class Only:
        run_syscall: ebpf.Program

    spec = ebpf.load_collection_spec(fixture_path("core.o"))
    objs = spec.load_and_assign(Only())  # pinned_map is not needed: no pin_path
    with objs.run_syscall:
        assert objs.run_syscall.run().retval == 7


def test_load_and_assign_unknown_name():
    class Wrong:
        nope: ebpf.Program

    spec = ebpf.load_collection_spec(fixture_path("verifier.o"))
    with pytest.raises(KeyError, match="nope"):
        spec.load_and_assign(Wrong())


class OptionalObjs:
    good: ebpf.Program | None  # a string under `from __future__ import annotations`
    good_map: Optional[ebpf.Map]
    missing: ebpf.Program | None
    also_missing: Optional[ebpf.Map]


def test_load_and_assign_optional_attributes():
    # `X | None` must be understood on 3.9 too, where the annotation string
    # cannot be evaluated as a whole; absent names become None.
    spec = ebpf.load_collection_spec(fixture_path("verifier.o"))
    objs = spec.load_and_assign(OptionalObjs())
    assert objs.missing is None and objs.also_missing is None
    assert isinstance(objs.good, ebpf.Program) and isinstance(objs.good_map, ebpf.Map)
    with objs.good, objs.good_map:
        assert objs.good.run(b"\0" * 20).retval == 1


def test_closed_variable(core):
    c = ebpf.Collection(core)
    v = c.variables["counter"]
    c.close()
    with pytest.raises(ClosedError):
        v.get()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_fd_leak_over_many_loads():
    spec = ebpf.load_collection_spec(fixture_path("verifier.o"))
    good = spec.copy()
    del good.programs["bad"]
    # Warm caches (feature probes, libbpf) before counting.
    ebpf.Collection(good).close()
    with pytest.raises(VerifierError):
        ebpf.Collection(spec)
    before = _open_fds()
    for _ in range(1000):
        with ebpf.Collection(good) as c:
            c.maps["good_map"][0] = 1
    for _ in range(100):
        with pytest.raises(VerifierError):
            ebpf.Collection(spec)
    assert _open_fds() == before


def test_missing_names_in_a_collection_list_those_present(core):
    with ebpf.Collection(core) as c:
        for table, kind, present in ((c.maps, "map", "hash_map"), (c.programs, "program", "run_syscall"),
                                     (c.variables, "variable", "counter")):
            with pytest.raises(KeyError, match=f"no {kind} 'nope' in this collection") as info:
                table["nope"]
            assert present in str(info.value)
        with pytest.raises(KeyError, match="its maps: .*hash_map"):
            c.detach_map("nope")
        with pytest.raises(KeyError, match="its programs: .*run_syscall"):
            c.detach_program("nope")


def test_load_and_assign_unknown_name_lists_those_present():
    class Wrong:
        nope: ebpf.Variable

    spec = ebpf.load_collection_spec(fixture_path("core.o"))
    with pytest.raises(KeyError, match=r"variable 'nope' is not in the spec \(its variables: .*counter"):
        spec.load_and_assign(Wrong)


class WithVariables:
    run_syscall: ebpf.Program
    counter: ebpf.Variable
    value: Annotated[ebpf.Variable, "bss_value"]
    ret_value: Optional[ebpf.Variable]
    absent: ebpf.Variable | None


def test_load_and_assign_fills_variables(core):
    objs = core.load_and_assign(WithVariables)
    assert objs.absent is None and objs.ret_value is not None
    try:
        assert objs.counter.get() == 1 and objs.ret_value.get() == 7
        objs.counter.set(41)  # live memory the program sees
        assert objs.run_syscall.run().retval == 7
        assert objs.counter.get() == 42
        assert objs.value.get() != 0  # the program wrote it
        with pytest.raises(PermissionDeniedError):
            objs.ret_value.set(1)
    finally:
        objs.run_syscall.close()
        for v in (objs.counter, objs.value, objs.ret_value):
            v.map.close()
