"""Tracing links on the real kernel: tracepoints, raw tracepoints, tp_btf,
fentry & co., kprobes.  Each attachment is seen firing on real syscalls of
this process (the programs count only our tgid, so counts are exact)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest

import ebpf
from ebpf import link
from ebpf.errors import (
    ClosedError,
    InvalidObjectError,
    KeyNotExistError,
    NotSupportedError,
    PermissionDeniedError,
)
from ebpf.link import LinkType
from ebpf.link import perf_event as pe
from ebpf.link._link import PerfEventType

from conftest import fixture_path, skip_or_fail

pytestmark = pytest.mark.kernel

# getppid's number: the raw_tp and tp_btf programs filter sys_enter on it.
GETPPID_NR = {"x86_64": 110, "aarch64": 173, "riscv64": 173, "s390x": 64, "ppc64le": 64}
SYSCALL_PREFIX = {"x86_64": "__x64_sys_", "aarch64": "__arm64_sys_", "s390x": "__s390x_sys_", "riscv64": "__riscv_sys_"}

TP_A, TP_B, RAW, BTF, KPROBE, TP_COOKIE, BTF_COOKIE = 0, 1, 2, 3, 5, 7, 8


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def spec_():
    return ebpf.load_collection_spec(fixture_path("link_tracing.o"))


def configure(maps) -> None:
    nr = GETPPID_NR.get(platform.machine())
    if nr is None:
        pytest.skip(f"getppid syscall number unknown for {platform.machine()}")
    maps["config"][0] = os.getpid()
    maps["config"][1] = nr


@pytest.fixture
def coll():
    c = ebpf.Collection(spec_())
    try:
        configure(c.maps)
        yield c
    finally:
        c.close()


def count(c, slot: int) -> int:
    maps = c.maps if hasattr(c, "maps") else c
    return int(maps["counts"][slot])


def getppid(n: int) -> None:
    for _ in range(n):
        os.getppid()


# -- tracepoints ---------------------------------------------------------------


def test_tracepoint_counts_exactly_and_close_detaches(coll):
    prog = coll.programs["tp_getppid"]
    before = count(coll, TP_A)
    with link.attach_tracepoint("syscalls", "sys_enter_getppid", prog) as lk:
        getppid(7)
        assert count(coll, TP_A) == before + 7
        info = lk.info()
        assert info.type == LinkType.PERF_EVENT
        assert info.program_id == prog.info().id
        assert info.extra["tp_name"] == "sys_enter_getppid"
        assert info.extra["perf_event_type"] == PerfEventType.TRACEPOINT
    getppid(3)
    assert count(coll, TP_A) == before + 7
    assert lk.closed


def test_tracepoint_program_loaded_alone():
    spec = spec_()
    maps = {name: ebpf.Map(spec.maps[name]) for name in ("config", "counts")}
    try:
        configure(maps)
        with ebpf.Program(spec.programs["tp_getppid"], maps=maps) as prog:
            with link.attach_tracepoint("syscalls", "sys_enter_getppid", prog):
                getppid(4)
            getppid(2)
        assert int(maps["counts"][TP_A]) == 4
    finally:
        for m in maps.values():
            m.close()


def test_tracepoint_cookie(coll):
    prog = coll.programs["tp_getppid"]
    with link.attach_tracepoint("syscalls", "sys_enter_getppid", prog, cookie=0xDEADBEEF42) as lk:
        getppid(1)
        assert count(coll, TP_COOKIE) == 0xDEADBEEF42
        assert lk.info().extra["cookie"] == 0xDEADBEEF42


def test_two_programs_on_one_tracepoint(coll):
    with link.attach_tracepoint("syscalls", "sys_enter_getppid", coll.programs["tp_getppid"]), \
            link.attach_tracepoint("syscalls", "sys_enter_getppid", coll.programs["tp_getppid_b"]):
        getppid(5)
    assert (count(coll, TP_A), count(coll, TP_B)) == (5, 5)


def test_closing_the_program_does_not_detach(coll):
    prog = coll.detach_program("tp_getppid")
    lk = link.attach_tracepoint("syscalls", "sys_enter_getppid", prog)
    try:
        prog.close()
        getppid(3)
        assert count(coll, TP_A) == 3
    finally:
        lk.close()
    getppid(3)
    assert count(coll, TP_A) == 3


def test_tracepoint_link_pinned_outlives_object(coll, pin_dir: Path):
    prog = coll.programs["tp_getppid"]
    path = pin_dir / "tp_link"
    lk = link.attach_tracepoint("syscalls", "sys_enter_getppid", prog)
    try:
        lk.pin(path)
        link_id = lk.info().id
        lk.close()  # the pin keeps it attached
        getppid(2)
        assert count(coll, TP_A) == 2
        again = link.load_pinned_link(path)
    except BaseException:
        lk.unpin()
        raise
    try:
        info = again.info()
        assert (info.id, info.program_id) == (link_id, prog.info().id)
        assert info.extra["tp_name"] == "sys_enter_getppid"
    finally:
        again.unpin()
        again.close()
    assert not path.exists()
    getppid(2)
    assert count(coll, TP_A) == 2


def test_load_pinned_link_refuses_other_objects(coll, pin_dir: Path):
    coll.maps["counts"].pin(pin_dir / "map")
    coll.programs["tp_getppid"].pin(pin_dir / "prog")
    fds = open_fds()
    for name in ("map", "prog"):
        with pytest.raises(ebpf.EBPFError, match="not a pinned link"):
            link.load_pinned_link(pin_dir / name)
    with pytest.raises(ebpf.PinError):
        link.load_pinned_link(pin_dir / "nothing")
    with pytest.raises(KeyNotExistError):
        link.link_from_id(0x7FFFFFF0)
    assert open_fds() == fds


def test_perf_event_link_cannot_update(coll):
    with link.attach_tracepoint("syscalls", "sys_enter_getppid", coll.programs["tp_getppid"]) as lk:
        with pytest.raises(NotSupportedError):
            lk.update(coll.programs["tp_getppid_b"])
        getppid(1)
    assert (count(coll, TP_A), count(coll, TP_B)) == (1, 0)


def test_tracepoint_ioctl_fallback(coll, monkeypatch):
    # What kernels before 5.15 get: PERF_EVENT_IOC_SET_BPF, no bpf_link.
    monkeypatch.setattr(pe, "_perf_link_support", False)
    fds = open_fds()
    lk = link.attach_tracepoint("syscalls", "sys_enter_getppid", coll.programs["tp_getppid"])
    try:
        assert isinstance(lk, pe.PerfEventIoctlLink)
        getppid(4)
        assert count(coll, TP_A) == 4
        for call in (lambda: lk.pin("/sys/fs/bpf/never"), lambda: lk.update(coll.programs["tp_getppid_b"]), lk.info):
            with pytest.raises(NotSupportedError):
                call()
    finally:
        lk.close()
    getppid(4)
    assert count(coll, TP_A) == 4
    with pytest.raises(NotSupportedError):
        link.attach_tracepoint("syscalls", "sys_enter_getppid", coll.programs["tp_getppid"], cookie=1)
    assert open_fds() == fds


def test_missing_tracepoint(coll):
    prog = coll.programs["tp_getppid"]
    fds = open_fds()
    with pytest.raises(KeyNotExistError, match="syscalls/sys_enter_no_such_call") as exc:
        link.attach_tracepoint("syscalls", "sys_enter_no_such_call", prog)
    assert exc.value.errno == 2
    with pytest.raises(KeyNotExistError, match="no_such_group/x"):
        link.attach_tracepoint("no_such_group", "x", prog)
    with pytest.raises(InvalidObjectError):
        link.attach_tracepoint("..", "syscalls", prog)
    with pytest.raises(InvalidObjectError):
        link.attach_tracepoint("syscalls/sys_enter_getppid", "id", prog)
    assert open_fds() == fds


def test_wrong_program_type_is_refused(coll):
    progs = coll.programs
    fds = open_fds()
    cases = [
        lambda: link.attach_tracepoint("syscalls", "sys_enter_getppid", progs["raw_sys_enter"]),
        lambda: link.attach_raw_tracepoint("sys_enter", progs["tp_getppid"]),
        lambda: link.attach_tracing(progs["not_tracing"]),
        lambda: link.attach_lsm(progs["btf_sys_enter"]),
        lambda: link.kprobe("do_nanosleep", progs["tp_getppid"]),
        lambda: link.kprobe_multi(["do_nanosleep"], progs["kprobe_getppid"]),
        lambda: link.kprobe("do_nanosleep", progs["kprobe_multi_getppid"]),
        lambda: link.attach_perf_event(0, progs["not_tracing"]),
    ]
    for case in cases:
        with pytest.raises(InvalidObjectError) as exc:
            case()
        assert exc.value.errno == 22
    with pytest.raises(InvalidObjectError, match="SOCKET_FILTER"):
        link.attach_tracepoint("syscalls", "sys_enter_getppid", progs["not_tracing"])
    assert open_fds() == fds


def test_closed_program_is_refused(coll):
    progs = {n: coll.detach_program(n) for n in ("tp_getppid", "raw_sys_enter", "btf_sys_enter", "kprobe_getppid")}
    for p in progs.values():
        p.close()
    fds = open_fds()
    for case in (
        lambda: link.attach_tracepoint("syscalls", "sys_enter_getppid", progs["tp_getppid"]),
        lambda: link.attach_raw_tracepoint("sys_enter", progs["raw_sys_enter"]),
        lambda: link.attach_tracing(progs["btf_sys_enter"]),
        lambda: link.kprobe("do_nanosleep", progs["kprobe_getppid"]),
    ):
        with pytest.raises(ClosedError):
            case()
    assert open_fds() == fds


# -- raw tracepoints -----------------------------------------------------------


def test_raw_tracepoint(coll, pin_dir: Path):
    prog = coll.programs["raw_sys_enter"]
    lk = link.attach_raw_tracepoint("sys_enter", prog)
    try:
        getppid(6)
        assert count(coll, RAW) == 6
        info = lk.info()
        assert info.type == LinkType.RAW_TRACEPOINT
        assert info.extra["tp_name"] == "sys_enter"
        with pytest.raises(NotSupportedError):
            lk.update(prog)
        lk.pin(pin_dir / "raw")
        lk.close()
        getppid(1)
        assert count(coll, RAW) == 7
        again = link.load_pinned_link(pin_dir / "raw")
        assert again.info().program_id == prog.info().id
        again.unpin()
        again.close()
    finally:
        lk.unpin()
        lk.close()
    getppid(2)
    assert count(coll, RAW) == 7


def test_raw_tracepoint_cookie(coll):
    try:
        lk = link.attach_raw_tracepoint("sys_enter", coll.programs["raw_sys_enter"], cookie=0x1234)
    except NotSupportedError as exc:
        assert exc.min_kernel == "6.10"
        skip_or_fail(str(exc))
    with lk:
        getppid(1)
        assert count(coll, RAW) == 1
        assert lk.info().extra["cookie"] == 0x1234


def test_raw_tracepoint_standalone_and_missing():
    spec = spec_()
    maps = {name: ebpf.Map(spec.maps[name]) for name in ("config", "counts")}
    try:
        configure(maps)
        with ebpf.Program(spec.programs["raw_sys_enter"], maps=maps) as prog:
            fds = open_fds()
            with pytest.raises(KeyNotExistError, match="no_such_raw_tp"):
                link.attach_raw_tracepoint("no_such_raw_tp", prog)
            assert open_fds() == fds
            with link.attach_raw_tracepoint("sys_enter", prog):
                getppid(3)
        assert int(maps["counts"][RAW]) == 3
    finally:
        for m in maps.values():
            m.close()


# -- tp_btf and the trampoline family ------------------------------------------------------


def test_tp_btf(coll):
    prog = coll.programs["btf_sys_enter"]
    with link.attach_tracing(prog, cookie=99) as lk:
        getppid(5)
        assert count(coll, BTF) == 5
        assert count(coll, BTF_COOKIE) == 99
        info = lk.info()
        assert info.type == LinkType.RAW_TRACEPOINT
        assert info.extra["cookie"] == 99
        assert info.extra["tp_name"] == "sys_enter"
        assert info.program_id == prog.info().id
    getppid(5)
    assert count(coll, BTF) == 5


def test_tp_btf_program_loaded_alone():
    spec = spec_()
    maps = {name: ebpf.Map(spec.maps[name]) for name in ("config", "counts")}
    try:
        configure(maps)
        with ebpf.Program(spec.programs["btf_sys_enter"], maps=maps) as prog:
            with link.attach_tracing(prog):
                getppid(2)
        assert int(maps["counts"][BTF]) == 2
    finally:
        for m in maps.values():
            m.close()


def test_tp_btf_from_pinned_program_without_attach_type(coll, pin_dir: Path):
    # A program opened from a pin has no spec: the raw-tracepoint command
    # attaches it to the target it was loaded for.
    coll.programs["btf_sys_enter"].pin(pin_dir / "prog")
    with ebpf.load_pinned_program(pin_dir / "prog") as prog:
        with link.attach_tracing(prog):
            getppid(3)
    assert count(coll, BTF) == 3


def tracing_refused() -> str:
    """The probe's reason when this kernel refuses fentry & co., else ''."""
    try:
        ebpf.features.have_tracing_programs()
    except NotSupportedError as exc:
        return str(exc)
    return ""


