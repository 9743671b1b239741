"""Perf-event links on the real kernel: a SEC("perf_event") program on a
cpu-clock event on every CPU, driven by a busy loop in Python."""

from __future__ import annotations

import os
import time

import pytest

import ebpf
from ebpf import link
from ebpf.errors import ClosedError, InvalidObjectError, NotSupportedError
from ebpf.link import LinkType
from ebpf.link import perf_event as pe

from conftest import fixture_path

pytestmark = pytest.mark.kernel

SLOT = 6  # counts[] slot of on_cpu_clock


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def coll():
    c = ebpf.Collection(ebpf.load_collection_spec(fixture_path("link_tracing.o")))
    try:
        yield c
    finally:
        c.close()


def spin_until(pred, deadline_s: float = 20.0) -> bool:
    """Burn CPU (which is what drives a cpu-clock event) until pred() holds."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        x = 0
        for i in range(20000):
            x += i
        if pred():
            return True
    return pred()


def test_cpu_clock_on_every_cpu(coll):
    prog = coll.programs["on_cpu_clock"]
    events = pe.open_cpu_clocks(sample_freq=1000)
    assert [e.cpu for e in events] == pe.online_cpus()
    links = []
    try:
        links = [link.attach_perf_event(ev, prog, cookie=ev.cpu + 1) for ev in events]
        # The links hold their own reference to the events.
        for ev in events:
            ev.close()
        assert spin_until(lambda: int(coll.maps["counts"][SLOT]) > 0)
        info = links[0].info()
        assert info.type == LinkType.PERF_EVENT
        assert info.program_id == prog.info().id
        assert info.extra["cookie"] == events[0].cpu + 1
        assert info.extra["config"] == pe.PERF_COUNT_SW_CPU_CLOCK
    finally:
        for lk in links:
            lk.close()
        for ev in events:
            ev.close()
    # Detached: the counter stops moving however long we spin.
    frozen = int(coll.maps["counts"][SLOT])
    spin_until(lambda: False, 0.3)
    assert int(coll.maps["counts"][SLOT]) == frozen


def test_cpu_clock_program_loaded_alone():
    spec = ebpf.load_collection_spec(fixture_path("link_tracing.o"))
    with ebpf.Map(spec.maps["counts"]) as counts:
        with ebpf.Program(spec.programs["on_cpu_clock"], maps={"counts": counts}) as prog:
            events = pe.open_cpu_clocks(sample_period=100_000)
            try:
                links = [link.attach_perf_event(ev.fd, prog) for ev in events]
            finally:
                for ev in events:
                    ev.close()
            try:
                assert spin_until(lambda: int(counts[SLOT]) > 0)
            finally:
                for lk in links:
                    lk.close()


def test_perf_event_link_pin_and_update(coll, pin_dir):
    prog = coll.programs["on_cpu_clock"]
    with link.open_cpu_clock(pe.online_cpus()[0]) as ev, link.attach_perf_event(ev, prog) as lk:
        lk.pin(pin_dir / "perf")
        try:
            again = link.load_pinned_link(pin_dir / "perf")
            with again:
                assert again.info().id == lk.info().id
        finally:
            lk.unpin()
        with pytest.raises(NotSupportedError):
            lk.update(prog)


def test_perf_event_ioctl_fallback(coll, monkeypatch):
    monkeypatch.setattr(pe, "_perf_link_support", False)
    prog = coll.programs["on_cpu_clock"]
    fds = open_fds()
    events = pe.open_cpu_clocks(sample_freq=1000)
    links = []
    try:
        links = [link.attach_perf_event(ev, prog) for ev in events]
        assert all(isinstance(lk, pe.PerfEventIoctlLink) for lk in links)
        assert spin_until(lambda: int(coll.maps["counts"][SLOT]) > 0)
    finally:
        for lk in links:
            lk.close()
        for ev in events:
            ev.close()
    assert open_fds() == fds


def test_bad_perf_event_arguments(coll):
    prog = coll.programs["on_cpu_clock"]
    fds = open_fds()
    with pytest.raises(InvalidObjectError, match="not a perf event"):
        link.attach_perf_event(0, prog)  # stdin
    with pytest.raises(ebpf.EBPFError):
        link.attach_perf_event(1 << 20, prog)
    with pytest.raises(InvalidObjectError, match="SOCKET_FILTER"):
        link.attach_perf_event(0, coll.programs["not_tracing"])
    with pytest.raises(InvalidObjectError, match="not online"):
        link.open_cpu_clock(4096)
    with pytest.raises(ValueError):
        link.open_cpu_clock(0, sample_period=10, sample_freq=10)
    ev = link.open_cpu_clock(0)
    ev.close()
    with pytest.raises(ClosedError):
        link.attach_perf_event(ev, prog)
    assert open_fds() == fds
    p = coll.detach_program("on_cpu_clock")
    p.close()
    with link.open_cpu_clock(0) as ev2:
        n = open_fds()
        with pytest.raises(ClosedError):
            link.attach_perf_event(ev2, p)
        assert open_fds() == n


def test_tracepoint_program_on_a_tracepoint_perf_event(coll):
    # attach_perf_event also takes a tracepoint event the caller opened.
    from ebpf.link.tracing import tracepoint_id

    coll.maps["config"][0] = os.getpid()
    attr = pe.perf_event_attr(type=pe.PERF_TYPE_TRACEPOINT, config=tracepoint_id("syscalls", "sys_enter_getppid"),
                              sample_period=1)
    with pe.PerfEvent(pe.open_perf_fd(attr, -1, 0)) as ev, link.attach_perf_event(ev, coll.programs["tp_getppid"]):
        for _ in range(4):
            os.getppid()
    os.getppid()
    assert int(coll.maps["counts"][0]) == 4
