"""ebpf._handle.Handle: close once from any thread, context manager, and a
finalizer that works at interpreter shutdown, for every owner of a kernel
handle (links without a bpf_link, readers, FDOwner)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from ebpf import AttachType
from ebpf._epoll import EventReader
from ebpf._fd import FDOwner
from ebpf._handle import Handle
from ebpf.errors import ClosedError
from ebpf.link import Link
from ebpf.link.cgroup import ProgAttachCgroup
from ebpf.link.iter import _IterReader
from ebpf.link.perf_event import PerfEventIoctlLink, PerfEventLink
from ebpf.link.socket_filter import SocketFilter
from ebpf.link.struct_ops import StructOpsLink
from ebpf.link.tc import TCLink
from ebpf.link.usdt import USDTLink
from ebpf.ringbuf import Writer

from conftest import ROOT, fixture_path


class Counted(Handle):
    """Counts its releases; each takes a while, so racing closers overlap."""

    _kind = "counted"

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.releases = 0
        self.finished = False
        self._delay = delay
        self._fail = fail
        Handle.__init__(self)

    def _release(self) -> None:
        self.releases += 1
        time.sleep(self._delay)
        self.finished = True
        if self._fail:
            raise OSError("release failed")


def test_every_owner_of_a_kernel_handle_is_a_handle():
    owners = [FDOwner, Link, ProgAttachCgroup, TCLink, PerfEventIoctlLink, PerfEventLink, SocketFilter,
              StructOpsLink, USDTLink, _IterReader, EventReader, Writer]
    assert [c.__name__ for c in owners if not issubclass(c, Handle)] == []
    # Each writes only its release: close() and the finalizer are the base's.
    for cls in owners:
        assert "_release" in vars(cls) or cls in (Link, EventReader) or issubclass(cls, FDOwner), cls
        for name in ("close", "__del__", "__exit__"):
            owner = next(k for k in cls.__mro__ if name in vars(k))
            assert owner in (Handle, FDOwner, EventReader, Writer, _IterReader), (cls, name, owner)
            if name != "close":
                assert owner is Handle, (cls, name, owner)


def test_close_from_many_threads_releases_once():
    for _ in range(20):
        h = Counted(delay=0.01)
        start = threading.Barrier(16)
        seen: list = []

        def closer(h: Counted, start: threading.Barrier, seen: list) -> None:
            start.wait()
            h.close()
            # Every caller returns only once the release has finished.
            seen.append(h.finished)

        threads = [threading.Thread(target=closer, args=(h, start, seen)) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert h.releases == 1
        assert seen == [True] * 16
        assert h.closed


def test_context_manager_and_closed():
    with Counted() as h:
        assert isinstance(h, Counted) and not h.closed
        h._check_open()
    assert h.closed and h.releases == 1
    with pytest.raises(ClosedError, match="counted"):
        h._check_open()
    h.close()
    assert h.releases == 1
    with pytest.raises(KeyError):
        with Counted() as h2:
            raise KeyError("boom")
    assert h2.closed and h2.releases == 1


def test_a_failed_release_raises_once_and_the_handle_stays_closed():
    h = Counted(fail=True)
    with pytest.raises(OSError, match="release failed"):
        h.close()
    assert h.closed
    h.close()
    assert h.releases == 1


def test_finalizer_releases_what_was_not_closed():
    released = []

    class Noted(Handle):
        def __init__(self, name: str) -> None:
            self.name = name
            Handle.__init__(self)

        def _release(self) -> None:
            released.append(self.name)

    Noted("dropped")
    closed = Noted("closed")
    closed.close()
    del closed
    cyc = Noted("cycle")
    cyc.me = cyc  # type: ignore[attr-defined]
    del cyc
    gc.collect()
    assert sorted(released) == ["closed", "cycle", "dropped"]


def test_a_handle_whose_constructor_failed_releases_nothing():
    class Broken(Counted):
        def __init__(self) -> None:
            self.releases = 0
            raise ValueError("before Handle.__init__")

    with pytest.raises(ValueError):
        Broken()
    gc.collect()
    b = Broken.__new__(Broken)
    b.releases = 0
    assert b.closed
    b.close()
    b.__del__()
    assert b.releases == 0


def test_finalizer_errors_never_escape(capfd):
    class Failing(Handle):
        def __init__(self) -> None:
            Handle.__init__(self)

        def _release(self) -> None:
            raise RuntimeError("nope")

    Failing()
    gc.collect()
    assert "nope" not in capfd.readouterr().err


# --------------------------------------------------------------------------
# Interpreter shutdown, in subprocesses that exit with live handles.

_MARKER = """
import os
from ebpf._handle import Handle

class Marker(Handle):
    def __init__(self, fd, name):
        self._fd, self._name = fd, name
        Handle.__init__(self)

    def _release(self, _write=os.write):
        _write(self._fd, self._name.encode() + b"\\n")