def test_fentry_fexit_fmod_ret():
    reason = tracing_refused()
    spec = ebpf.load_collection_spec(fixture_path("link_fentry.o"))
    if reason:
        # The refusal is the documented one, at load, for every kind.
        for name in ("fentry_test1", "fexit_test1", "fmod_ret_test"):
            with pytest.raises(PermissionDeniedError, match="lockdown"):
                ebpf.Program(spec.programs[name], maps={"hits": 0})
        pytest.skip(reason)
    with ebpf.Collection(spec) as c:
        links = [link.attach_tracing(c.programs[n]) for n in ("fentry_test1", "fexit_test1", "fmod_ret_test")]
        try:
            info = links[0].info()
            assert info.type == LinkType.TRACING
            assert info.extra["attach_type"] == ebpf.AttachType.TRACE_FENTRY
            # Test-running any tracing program calls bpf_fentry_test1 and
            # bpf_modify_return_test in the kernel.
            c.programs["fentry_test1"].run()
            assert int(c.maps["hits"][0]) >= 1 and int(c.maps["hits"][1]) >= 1 and int(c.maps["hits"][2]) >= 1
        finally:
            for lk in links:
                lk.close()


def test_lsm():
    reason = tracing_refused()
    spec = ebpf.load_collection_spec(fixture_path("link_fentry.o"))
    if reason:
        with pytest.raises(PermissionDeniedError, match="lockdown"):
            ebpf.Program(spec.programs["lsm_file_open"], maps={"hits": 0})
        pytest.skip(reason)
    with ebpf.Collection(spec) as c:
        try:
            lk = link.attach_lsm(c.programs["lsm_file_open"])
        except NotSupportedError:
            pytest.skip("BPF LSM not enabled (lsm= boot parameter lacks bpf)")
        with lk:
            before = int(c.maps["hits"][3])
            with open("/proc/self/status"):
                pass
            assert int(c.maps["hits"][3]) > before


