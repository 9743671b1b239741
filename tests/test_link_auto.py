"""attach_all: every program whose section names its hook, skeleton-style."""

from __future__ import annotations

import os
import platform

import pytest

import ebpf
from ebpf import features, link
from ebpf.errors import KeyNotExistError
from ebpf.link.auto import attach_all, section_hook

from conftest import fixture_path

GETPPID_NR = {"x86_64": 110, "aarch64": 173, "riscv64": 173, "s390x": 64, "ppc64le": 64}
KPROBES = ("kprobe_getppid", "kretprobe_getppid", "kprobe_multi_getppid")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def tracing_spec(without=KPROBES):
    spec = ebpf.load_collection_spec(fixture_path("link_tracing.o"))
    for name in without:
        del spec.programs[name]
    return spec


def configure(c) -> None:
    nr = GETPPID_NR.get(platform.machine())
    if nr is None:
        pytest.skip(f"getppid syscall number unknown for {platform.machine()}")
    c.maps["config"][0] = os.getpid()
    c.maps["config"][1] = nr


def counts(c) -> list:
    return [int(c.maps["counts"][i]) for i in range(4)]


def test_section_hooks():
    attachable = [
        "tracepoint/syscalls/sys_enter_read", "tp/sched/sched_switch", "raw_tp/sys_enter",
        "raw_tracepoint/sys_exit", "raw_tp.w/bpf_test_finish", "tp_btf/sched_switch", "fentry/do_unlinkat",
        "fexit/do_unlinkat", "fmod_ret/x", "fentry.s/x", "lsm/file_open", "lsm.s/bpf", "iter/task",
        "iter/bpf_map", "kprobe/do_nanosleep", "kprobe/do_nanosleep+0x10", "kretprobe/do_nanosleep",
        "ksyscall/getppid", "kprobe.multi/do_nano*",
    ]
    skipped = [
        "xdp", "tc", "socket", "perf_event", "cgroup/skb", "cgroup_skb/ingress", "kprobe", "tracepoint",
        "tracepoint/only_group", "uprobe", "uprobe/no_colon", "usdt", "iter/bpf_map_elem", "iter/sockmap",
        "freplace/func", "struct_ops/x", "lsm_cgroup/file_open", "sk_lookup", "",
    ]
    for s in attachable:
        assert callable(section_hook(s)), s
    for s in skipped:
        assert section_hook(s) is None, s


@pytest.mark.kernel
def test_attach_all_attaches_and_skips():
    with ebpf.Collection(tracing_spec()) as c:
        configure(c)
        links = c.attach_all()
        try:
            # perf_event and socket programs name no target: skipped.
            assert sorted(links) == ["btf_sys_enter", "raw_sys_enter", "tp_getppid", "tp_getppid_b"]
            for _ in range(3):
                os.getppid()
            assert counts(c) == [3, 3, 3, 3]
        finally:
            for lk in links.values():
                lk.close()
        os.getppid()
        assert counts(c) == [3, 3, 3, 3]


@pytest.mark.kernel
def test_attach_all_rolls_back_on_failure():
    spec = tracing_spec()
    spec.programs["tp_getppid_b"].section_name = "tracepoint/syscalls/sys_enter_no_such_call"
    with ebpf.Collection(spec) as c:
        configure(c)
        fds = open_fds()
        with pytest.raises(KeyNotExistError, match="tp_getppid_b"):
            attach_all(c)
        # The links made before the failure were closed.
        assert open_fds() == fds
        os.getppid()
        assert counts(c) == [0, 0, 0, 0]


@pytest.mark.kernel
def test_attach_all_with_kprobes():
    # With kprobes the whole set attaches; without, the kprobe programs
    # make attach_all fail cleanly with NotSupportedError.
    with ebpf.Collection(tracing_spec(without=())) as c:
        configure(c)
        fds = open_fds()
        try:
            links = attach_all(c)
        except ebpf.NotSupportedError as exc:
            assert "kprobe" in str(exc)
            assert open_fds() == fds
            return
        try:
            assert {"kprobe_getppid", "kretprobe_getppid"} <= set(links)
            os.getppid()
            assert int(c.maps["counts"][5]) >= 2
        finally:
            for lk in links.values():
                lk.close()


@pytest.mark.kernel
def test_attach_all_iterators():
    spec = ebpf.load_collection_spec(fixture_path("link_iter.o"))
    try:
        features.have_iterator("bpf_map_elem")
    except ebpf.KernelPolicyError:
        # This kernel refuses them by policy: load what it takes.
        del spec.programs["dump_elems"], spec.programs["dump_elems_raw"]
    with ebpf.Collection(spec) as c:
        links = attach_all(c)
        try:
            # bpf_map_elem iterators need a map: skipped.
            assert sorted(links) == ["dump_tgids", "dump_tgids_tagged"]
            assert isinstance(links["dump_tgids"], link.Iter)
            assert str(os.getpid()).encode() in links["dump_tgids"].read().split()
        finally:
            for lk in links.values():
                lk.close()


@pytest.mark.kernel
def test_attach_all_on_a_dict_of_standalone_programs():
    spec = tracing_spec()
    maps = {name: ebpf.Map(spec.maps[name]) for name in ("config", "counts")}
    progs = {}
    try:
        configure(type("C", (), {"maps": maps}))
        progs = {n: ebpf.Program(spec.programs[n], maps=maps) for n in ("tp_getppid", "raw_sys_enter", "on_cpu_clock")}
        links = attach_all(progs)
        try:
            assert sorted(links) == ["raw_sys_enter", "tp_getppid"]
            os.getppid()
        finally:
            for lk in links.values():
                lk.close()
        assert [int(maps["counts"][i]) for i in (0, 2)] == [1, 1]
    finally:
        for p in progs.values():
            p.close()
        for m in maps.values():
            m.close()
