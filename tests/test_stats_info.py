"""Program statistics (BPF_ENABLE_STATS), what map and program infos report,
and program tags computed from specs -- on the real kernel, plus the tag
arithmetic without one."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

import ebpf
from ebpf import MapSpec, MapType, ProgramSpec, ProgramType, asm
from ebpf.asm import R0, R1, R2, R10
from ebpf.errors import ClosedError

from conftest import fixture_path

PACKET = bytes(64)


def _spec(insns, name: str = "stats_prog") -> ProgramSpec:
    return ProgramSpec(name, ProgramType.SOCKET_FILTER, instructions=asm.Instructions(insns), license="GPL")


def _ret(value: int) -> ProgramSpec:
    return _spec([asm.mov_imm(R0, value), asm.exit()])


def _counter(map_name: str = "counts") -> ProgramSpec:
    return _spec([
        asm.store_imm(R10, -4, 0, 4),
        asm.mov_reg(R2, R10),
        asm.add_imm(R2, -4),
        asm.load_map_ptr(R1, map_name),
        asm.call(asm.Helper.map_lookup_elem),
        asm.jeq_imm(R0, 0, "out"),
        asm.mov_imm(R1, 1),
        asm.atomic_add(R0, R1, 0, 8),
        asm.mov_imm(R0, 1).with_symbol("out"),
        asm.exit(),
    ])


# --------------------------------------------------------------------------
# Statistics


@pytest.mark.kernel
def test_stats_count_real_runs():
    with ebpf.Program(_ret(3)) as prog:
        before = prog.stats()
        with ebpf.enable_stats() as stats:
            assert isinstance(stats, ebpf.StatsHandle) and stats.fd >= 0
            for _ in range(7):
                assert prog.run(PACKET).retval == 3
            s = prog.stats()
            assert s.run_count == before.run_count + 7
            assert s.run_time_ns > before.run_time_ns
            assert s.recursion_misses == 0
            # One test run with repeat=10 runs the program ten times.
            prog.run(PACKET, repeat=10)
            assert prog.stats().run_count == before.run_count + 17
        assert stats.closed
        with pytest.raises(ClosedError):
            _ = stats.fd
        stats.close()  # once only
        # What was counted stays; the info carries the same counters.
        after = prog.stats()
        assert after.run_count >= before.run_count + 17
        info = prog.info()
        assert (info.run_count, info.recursion_misses) == (after.run_count, after.recursion_misses)


@pytest.mark.kernel
def test_stats_handle_finalizer_and_closed_program():
    h = ebpf.enable_stats()
    fd = h.fd
    del h  # the finalizer closes the fd
    with pytest.raises(OSError):
        os.fstat(fd)
    prog = ebpf.Program(_ret(0))
    prog.close()
    with pytest.raises(ClosedError):
        prog.stats()


@pytest.mark.kernel
def test_stats_unknown_kind_is_not_supported():
    with pytest.raises(ebpf.NotSupportedError, match="BPF_ENABLE_STATS"):
        ebpf.enable_stats(kind=12345)


# --------------------------------------------------------------------------
# Infos


@pytest.mark.kernel
def test_map_info_frozen_memlock_btf():
    with ebpf.Map(MapSpec("info_map", MapType.ARRAY, 4, 8, 4)) as m:
        info = m.info()
        assert info.frozen is False
        assert info.memlock is not None and info.memlock > 0
        assert info.btf_id == 0
        m.freeze()
        assert m.info().frozen is True
    spec = ebpf.load_collection_spec(fixture_path("core.o"))
    for ms in spec.maps.values():
        ms.pinning = ebpf.PinType.NONE
    with ebpf.Collection(spec) as coll:
        info = coll.maps["hash_map"].info()
        assert info.btf_id > 0 and info.btf_key_type_id > 0 and info.btf_value_type_id > 0
        assert coll.maps[".rodata"].info().frozen is True  # libbpf freezes .rodata
        assert coll.maps["hash_map"].info().frozen is False


def _boottime_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


@pytest.mark.kernel
def test_program_info_sizes_counts_and_ids():
    with ebpf.Map(MapSpec("counts", MapType.ARRAY, 4, 8, 1)) as counts:
        before = _boottime_ns()
        spec = _counter()
        with ebpf.Program(spec, maps={"counts": counts}) as prog:
            info = prog.info()
    assert len(info.map_ids) == 1
    assert info.xlated_size > 0 and info.xlated_size % 8 == 0
    assert info.verified_instructions >= len(spec.encoded_instructions()) // 8 - 1  # lddw verified once
    assert info.created_by_uid == os.getuid()
    assert before <= info.load_time_ns <= _boottime_ns()
    assert info.memlock is not None and info.memlock > 0
    assert info.func_info_count == 0 and info.line_info_count == 0  # hand-built: no BTF
    jit = open("/proc/sys/net/core/bpf_jit_enable").read().strip()
    if jit != "0":
        assert info.jited_size > 0
        if info.jited_ksyms:  # hidden under kernel.kptr_restrict
            assert len(info.jited_ksyms) == 1 and info.jited_ksyms[0] > 0
            assert info.jited_func_lengths == [info.jited_size]


@pytest.mark.kernel
def test_program_info_map_ids_match_maps():
    with ebpf.Map(MapSpec("counts", MapType.ARRAY, 4, 8, 1)) as counts:
        with ebpf.Program(_counter(), maps={"counts": counts}) as prog:
            assert prog.info().map_ids == [counts.info().id]


@pytest.mark.kernel
def test_program_info_func_and_line_info_from_elf():
    spec = ebpf.load_collection_spec(fixture_path("subprog.o"))
    with ebpf.Collection(spec) as coll:
        info = coll.programs["uses_subprogs"].info()
        # uses_subprogs calls middle, which calls leaf: one FUNC record each.
        assert info.func_info_count == 3
        assert info.line_info_count > 0
        assert info.btf_id > 0
        if info.jited_ksyms:
            assert len(info.jited_ksyms) == len(info.jited_func_lengths) == 3
            assert sum(info.jited_func_lengths) == info.jited_size


# --------------------------------------------------------------------------
# Tags


def test_tag_is_the_kernels_hash_with_map_fds_zeroed():
    """bpf_prog_calc_tag: the map fd of a map load and the fd and value
    offset of a map value load are hashed as zero."""
    a = _spec([asm.load_map_ptr(R1, 3), asm.load_map_value(R2, 4, 16), asm.mov_imm(R0, 1), asm.exit()])
    b = _spec([asm.load_map_ptr(R1, 9), asm.load_map_value(R2, 7, 32), asm.mov_imm(R0, 1), asm.exit()])
    c = _spec([asm.load_map_ptr(R1, 3), asm.load_map_value(R2, 4, 16), asm.mov_imm(R0, 2), asm.exit()])
    assert a.tag() == b.tag() != c.tag()
    assert a.tag("sha256") == b.tag("sha256") != c.tag("sha256")
    zeroed = bytearray(a.encoded_instructions())
    for off in (4, 12, 20, 28):
        zeroed[off:off + 4] = bytes(4)
    assert a.tag() == hashlib.sha1(zeroed).hexdigest()[:16]
    assert a.tag("sha256") == hashlib.sha256(zeroed).hexdigest()[:16]
    # A 64-bit constant that is not a map reference is hashed as it is.
    d = _spec([asm.Instruction(0x18, 1, 0, 0, 5 << 32), asm.mov_imm(R0, 1), asm.exit()])
    e = _spec([asm.Instruction(0x18, 1, 0, 0, 6 << 32), asm.mov_imm(R0, 1), asm.exit()])
    assert d.tag() != e.tag()
    assert len(a.tag()) == 16 and int(a.tag(), 16) >= 0
    with pytest.raises(ValueError, match="algorithm"):
        a.tag("md5")


def test_tag_of_bytes_and_instructions_agree():
    insns = asm.Instructions([asm.mov_imm(R0, 7), asm.exit()])
    raw = ProgramSpec("x", ProgramType.SOCKET_FILTER, instructions=bytes(insns.encode()), license="GPL")
    assert _spec(insns).tag() == raw.tag()
    assert ebpf.ProgramSpec("x", instructions=insns).tag("sha256") == raw.tag("sha256")


@pytest.mark.kernel
def test_tag_matches_the_loaded_program():
    with ebpf.Map(MapSpec("counts", MapType.ARRAY, 4, 8, 1)) as counts:
        spec = _counter()
        with ebpf.Program(spec, maps={"counts": counts}) as prog:
            info = prog.info()
            assert info.tag in (spec.tag("sha1"), spec.tag("sha256"))
            assert spec.compatible(info) and spec.compatible(info.tag)
            other = _counter()
            other.instructions[-2] = asm.mov_imm(R0, 2).with_symbol("out")
            assert not other.compatible(info)


@pytest.mark.kernel
@pytest.mark.parametrize("obj", ["core.o", "subprog.o", "skeleton.o", "static_globals.o"])
def test_tag_matches_every_program_of_a_collection(obj):
    """Programs loaded through libbpf, subprograms and map loads included:
    the spec's linked instructions are what libbpf loads."""
    spec = ebpf.load_collection_spec(fixture_path(obj))
    for ms in spec.maps.values():
        ms.pinning = ebpf.PinType.NONE
    with ebpf.Collection(spec) as coll:
        assert coll.programs
        for name, prog in coll.programs.items():
            assert spec.programs[name].compatible(prog.info()), name


