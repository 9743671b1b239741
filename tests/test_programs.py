"""Programs on the real kernel: hand-built with ebpf.asm, loaded alone,
run with BPF_PROG_TEST_RUN, pinned, and refused with clear errors."""

from __future__ import annotations

import struct

import pytest

import ebpf
from ebpf import MapSpec, MapType, ProgramSpec, ProgramType, asm
from ebpf.asm import R0, R1, R2, R3, R6, R10
from ebpf.errors import ClosedError, NotSupportedError, PermissionDeniedError, PinError, VerifierError

from conftest import fixture_path

pytestmark = pytest.mark.kernel


def prog(insns, ptype=ProgramType.SOCKET_FILTER, **kw) -> ProgramSpec:
    return ProgramSpec("test_prog", ptype, instructions=asm.Instructions(insns), license="GPL", **kw)


def test_return_value():
    with ebpf.Program(prog([asm.mov_imm(R0, 42), asm.exit()])) as p:
        assert p.run(b"\0" * 14).retval == 42


def test_counter_through_helper():
    counter = [
        asm.store_imm(R10, -4, 0, 4),  # key = 0
        asm.mov_reg(R2, R10),
        asm.add_imm(R2, -4),
        asm.load_map_ptr(R1, "counts"),
        asm.call(asm.Helper.map_lookup_elem),
        asm.jeq_imm(R0, 0, "out"),
        asm.mov_imm(R1, 1),
        asm.atomic_add(R0, R1, 0, 8),
        asm.mov_imm(R0, 1).with_symbol("out"),
        asm.exit(),
    ]
    with ebpf.Map(MapSpec("counts", MapType.ARRAY, 4, 8, 1)) as counts:
        with ebpf.Program(prog(counter), maps={"counts": counts}) as p:
            for _ in range(5):
                assert p.run(b"\0" * 14).retval == 1
        assert int.from_bytes(counts[0], "little") == 5


def test_missing_map_reference_is_typed_error():
    insns = [asm.load_map_ptr(R1, "absent"), asm.mov_imm(R0, 0), asm.exit()]
    with pytest.raises(asm.MissingMapError):
        ebpf.Program(prog(insns))


def test_bounded_loop():
    # r0 = sum(1..10) with a backward jump the verifier must bound.
    loop = [
        asm.mov_imm(R0, 0),
        asm.mov_imm(R1, 1),
        asm.add_reg(R0, R1).with_symbol("loop"),
        asm.add_imm(R1, 1),
        asm.jle_imm(R1, 10, "loop"),
        asm.exit(),
    ]
    with ebpf.Program(prog(loop)) as p:
        assert p.run(b"\0" * 14).retval == 55


def test_tail_call():
    with ebpf.Program(prog([asm.mov_imm(R0, 77), asm.exit()])) as target, ebpf.Map(
        MapSpec("jmp", MapType.PROG_ARRAY, 4, 4, 1)
    ) as table:
        table[0] = target
        caller = [
            asm.mov_reg(R6, R1),
            asm.load_map_ptr(R2, "jmp"),
            asm.mov_imm(R3, 0),
            asm.call(asm.Helper.tail_call),
            asm.mov_imm(R0, 1),  # only reached if the tail call fails
            asm.exit(),
        ]
        with ebpf.Program(prog(caller), maps={"jmp": table}) as p:
            assert p.run(b"\0" * 14).retval == 77
            del table[0]
            assert p.run(b"\0" * 14).retval == 1


def test_atomic_add_seen_from_python():
    body = [
        asm.load_map_value(R1, "glob", 0),
        asm.mov_imm(R2, 3),
        asm.atomic_add(R1, R2, 8, 8),
        asm.mov_imm(R0, 0),
        asm.exit(),
    ]
    with ebpf.Map(MapSpec("glob", MapType.ARRAY, 4, 16, 1, flags=ebpf.MapFlags.MMAPABLE)) as g:
        with ebpf.Program(prog(body), maps={"glob": g}) as p:
            p.run(b"\0" * 14)
            p.run(b"\0" * 14)
        assert int.from_bytes(g[0][8:16], "little") == 6


def test_run_data_ctx_and_benchmark():
    core = ebpf.load_collection_spec(fixture_path("core.o"))
    del core.maps["pinned_map"], core.programs["tp_getpid"]
    with ebpf.Collection(core) as c:
        xdp = c.programs["xdp_pass"]
        r = xdp.run(bytes([1]) + b"\0" * 63)
        assert r.data[0] == 2  # the program incremented the first byte
        assert len(r.data) == 64
        retval, ns = xdp.benchmark(b"\0" * 64, repeat=100)
        assert retval == 3 and ns >= 0
        sock = c.programs["sock_filter"]
        assert sock.run(b"\0" * 40).retval == 40 - 14  # skb->len, Ethernet header pulled
        # raw_tp and syscall programs run only once per call on this kernel.
        with pytest.raises(NotSupportedError):
            c.programs["raw_tp_prog"].run(repeat=2)