def test_tracing_probe_is_cached_and_typed():
    try:
        assert ebpf.features.have_tracing_programs() is True
    except NotSupportedError as exc:
        assert exc.feature.startswith("tracing programs")
        with pytest.raises(NotSupportedError) as again:
            ebpf.features.have_tracing_programs()
        assert str(again.value) == str(exc)


def test_freplace_target_btf_id(coll):
    # freplace programs cannot load here without a target; the part of the
    # attach that finds the function to replace in a target program works.
    from ebpf.link.tracing import function_btf_id

    prog = coll.programs["tp_getppid"]
    btf_id = function_btf_id(prog, "tp_getppid")
    assert btf_id > 0
    with pytest.raises(KeyNotExistError, match="no_such_function"):
        function_btf_id(prog, "no_such_function")


# -- kprobes -------------------------------------------------------------------


def kprobe_pmu() -> bool:
    return Path("/sys/bus/event_source/devices/kprobe").is_dir()


def test_kprobe_fires_or_is_not_supported(coll):
    prog = coll.programs["kprobe_getppid"]
    symbol = SYSCALL_PREFIX.get(platform.machine(), "sys_") + "getppid"
    fds = open_fds()
    if not kprobe_pmu():
        with pytest.raises(NotSupportedError, match="kprobe"):
            link.kprobe(symbol, prog)
        with pytest.raises(NotSupportedError, match="kprobe"):
            link.kretprobe(symbol, coll.programs["kretprobe_getppid"])
        assert open_fds() == fds
        return
    with link.kprobe(symbol, prog) as lk:
        getppid(3)
        assert count(coll, KPROBE) == 3
        assert lk.info().extra["func_name"] == symbol
    with link.kretprobe(symbol, coll.programs["kretprobe_getppid"]):
        getppid(2)
    assert count(coll, KPROBE) == 5
    assert open_fds() == fds