@pytest.mark.kernel
def test_tag_of_program_loaded_alone_from_elf():
    """Loaded with bpf_prog_load from the spec's linked instructions (maps
    created from the spec): the same tag as through libbpf."""
    spec = ebpf.load_collection_spec(fixture_path("subprog.o"))
    ps = spec.programs["uses_loop"]
    maps = {k: ebpf.Map(spec.maps[k]) for k in spec._origin.references["uses_loop"]}
    try:
        with ebpf.Program(ps, maps=maps) as prog:
            alone = prog.info().tag
        assert ps.compatible(alone)
        with ebpf.Collection(spec) as coll:
            assert coll.programs["uses_loop"].info().tag == alone
    finally:
        for m in maps.values():
            m.close()


@pytest.mark.kernel
def test_program_info_reads_a_cut_name_whole_from_btf():
    """The kernel keeps 15 bytes of a name; cilium reads the rest from the
    FUNC of the program's first instruction, and so does info()."""
    from ebpf import _syscall

    spec = ebpf.load_collection_spec(fixture_path("link_net.o"))
    with ebpf.Collection(spec, _programs={"sk_lookup_redirect"}) as coll:
        prog = coll.programs["sk_lookup_redirect"]
        assert _syscall.prog_info(prog.fd).name == b"sk_lookup_redir"
        assert prog.info().name == "sk_lookup_redirect"
    # Without BTF the kernel's 15 bytes are all there is.
    with ebpf.Program(_spec([asm.mov_imm(R0, 0), asm.exit()], name="a_rather_long_program_name")) as p:
        assert p.info().name == "a_rather_long_p"