def test_elf_program_alone_with_maps():
    spec = ebpf.load_collection_spec(fixture_path("verifier.o"))
    with ebpf.Map(spec.maps["good_map"]) as m:
        with ebpf.Program(spec.programs["good"], maps={"good_map": m}) as p:
            assert p.run(b"\0" * 14).retval == 1
            assert p.info().map_ids == [m.info().id]


def test_verifier_error_and_log():
    bad = [asm.exit()]  # r0 never written
    with pytest.raises(VerifierError) as exc:
        ebpf.Program(prog(bad))
    assert any("R0 !read_ok" in line for line in exc.value.log)
    with ebpf.Program(prog([asm.mov_imm(R0, 0), asm.exit()]), log_level=2) as p:
        assert "processed" in p.verifier_log


def test_verifier_log_too_small_is_grown():
    with ebpf.Program(prog([asm.mov_imm(R0, 0), asm.exit()]), log_level=2, log_size=64) as p:
        assert "processed" in p.verifier_log


def test_bad_specs_are_clear():
    with pytest.raises(ValueError, match="license"):
        ebpf.Program(ProgramSpec("x", ProgramType.SOCKET_FILTER,
                                 instructions=asm.Instructions([asm.mov_imm(R0, 0), asm.exit()])))
    with pytest.raises(ValueError, match="no instructions"):
        ebpf.Program(ProgramSpec("x", ProgramType.SOCKET_FILTER, instructions=b"", license="GPL"))


def test_info_pin_clone_close(pin_dir):
    p = ebpf.Program(prog([asm.mov_imm(R0, 3), asm.exit()]))
    info = p.info()
    assert info.type == ProgramType.SOCKET_FILTER and info.name == "test_prog" and info.gpl_compatible
    p.pin(pin_dir / "p")
    with ebpf.load_pinned_program(pin_dir / "p") as again:
        assert again.info().id == info.id
        assert again.run(b"\0" * 14).retval == 3
    c = p.clone()
    p.unpin()
    assert not (pin_dir / "p").exists()
    p.close()
    with pytest.raises(ClosedError):
        p.run()
    with c:
        assert c.run(b"\0" * 14).retval == 3
    with pytest.raises(PinError):
        ebpf.load_pinned_program(pin_dir / "nothing")


def test_tracing_programs_refused_clearly():
    # fentry needs an attach target; this kernel refuses tracing programs
    # under lockdown (EPERM, empty log). Either it loads, or the error says so.
    spec = ProgramSpec(
        "fentry_test",
        ProgramType.TRACING,
        attach_type=ebpf.AttachType.TRACE_FENTRY,
        attach_to="do_nanosleep",
        instructions=asm.Instructions([asm.mov_imm(R0, 0), asm.exit()]),
        license="GPL",
    )
    try:
        p = ebpf.Program(spec)
    except PermissionDeniedError as exc:
        assert "lockdown" in str(exc) and exc.errno == 1
    else:
        p.close()


@pytest.mark.kernel
def test_run_syscall_program_with_ctx_written_back():
    """Syscall programs take their context in ctx_in and write it back there
    (the kernel refuses a ctx_out for them): run() returns what they wrote."""
    insns = asm.Instructions([
        asm.load_mem(asm.R2, asm.R1, 0, 4),
        asm.add_imm(asm.R2, 1),
        asm.store_mem(asm.R1, 4, asm.R2, 4),  # ctx[1] = ctx[0] + 1
        asm.mov_imm(asm.R0, 7),
        asm.exit(),
    ])
    spec = ebpf.ProgramSpec("ctx_back", ebpf.ProgramType.SYSCALL, instructions=insns, license="GPL",
                            flags=1 << 4)  # BPF_F_SLEEPABLE, as libbpf loads SEC("syscall")
    with ebpf.Program(spec) as prog:
        res = prog.run(ctx=struct.pack("<II", 41, 0))
    assert res.retval == 7
    assert struct.unpack("<II", res.ctx) == (41, 42)


@pytest.mark.kernel
def test_run_raw_tracepoint_with_ctx():
    insns = asm.Instructions([asm.load_mem(asm.R0, asm.R1, 0, 8), asm.exit()])  # return args[0]
    spec = ebpf.ProgramSpec("rawtp_ctx", ebpf.ProgramType.RAW_TRACEPOINT, instructions=insns, license="GPL")
    with ebpf.Program(spec) as prog:
        res = prog.run(ctx=struct.pack("<Q", 99))
    assert res.retval == 99


def test_a_plain_list_of_instructions_loads():
    spec = ProgramSpec("from_list", ProgramType.SOCKET_FILTER, instructions=[asm.mov_imm(R0, 2), asm.exit()],
                       license="GPL")
    assert type(spec.instructions) is asm.Instructions
    with ebpf.Program(spec) as p:
        assert p.run(b"\0" * 14).retval == 2