def test_kprobe_unknown_symbol(coll):
    prog = coll.programs["kprobe_getppid"]
    fds = open_fds()
    if not kprobe_pmu():
        with pytest.raises(NotSupportedError):
            link.kprobe("no_such_kernel_function_xyz", prog)
    else:
        with pytest.raises(KeyNotExistError, match="no_such_kernel_function_xyz"):
            link.kprobe("no_such_kernel_function_xyz", prog)
    with pytest.raises(InvalidObjectError):
        link.kprobe("two words", prog)
    assert open_fds() == fds


def test_kprobe_symbol_error_names_symbol():
    # The mapping used when a kernel with kprobes refuses a symbol.
    from ebpf.errors import EBPFError
    from ebpf.link.tracing import _kprobe_error

    for errno in (2, 22):
        err = _kprobe_error(EBPFError("x", errno), "no_such_fn", "kprobe", "kprobe no_such_fn")
        assert isinstance(err, KeyNotExistError) and "no_such_fn" in str(err)


def test_kprobe_multi(coll):
    prog = coll.programs["kprobe_multi_getppid"]
    symbol = SYSCALL_PREFIX.get(platform.machine(), "sys_") + "getppid"
    fds = open_fds()
    try:
        lk = link.kprobe_multi([symbol], prog, cookies=[1])
    except NotSupportedError as exc:
        assert exc.errno in (95, 524)
        with pytest.raises(NotSupportedError):
            link.kretprobe_multi([symbol], prog)
        assert open_fds() == fds
        return
    with lk:
        getppid(3)
        assert count(coll, KPROBE) == 3
        assert lk.info().type == LinkType.KPROBE_MULTI
    with pytest.raises(KeyNotExistError):
        link.kprobe_multi(["no_such_kernel_function_xyz"], prog)
    assert open_fds() == fds


def test_kprobe_multi_bad_arguments(coll):
    prog = coll.programs["kprobe_multi_getppid"]
    with pytest.raises(ValueError):
        link.kprobe_multi([], prog)
    with pytest.raises(TypeError):
        link.kprobe_multi(["a", 1], prog)
    with pytest.raises(ValueError):
        link.kprobe_multi(["a", "b"], prog, cookies=[1])