"""


def _run(code: str, pass_fds=()) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          pass_fds=pass_fds)


def _run_marked(body: str) -> "tuple[subprocess.CompletedProcess, list]":
    """Run ``body`` (its Markers write to the fd named WFD) in a fresh
    interpreter; the result and the names of the Markers released."""
    rd, wr = os.pipe()
    try:
        r = _run(_MARKER + textwrap.dedent(body).replace("WFD", str(wr)), pass_fds=(wr,))
    finally:
        os.close(wr)
    with os.fdopen(rd) as f:
        return r, f.read().split()


def _quiet(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, r.stderr
    for bad in ("Exception ignored", "Traceback", "Error"):
        assert bad not in r.stderr, r.stderr


def _attached(cgroup_path, attach_type: AttachType) -> list:
    from ebpf import _libbpf

    fd = os.open(cgroup_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return _libbpf.prog_query(fd, int(attach_type))
    finally:
        os.close(fd)


def test_finalizers_at_interpreter_shutdown_release_everything():
    r, got = _run_marked("""
        import ebpf
        main_global = Marker(WFD, "main-global")
        class Cycle: pass
        c = Cycle(); c.me = c; c.h = Marker(WFD, "cycle")
        del c
        ebpf._test_kept = Marker(WFD, "other-module-global")
    """)
    _quiet(r)
    assert sorted(got) == ["cycle", "main-global", "other-module-global"]


@pytest.mark.kernel
def test_links_left_open_at_exit_are_detached(cgroup, netns):
    """A legacy cgroup attachment and a tc filter outlive their process
    unless detached: the finalizers must do it while the interpreter shuts
    down.  A reader, a writer and fd links ride along: exit must be quiet."""
    code = textwrap.dedent(f"""
        import os
        import ebpf
        from ebpf import AttachType, MapSpec, MapType, _syscall
        from ebpf import link as L, ringbuf
        from ebpf.link.cgroup import CgroupFlags

        fd = os.open("{netns.path}", os.O_RDONLY)
        _syscall.setns(fd, _syscall.CLONE_NEWNET)  # the main thread: lo is the netns' lo
        os.close(fd)
        coll = ebpf.Collection(ebpf.load_collection_spec("{fixture_path('link_net.o')}"))
        cg_link = L.attach_cgroup("{cgroup.path}", AttachType.CGROUP_INET_EGRESS, coll.programs["cg_count"],
                                  flags=CgroupFlags.ALLOW_MULTI)
        tc_link = L.attach_tc("lo", coll.programs["tc_count"], "egress", priority=9, handle=5)
        xdp_link = L.attach_xdp("lo", coll.programs["xdp_count"], L.XDPFlags.SKB_MODE)
        rb_map = ebpf.Map(MapSpec("rb", MapType.RINGBUF, 0, 0, 4096))
        reader = ringbuf.Reader(rb_map)
        urb_map = ebpf.Map(MapSpec("urb", MapType.USER_RINGBUF, 0, 0, 4096))
        writer = ringbuf.Writer(urb_map)
        print(type(cg_link).__name__, type(tc_link).__name__)
    """)
    r = _run(code)
    _quiet(r)
    assert r.stdout.split() == ["ProgAttachCgroup", "TCLink"]
    assert _attached(cgroup.path, AttachType.CGROUP_INET_EGRESS) == []
    assert "bpf" not in netns.exec("tc", "filter", "show", "dev", "lo", "egress").stdout
    assert "clsact" not in netns.exec("tc", "qdisc", "show", "dev", "lo").stdout


@pytest.mark.kernel
def test_finalizers_touch_no_module_globals(cgroup):
    """What shutdown may do before a handle's finalizer runs: every global
    of the modules involved is gone (CPython sets them to None).  The
    finalizers still release."""
    r, got = _run_marked(f"""
        import sys
        import ebpf
        from ebpf import AttachType
        from ebpf import link as L
        from ebpf.link.cgroup import CgroupFlags

        coll = ebpf.Collection(ebpf.load_collection_spec("{fixture_path('link_net.o')}"))
        handles = [Marker(WFD, "marker"),
                   L.attach_cgroup("{cgroup.path}", AttachType.CGROUP_INET_EGRESS, coll.programs["cg_count"],
                                   flags=CgroupFlags.ALLOW_MULTI)]
        import os
        _exit = os._exit
        keep = dict(sys.modules)  # the module objects themselves stay alive
        for name, mod in keep.items():
            if name == "ebpf" or name.startswith("ebpf."):
                for key in list(vars(mod)):
                    if not key.startswith("__"):
                        vars(mod)[key] = None
        for mod in ("os", "errno", "threading", "ctypes"):
            for key in list(vars(keep[mod])):
                if not key.startswith("__"):
                    vars(keep[mod])[key] = None
        del handles  # the finalizers run here, with those globals gone
        sys.stdout.write("done\\n")
        sys.stdout.flush()
        _exit(0)  # this interpreter is in no state to shut down by itself
    """)
    assert r.returncode == 0, r.stderr
    assert "done" in r.stdout
    assert "Exception ignored" not in r.stderr, r.stderr
    assert got == ["marker"]
    assert _attached(cgroup.path, AttachType.CGROUP_INET_EGRESS) == []
