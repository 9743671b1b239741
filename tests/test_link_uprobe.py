"""Uprobes, uretprobes and USDT probes on a real user binary.

``fixtures/uprobe_target.c`` is started as a subprocess: it prints its pid
and waits for a line on stdin, so probes (pid-filtered ones included) are in
place before it calls its targets COUNT times.  The BPF programs in
``fixtures/uprobe.bpf.c`` count their runs and record what they saw in the
``hits`` and ``values`` maps, which the tests read back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import time
from typing import Iterator, Optional

import pytest

import ebpf
from ebpf import MapSpec, MapType, ProgramSpec, ProgramType, asm
from ebpf.asm import R0, R1, R2, R3, R4, R6, R10
from ebpf.errors import ClosedError, EBPFError, InvalidObjectError, NotSupportedError
from ebpf.link import open_executable
from ebpf.link.uprobe import ExecutableNotFoundError, ProcessNotFoundError, SymbolNotFoundError
from ebpf.link.usdt import SPEC_SIZE, ArgType, ProbeNotFoundError, USDTLink, encode_spec, parse_arg

from conftest import fixture_path

COUNT = 5
VALUE = 42

# indexes of fixtures/uprobe.bpf.c
HIT_UPROBE, HIT_URETPROBE, HIT_USDT_ARGS, HIT_USDT_GUARDED, HIT_USDT_TWICE, HIT_USDT_LIB = range(6)
(V_PARM1, V_COOKIE, V_IP, V_PID, V_RET, V_RET_COOKIE, V_ARG_CNT, V_USDT_COOKIE, V_GUARDED, V_TWICE_SUM,
 V_LIB_ARG, V_ARG0) = range(12)


_BIN_DIR: Optional[str] = None


@pytest.fixture(scope="module", autouse=True)
def private_binaries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Private copies of the target binaries.

    A uprobe is set on an inode and fires in every process that runs it;
    with copies, another test run on this machine (running the same fixture
    at the same time) cannot add to this run's counters.
    """
    global _BIN_DIR
    d = tmp_path_factory.mktemp("uprobe_bins")
    for name in ("uprobe_target", "uprobe_target_nopie", "libuprobe_target.so"):
        shutil.copy2(fixture_path(name), d / name)
    _BIN_DIR = str(d)
    try:
        yield
    finally:
        _BIN_DIR = None
        shutil.rmtree(d, ignore_errors=True)


def target_bin(name: str = "uprobe_target") -> str:
    assert _BIN_DIR is not None
    return os.path.join(_BIN_DIR, name)


def load_spec() -> ebpf.CollectionSpec:
    return ebpf.load_collection_spec(fixture_path("uprobe.o"))


@pytest.fixture
def coll() -> Iterator[ebpf.Collection]:
    c = ebpf.Collection(load_spec())
    try:
        yield c
    finally:
        c.close()


def hits(c: ebpf.Collection, i: int) -> int:
    return int(c.maps["hits"][i])


def val(c: ebpf.Collection, slot: int) -> int:
    """A values slot as a signed 64-bit number."""
    v = int(c.maps["values"][slot])
    return v - (1 << 64) if v >= 1 << 63 else v


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


