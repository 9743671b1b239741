"""One program-type check for every hook (ebpf.link._link.check_program_type):
a program of the wrong type is an InvalidObjectError (EINVAL) naming the
hook, the program and both types, before any syscall."""

from __future__ import annotations

import errno
import importlib
import inspect
import pkgutil
import socket
import sys

import pytest

import ebpf
import ebpf.link
from ebpf import AttachType, ProgramType
from ebpf import link as L
from ebpf.errors import EBPFError, InvalidObjectError
from ebpf.link._link import check_program_type

from conftest import fixture_path
from netutil import count_fds


class _Prog:
    def __init__(self, ptype, name="p"):
        self.type = ptype
        self.name = name


def test_refuses_the_wrong_type_with_one_error():
    with pytest.raises(InvalidObjectError) as e:
        check_program_type(_Prog(ProgramType.KPROBE, "k"), (ProgramType.XDP, ProgramType.SCHED_CLS), "attach_x")
    assert isinstance(e.value, EBPFError) and isinstance(e.value, ValueError)
    assert e.value.errno == errno.EINVAL
    assert str(e.value) == "attach_x: program 'k' is a KPROBE program; the hook needs a SCHED_CLS or XDP program"


def test_accepts_the_right_type_and_leaves_raw_fds_to_the_kernel():
    check_program_type(_Prog(ProgramType.XDP), (ProgramType.XDP,), "attach_xdp")
    check_program_type(_Prog(int(ProgramType.XDP)), {ProgramType.XDP}, "attach_xdp")  # plain int type
    check_program_type(7, (ProgramType.XDP,), "attach_xdp")  # an fd: the kernel judges
    check_program_type(object(), (ProgramType.XDP,), "attach_xdp")  # no type known


def test_every_link_module_uses_the_one_check():
    checks = set()
    for info in pkgutil.iter_modules(ebpf.link.__path__):
        mod = importlib.import_module(f"ebpf.link.{info.name}")
        fn = getattr(mod, "check_program_type", None)
        if fn is not None:
            checks.add(fn)
        assert "def check_program_type" not in inspect.getsource(mod) or info.name == "_link", info.name
    assert checks == {check_program_type}


@pytest.fixture(scope="module")
def progs():
    with ebpf.Collection(ebpf.load_collection_spec(fixture_path("link_net.o"))) as c:
        yield c.programs


@pytest.mark.kernel
def test_every_hook_refuses_a_program_of_the_wrong_type(progs):
    sock, xdp = progs["socket_drop_d"], progs["xdp_count"]
    exe = L.open_executable(sys.executable)
    calls = {
        "attach_xdp": lambda: L.attach_xdp("lo", sock),
        "attach_tc": lambda: L.attach_tc("lo", sock),
        "attach_tcx": lambda: L.attach_tcx("lo", sock, "ingress"),
        "attach_cgroup": lambda: L.attach_cgroup("/sys/fs/cgroup", AttachType.CGROUP_INET_EGRESS, sock),
        "attach_netfilter": lambda: L.attach_netfilter(sock, 2, 1, 0),
        "attach_netns": lambda: L.attach_netns("/proc/self/ns/net", sock),
        "attach_tracepoint": lambda: L.attach_tracepoint("syscalls", "sys_enter_getppid", sock),
        "attach_raw_tracepoint": lambda: L.attach_raw_tracepoint("sys_enter", sock),
        "attach_tracing": lambda: L.attach_tracing(sock),
        "attach_lsm": lambda: L.attach_lsm(sock),
        "kprobe": lambda: L.kprobe("do_nanosleep", sock),
        "kprobe_multi": lambda: L.kprobe_multi(["do_nanosleep"], sock),
        "attach_perf_event": lambda: L.attach_perf_event(0, sock),
        "attach_iter": lambda: L.attach_iter(sock),
        "uprobe": lambda: exe.uprobe("main", sock),
        "usdt": lambda: exe.usdt("python", "function__entry", sock),
    }
    before = count_fds()
    for hook, call in calls.items():
        with pytest.raises(InvalidObjectError) as e:
            call()
        assert e.value.errno == errno.EINVAL, hook
        assert "'socket_drop_d' is a SOCKET_FILTER program; the hook needs a " in str(e.value), (hook, str(e.value))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        with pytest.raises(InvalidObjectError, match="'xdp_count' is a XDP program; the hook needs a SOCKET_FILTER"):
            L.attach_socket_filter(s, xdp)
    assert count_fds() == before