class Target:
    """One run of the fixture binary, stopped before it calls anything."""

    def __init__(self, binary: str, mode: str = "run", count: int = COUNT, value: int = VALUE) -> None:
        self.proc = subprocess.Popen([binary, mode, str(count), str(value)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        if len(line) != 4 or line[0] != "pid":
            self.kill()
            raise AssertionError(f"target did not start: {line!r} {self.proc.stderr.read()!r}")
        self.pid = int(line[1])
        self.asm_address = int(line[3], 16)

    def go(self) -> str:
        """Let it run to the end; returns its last output line."""
        out, err = self.proc.communicate("go\n", timeout=120)
        assert self.proc.returncode == 0, err
        return out.strip()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                with contextlib.suppress(Exception):
                    f.close()


@contextlib.contextmanager
def target(binary: Optional[str] = None, mode: str = "run", count: int = COUNT, value: int = VALUE) -> Iterator[Target]:
    t = Target(binary or target_bin(), mode, count, value)
    try:
        yield t
    finally:
        t.kill()


def run_target(binary: Optional[str] = None, mode: str = "run", count: int = COUNT, value: int = VALUE) -> str:
    with target(binary, mode, count, value) as t:
        return t.go()


def guarded_count(output: str) -> int:
    words = output.split()
    return int(words[words.index("guarded") + 1])


# --------------------------------------------------------------------------
# Pure Python: ELF symbols, notes, argument specs


def test_symbol_addresses_are_file_offsets():
    pie = open_executable(target_bin())
    nopie = open_executable(target_bin("uprobe_target_nopie"))
    lib = open_executable(target_bin("libuprobe_target.so"))
    assert pie.is_pie and lib.is_pie and not nopie.is_pie
    for exe in (pie, nopie):
        assert {"target_value", "target_add", "target_asm", "main"} <= set(exe.symbols())
    # Non-PIE symbols are absolute addresses (0x40xxxx); the kernel wants
    # the offset in the file, which is far smaller.
    sym = nopie._image.functions["target_value"]
    assert sym.value >= 0x400000
    assert nopie.address("target_value") == sym.value - 0x400000
    with open(nopie.path, "rb") as f:
        f.seek(nopie.address("target_asm"))
        assert f.read(4) == bytes.fromhex("90 48 89 f8")  # nop; mov %rdi,%rax
    assert lib.address("lib_value") > 0


def test_usdt_notes():
    exe = open_executable(target_bin())
    probes = {(p.provider, p.name): p for p in exe.usdt_probes()}
    assert set(probes) == {("uprobe_target", "args"), ("uprobe_target", "guarded"), ("uprobe_target", "twice")}
    assert len([p for p in exe.usdt_probes() if p.name == "twice"]) == 2
    args = probes[("uprobe_target", "args")]
    # The semaphore is in .probes, a data segment mapped at another offset
    # than its address: the kernel needs the file offset.
    assert args.semaphore and args.semaphore_offset and args.semaphore_offset != args.semaphore
    kinds = [a.type for a in args.arguments()]
    assert kinds == [ArgType.REG, ArgType.REG, ArgType.CONST, ArgType.REG_DEREF, ArgType.REG_DEREF, ArgType.REG]
    with open(exe.path, "rb") as f:
        f.seek(args.offset)
        assert f.read(1) == b"\x90"  # the probe's nop
    lib = open_executable(target_bin("libuprobe_target.so"))
    (lp,) = lib.usdt_probes()
    assert (lp.provider, lp.name, lp.semaphore, lp.semaphore_offset) == ("uprobe_lib", "lib_probe", 0, 0)


@pytest.mark.parametrize(
    "text, size, signed, kind, value, reg_off",
    [
        ("-4@%eax", 4, True, ArgType.REG, 0, 80),
        ("8@%rdi", 8, False, ArgType.REG, 0, 112),
        ("-2@%cx", 2, True, ArgType.REG, 0, 88),
        ("1@%r10b", 1, False, ArgType.REG, 0, 56),
        ("-8@-8(%rbp)", 8, True, ArgType.REG_DEREF, -8, 32),
        ("4@(%rax)", 4, False, ArgType.REG_DEREF, 0, 80),
        ("-8@8(%rdi)", 8, True, ArgType.REG_DEREF, 8, 112),
        ("4@$5", 4, False, ArgType.CONST, 5, 0),
        ("-4@$-7", 4, True, ArgType.CONST, -7, 0),
        ("8@16(%rsp)", 8, False, ArgType.REG_DEREF, 16, 152),
    ],
)
def test_parse_arg(text, size, signed, kind, value, reg_off):
    a = parse_arg(text)
    assert (a.size, a.signed, a.type, a.value, a.reg_offset) == (size, signed, kind, value, reg_off)


@pytest.mark.parametrize("text", ["-4@foo(%rip)", "4@(%rax,%rbx,4)", "3@%eax", "4@%xmm0", "%eax", ""])
def test_parse_arg_refuses_unsupported_forms(text):
    with pytest.raises(ValueError):
        parse_arg(text)


def test_encode_spec_layout():
    raw = encode_spec([parse_arg("-4@%esi"), parse_arg("8@-16(%rbp)"), parse_arg("-4@$-7")], cookie=0x1122)
    assert len(raw) == SPEC_SIZE
    # struct __bpf_usdt_arg_spec: u64 val_off, enum arg_type, short reg_off,
    # bool arg_signed, char arg_bitshift
    assert struct.unpack_from("=QihBb", raw, 0) == (0, 1, 104, 1, 32)
    assert struct.unpack_from("=QihBb", raw, 16) == ((1 << 64) - 16, 2, 32, 0, 0)
    assert struct.unpack_from("=QihBb", raw, 32) == ((1 << 64) - 7, 0, 0, 1, 32)
    assert raw[48:192] == bytes(144)
    assert struct.unpack_from("=Qh", raw, 192) == (0x1122, 3)


def test_library_name_is_searched():
    libc = open_executable("libc.so.6")
    assert os.path.isabs(libc.path) and libc.is_pie
    assert libc.address("malloc") > 0


def test_missing_file_and_not_elf(tmp_path):
    with pytest.raises(ExecutableNotFoundError) as exc:
        open_executable(tmp_path / "nope")
    assert isinstance(exc.value, FileNotFoundError) and "nope" in str(exc.value)
    with pytest.raises(FileNotFoundError):
        open_executable("libdoes-not-exist.so.9")
    junk = tmp_path / "junk"
    junk.write_bytes(b"#!/bin/sh\necho hi\n" * 8)
    with pytest.raises(InvalidObjectError, match="not an ELF"):
        open_executable(junk)
    with pytest.raises(InvalidObjectError, match="not an executable or a shared object"):
        open_executable(fixture_path("uprobe.o"))


def test_unknown_and_imported_symbols():
    exe = open_executable(target_bin())
    with pytest.raises(SymbolNotFoundError) as exc:
        exe.address("no_such_function")
    assert "no_such_function" in str(exc.value) and exe.path in str(exc.value) and not exc.value.imported
    with pytest.raises(SymbolNotFoundError) as exc:
        exe.address("printf")  # resolved from libc at run time
    assert exc.value.imported and "imported" in str(exc.value)


# --------------------------------------------------------------------------
# Kernel: uprobes and uretprobes


@pytest.mark.kernel
def test_uprobe_sees_argument_cookie_and_pid(coll):
    exe = open_executable(target_bin())
    with target() as t:
        with exe.uprobe("target_value", coll.programs["uprobe_value"], cookie=77) as link:
            assert link.info().type == ebpf.link.LinkType.PERF_EVENT
            t.go()
    assert hits(coll, HIT_UPROBE) == COUNT
    assert val(coll, V_PARM1) == VALUE
    assert val(coll, V_COOKIE) == 77
    assert val(coll, V_PID) == t.pid


@pytest.mark.kernel
def test_uretprobe_sees_return_value(coll):
    exe = open_executable(target_bin())
    with exe.uretprobe("target_add", coll.programs["uretprobe_ret"], cookie=5):
        run_target(value=VALUE)
    assert hits(coll, HIT_URETPROBE) == COUNT
    assert val(coll, V_RET) == VALUE + 1  # target_add(value, 1)
    assert val(coll, V_RET_COOKIE) == 5


@pytest.mark.kernel
def test_closed_link_stops_firing(coll):
    exe = open_executable(target_bin())
    link = exe.uprobe("target_value", coll.programs["uprobe_value"])
    run_target()
    assert hits(coll, HIT_UPROBE) == COUNT
    link.close()
    link.close()  # idempotent
    run_target()
    assert hits(coll, HIT_UPROBE) == COUNT


@pytest.mark.kernel
def test_pid_filter(coll):
    exe = open_executable(target_bin())
    with target(value=7) as a, target(value=9) as b:
        only_a = exe.uprobe("target_value", coll.programs["uprobe_value"], pid=a.pid)
        everyone = exe.uretprobe("target_add", coll.programs["uretprobe_ret"])
        with only_a, everyone:
            b.go()
            a.go()
    assert hits(coll, HIT_UPROBE) == COUNT  # b's calls were not counted
    assert val(coll, V_PID) == a.pid and val(coll, V_PARM1) == 7
    assert hits(coll, HIT_URETPROBE) == 2 * COUNT  # the unfiltered control saw both


@pytest.mark.kernel
def test_offset_and_address(coll):
    exe = open_executable(target_bin())
    prog = coll.programs["uprobe_value"]
    # target_asm is "nop; mov %rdi,%rax; ret": offset 1 is the mov.
    with target() as t:
        with exe.uprobe("target_asm", prog, offset=1):
            t.go()
    assert hits(coll, HIT_UPROBE) == COUNT
    assert val(coll, V_IP) == t.asm_address + 1
    assert val(coll, V_PARM1) == VALUE
    with target(value=11) as t:
        with exe.uprobe(None, prog, address=exe.address("target_asm")):
            t.go()
    assert hits(coll, HIT_UPROBE) == 2 * COUNT
    assert val(coll, V_IP) == t.asm_address
    assert val(coll, V_PARM1) == 11


@pytest.mark.kernel
def test_non_pie_executable(coll):
    exe = open_executable(target_bin("uprobe_target_nopie"))
    with target(exe.path, value=13) as t:
        with exe.uprobe("target_asm", coll.programs["uprobe_value"]), \
                exe.usdt("uprobe_target", "guarded", coll.programs["usdt_guarded"]):
            out = t.go()
    assert hits(coll, HIT_UPROBE) == COUNT
    assert val(coll, V_IP) == t.asm_address  # linked address == run-time address
    assert val(coll, V_PARM1) == 13
    assert guarded_count(out) == COUNT
    assert hits(coll, HIT_USDT_GUARDED) == COUNT and val(coll, V_GUARDED) == 14


@pytest.mark.kernel
def test_shared_library_symbol_and_usdt(coll):
    lib = open_executable(target_bin("libuprobe_target.so"))
    with lib.uprobe("lib_value", coll.programs["uprobe_value"], cookie=3), \
            lib.usdt("uprobe_lib", "lib_probe", coll.programs["usdt_lib"], cookie=1234):
        out = run_target(mode="lib", value=21)
    assert out == f"sum {COUNT * 42}"
    assert hits(coll, HIT_UPROBE) == COUNT and val(coll, V_PARM1) == 21 and val(coll, V_COOKIE) == 3
    assert hits(coll, HIT_USDT_LIB) == COUNT and val(coll, V_LIB_ARG) == 21
    assert val(coll, V_USDT_COOKIE) == 1234


@pytest.mark.kernel
def test_program_alone(coll):
    spec = load_spec()
    prog = ebpf.Program(spec.programs["uprobe_value"], maps={"hits": coll.maps["hits"], "values": coll.maps["values"]})
    try:
        with open_executable(target_bin()).uprobe("target_value", prog, cookie=8):
            run_target(value=-3)
    finally:
        prog.close()
    assert hits(coll, HIT_UPROBE) == COUNT
    assert val(coll, V_PARM1) == -3 and val(coll, V_COOKIE) == 8


# --------------------------------------------------------------------------
# Kernel: USDT


@pytest.mark.kernel
def test_usdt_arguments(coll):
    exe = open_executable(target_bin())
    with exe.usdt("uprobe_target", "args", coll.programs["usdt_args"], cookie=99) as link:
        assert isinstance(link, USDTLink) and len(link.links) == 1
        run_target(value=VALUE)
    assert hits(coll, HIT_USDT_ARGS) == COUNT
    assert val(coll, V_ARG_CNT) == 6
    assert val(coll, V_USDT_COOKIE) == 99
    # -4@%esi  -8@%rdx  -4@$-7  -4@(%rdi)  -8@8(%rdi)  -2@%cx
    expected = [VALUE, VALUE * 100000000000, -7, VALUE * 3, VALUE * 1000, -VALUE]
    assert [val(coll, V_ARG0 + i) for i in range(6)] == expected


@pytest.mark.kernel
def test_usdt_negative_values(coll):
    exe = open_executable(target_bin())
    with exe.usdt("uprobe_target", "args", coll.programs["usdt_args"]):
        run_target(value=-5)
    expected = [-5, -500000000000, -7, -15, -5000, 5]
    assert [val(coll, V_ARG0 + i) for i in range(6)] == expected


@pytest.mark.kernel
def test_usdt_semaphore(coll):
    exe = open_executable(target_bin())
    assert guarded_count(run_target()) == 0  # nobody attached: the probe is skipped
    with exe.usdt("uprobe_target", "guarded", coll.programs["usdt_guarded"]):
        out = run_target()
    assert guarded_count(out) == COUNT
    assert hits(coll, HIT_USDT_GUARDED) == COUNT and val(coll, V_GUARDED) == VALUE + 1
    assert guarded_count(run_target()) == 0  # detached: the kernel decremented it


@pytest.mark.kernel
def test_usdt_semaphore_in_running_process(coll):
    exe = open_executable(target_bin())
    with target() as t:
        with exe.usdt("uprobe_target", "guarded", coll.programs["usdt_guarded"], pid=t.pid):
            out = t.go()
    assert guarded_count(out) == COUNT
    assert hits(coll, HIT_USDT_GUARDED) == COUNT


@pytest.mark.kernel
def test_usdt_several_locations(coll):
    exe = open_executable(target_bin())
    with exe.usdt("uprobe_target", "twice", coll.programs["usdt_twice"]) as link:
        assert len(link.links) == 2 and len(set(link.spec_ids)) == 2
        run_target()
    assert hits(coll, HIT_USDT_TWICE) == 2 * COUNT
    assert val(coll, V_TWICE_SUM) == 3 * COUNT  # args 1 and 2 at the two sites
    assert link.closed


@pytest.mark.kernel
def test_usdt_pid_filter(coll):
    exe = open_executable(target_bin())
    with target(value=1) as a, target(value=2) as b:
        with exe.usdt("uprobe_target", "args", coll.programs["usdt_args"], pid=b.pid):
            a.go()
            b.go()
    assert hits(coll, HIT_USDT_ARGS) == COUNT and val(coll, V_ARG0) == 2


@pytest.mark.kernel
def test_usdt_spec_ids_shared_map(coll):
    """Programs of one collection share __bpf_usdt_specs: ids never collide,
    closed links free and zero theirs."""
    exe = open_executable(target_bin())
    specs = coll.maps["__bpf_usdt_specs"]  # decoded through the header's BTF
    a = exe.usdt("uprobe_target", "args", coll.programs["usdt_args"], cookie=1)
    b = exe.usdt("uprobe_target", "twice", coll.programs["usdt_twice"])
    c = exe.usdt("uprobe_target", "args", coll.programs["usdt_args"], cookie=2)
    try:
        ids = a.spec_ids + b.spec_ids + c.spec_ids
        assert len(ids) == len(set(ids)) == 4
        sa, sc = specs.lookup(a.spec_ids[0]), specs.lookup(c.spec_ids[0])
        assert (sa.usdt_cookie, sa.arg_cnt, sc.usdt_cookie, sc.arg_cnt) == (1, 6, 2, 6)
        # our encoding read back through struct __bpf_usdt_spec's BTF: -4@%esi
        arg0 = sa.args[0]
        assert (int(arg0.arg_type), arg0.reg_off, bool(arg0.arg_signed), arg0.arg_bitshift) == (1, 104, True, 32)
        assert int(sa.args[4].arg_type) == 2 and sa.args[4].val_off == 8  # -8@8(%rdi)
        run_target()
        # both "args" links fired on the same nop, each reading its own spec
        assert hits(coll, HIT_USDT_ARGS) == 2 * COUNT
        assert hits(coll, HIT_USDT_TWICE) == 2 * COUNT
        freed = a.spec_ids
        a.close()
        assert specs.lookup(freed[0]).arg_cnt == 0 and specs.lookup(freed[0]).usdt_cookie == 0
        d = exe.usdt("uprobe_target", "guarded", coll.programs["usdt_guarded"])
        assert d.spec_ids == freed  # the freed slot is reused
        d.close()
    finally:
        for link in (a, b, c):
            link.close()


@pytest.mark.kernel
def test_usdt_program_alone():
    """A program loaded alone that references a __bpf_usdt_specs map the
    caller created: the link finds the map through the program, writes the
    spec at the id it passes as BPF cookie, and the program reads the
    user's cookie back from it."""
    specs = ebpf.Map(MapSpec("__bpf_usdt_specs", MapType.ARRAY, 4, SPEC_SIZE, 16))
    out = ebpf.Map(MapSpec("out", MapType.ARRAY, 4, 8, 2))
    insns = asm.Instructions([
        asm.mov_reg(R6, R1),
        asm.call(asm.Helper.get_attach_cookie),  # r1 = ctx
        asm.store_mem(R10, -4, R0, 4),  # spec id
        asm.mov_reg(R2, R10),
        asm.add_imm(R2, -4),
        asm.load_map_ptr(R1, "__bpf_usdt_specs"),
        asm.call(asm.Helper.map_lookup_elem),
        asm.jeq_imm(R0, 0, "out"),
        asm.load_mem(R1, R0, 192, 8),  # spec->usdt_cookie
        asm.store_mem(R10, -16, R1, 8),
        asm.store_imm(R10, -4, 0, 4),
        asm.mov_reg(R2, R10),
        asm.add_imm(R2, -4),
        asm.mov_reg(R3, R10),
        asm.add_imm(R3, -16),
        asm.mov_imm(R4, 0),
        asm.load_map_ptr(R1, "out"),
        asm.call(asm.Helper.map_update_elem),
        asm.mov_imm(R0, 0).with_symbol("out"),
        asm.exit(),
    ])
    spec = ProgramSpec("usdt_alone", ProgramType.KPROBE, instructions=insns, license="GPL")
    try:
        with ebpf.Program(spec, maps={"__bpf_usdt_specs": specs, "out": out}) as prog:
            with open_executable(target_bin()).usdt("uprobe_target", "args", prog, cookie=0xC0FFEE) as link:
                (spec_id,) = link.spec_ids
                assert specs.lookup(spec_id)[192:200] == (0xC0FFEE).to_bytes(8, "little")
                run_target()
            assert int.from_bytes(out.lookup(0), "little") == 0xC0FFEE
            assert not any(specs.lookup(spec_id))  # zeroed on close
    finally:
        specs.close()
        out.close()


# --------------------------------------------------------------------------
# Kernel: bad input gives typed errors and leaves nothing behind


@pytest.mark.kernel
def test_bad_input_is_typed_and_leaks_nothing(coll, tmp_path):
    exe = open_executable(target_bin())
    up = coll.programs["uprobe_value"]
    usdt = coll.programs["usdt_args"]
    before = fd_count()
    with pytest.raises(SymbolNotFoundError):
        exe.uprobe("no_such_function", up)
    with pytest.raises(SymbolNotFoundError):
        exe.uretprobe("printf", up)
    with pytest.raises(ProbeNotFoundError) as exc:
        exe.usdt("uprobe_target", "nope", usdt)
    assert "uprobe_target:nope" in str(exc.value) and "uprobe_target:args" in str(exc.value)
    with pytest.raises(ProbeNotFoundError):
        exe.usdt("other", "args", usdt)
    with pytest.raises(ProcessNotFoundError):
        exe.uprobe("target_value", up, pid=2**22 + 12345)
    with pytest.raises(ProcessNotFoundError):
        exe.usdt("uprobe_target", "twice", coll.programs["usdt_twice"], pid=2**22 + 12345)
    with pytest.raises(ValueError):
        exe.uprobe("target_value", up, pid=0)
    with pytest.raises(ValueError):
        exe.uprobe("target_value", up, cookie=-1)
    # a program that does not use usdt.bpf.h has no spec map
    with pytest.raises(InvalidObjectError, match="__bpf_usdt_specs"):
        exe.usdt("uprobe_target", "args", up)
    # wrong program type
    sock = ebpf.Program(ProgramSpec("sock", ProgramType.SOCKET_FILTER,
                                    instructions=asm.Instructions([asm.mov_imm(R0, 0), asm.exit()]), license="GPL"))
    with sock:
        with pytest.raises(InvalidObjectError, match="SOCKET_FILTER"):
            exe.uprobe("target_value", sock)
        with pytest.raises(InvalidObjectError, match="SOCKET_FILTER"):
            exe.usdt("uprobe_target", "args", sock)
    # closed programs
    spec = load_spec()
    alone = ebpf.Program(spec.programs["uprobe_value"], maps={"hits": coll.maps["hits"], "values": coll.maps["values"]})
    alone.close()
    with pytest.raises(ClosedError):
        exe.uprobe("target_value", alone)
    with pytest.raises(ClosedError):
        exe.usdt("uprobe_target", "args", alone)
    # an offset past the end of the file
    with pytest.raises(InvalidObjectError, match="offset"):
        exe.uprobe(None, up, address=os.path.getsize(exe.path) + 4096)
    assert fd_count() == before
    # and the probes really are gone: nothing fires, no spec slot is taken
    run_target()
    assert hits(coll, HIT_UPROBE) == 0 and hits(coll, HIT_USDT_ARGS) == 0 and hits(coll, HIT_USDT_TWICE) == 0
    specs = coll.maps["__bpf_usdt_specs"]
    assert all(specs.lookup(i).arg_cnt == 0 for i in range(4))


@pytest.mark.kernel
def test_dropped_usdt_link_detaches_and_frees():
    import gc

    c = ebpf.Collection(load_spec())
    try:
        exe = open_executable(target_bin())
        before = fd_count()
        link = exe.usdt("uprobe_target", "twice", c.programs["usdt_twice"])
        ids = link.spec_ids
        del link
        gc.collect()
        assert fd_count() == before
        assert all(c.maps["__bpf_usdt_specs"].lookup(i).arg_cnt == 0 for i in ids)
        run_target()
        assert hits(c, HIT_USDT_TWICE) == 0
        again = exe.usdt("uprobe_target", "twice", c.programs["usdt_twice"])
        assert again.spec_ids == ids
        again.close()
    finally:
        c.close()


@pytest.mark.kernel
def test_links_release_their_fds(coll):
    exe = open_executable(target_bin())
    before = fd_count()
    links = [
        exe.uprobe("target_value", coll.programs["uprobe_value"]),
        exe.uretprobe("target_add", coll.programs["uretprobe_ret"]),
        exe.usdt("uprobe_target", "twice", coll.programs["usdt_twice"]),
    ]
    assert fd_count() > before
    for link in links:
        link.close()
    assert fd_count() == before
    with pytest.raises(ClosedError):
        links[2].links  # noqa: B018 - reading it raises


@pytest.mark.kernel
def test_usdt_link_cannot_be_pinned(coll, pin_dir):
    exe = open_executable(target_bin())
    with exe.usdt("uprobe_target", "args", coll.programs["usdt_args"]) as link:
        with pytest.raises(NotSupportedError):
            link.pin(pin_dir / "usdt")


@pytest.mark.kernel
def test_uprobe_link_pins(coll, pin_dir):
    exe = open_executable(target_bin())
    link = exe.uprobe("target_value", coll.programs["uprobe_value"])
    link_id = link.info().id
    try:
        link.pin(pin_dir / "up")
        link.close()  # the pin keeps the probe
        run_target()
        assert hits(coll, HIT_UPROBE) == COUNT
    finally:
        link.close()
        os.unlink(pin_dir / "up")
    # bpffs drops the last reference from an RCU callback and the link is
    # released by a workqueue a little later (its id is unreachable before
    # that): run the target until a run is no longer counted, with a deadline.
    deadline = time.monotonic() + 60
    while True:
        seen = hits(coll, HIT_UPROBE)
        run_target(count=1)
        if hits(coll, HIT_UPROBE) == seen:
            break
        assert time.monotonic() < deadline, "the unpinned uprobe still fires after 60 s"
    with pytest.raises(EBPFError):
        ebpf.link.link_from_id(link_id)


@pytest.mark.kernel
def test_collection_loads_kconfig_extern():
    """usdt.bpf.h's ``LINUX_HAS_BPF_COOKIE __kconfig`` makes a .kconfig map
    whose values libbpf computes at load; the spec's image is left to it."""
    spec = ebpf.load_collection_spec(fixture_path("uprobe.o"))
    assert ".kconfig" in spec.maps
    ebpf.Collection(spec).close()
    spec.maps[".kconfig"].contents = [(0, b"\x01" * spec.maps[".kconfig"].value_size)]
    with pytest.raises(ebpf.NotSupportedError, match="kconfig"):
        ebpf.Collection(spec)


@pytest.mark.kernel
def test_usdt_elf_program_alone():
    """The ELF USDT program loaded alone: its .kconfig extern and the usdt.bpf.h
    maps come through libbpf (Program routes it through its object), and the
    maps the caller passes are the ones it writes."""
    spec = load_spec()
    values = ebpf.Map(spec.maps["values"])
    hit_map = ebpf.Map(spec.maps["hits"])
    try:
        with ebpf.Program(spec.programs["usdt_args"], maps={"values": values, "hits": hit_map}) as prog:
            with open_executable(target_bin()).usdt("uprobe_target", "args", prog, cookie=5):
                run_target(value=VALUE)
        assert hit_map.lookup(HIT_USDT_ARGS) == COUNT
        assert values.lookup(V_USDT_COOKIE) == 5
        signed = [int.from_bytes(values.lookup(V_ARG0 + i).to_bytes(8, "little"), "little", signed=True)
                  for i in range(6)]
        assert signed == [VALUE, VALUE * 100000000000, -7, VALUE * 3, VALUE * 1000, -VALUE]
    finally:
        values.close()
        hit_map.close()
