"""Cgroup attachments on the real kernel: bpf_link and legacy BPF_PROG_ATTACH.

A child process runs inside a throwaway cgroup v2 (tests/netutil.py) and
sends UDP datagrams; the programs of fixtures/link_net.bpf.c count them
(map counters) and, for cg_deny, refuse them (the child sees EPERM).
"""

from __future__ import annotations

import ctypes
import errno
import os

import pytest

import ebpf
from ebpf import AttachType, _libbpf
from ebpf import link as L
from ebpf.errors import ClosedError, EBPFError, NotSupportedError
from ebpf.link import LinkType
from ebpf.link.cgroup import CgroupFlags, ProgAttachCgroup

from conftest import fixture_path
from netutil import Cgroup, count_fds, free_udp_port

pytestmark = pytest.mark.kernel

CG, CG_DENY, CG_SOCK = 4, 5, 9  # counter slots of fixtures/link_net.bpf.c
EGRESS = AttachType.CGROUP_INET_EGRESS


@pytest.fixture(scope="module")
def net_spec():
    return ebpf.load_collection_spec(fixture_path("link_net.o"))


@pytest.fixture
def coll(net_spec):
    with ebpf.Collection(net_spec) as c:
        c.maps["config"][0] = free_udp_port()
        yield c


def send3(cg: Cgroup, port: int) -> list:
    """Three UDP datagrams from a process in ``cg``; what each sendto said."""
    code = (
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "out = []\n"
        "for p in (b'a', b'b', b'c'):\n"
        "    try:\n"
        f"        s.sendto(p, ('127.0.0.1', {port})); out.append('ok')\n"
        "    except PermissionError:\n"
        "        out.append('EPERM')\n"
        "print(' '.join(out))\n"
    )
    r = cg.python(code)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def attached_count(cg: Cgroup, attach_type: AttachType) -> int:
    fd = os.open(cg.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags, cnt = ctypes.c_uint32(), ctypes.c_uint32(0)
        _libbpf.lib.bpf_prog_query(fd, int(attach_type), 0, ctypes.byref(flags), None, ctypes.byref(cnt))
        return cnt.value
    finally:
        os.close(fd)


def test_cgroup_link_counts_updates_and_detaches(cgroup, coll, source):
    counts, port = coll.maps["counts"], coll.maps["config"][0]
    prog = source("cg_count")
    link = L.attach_cgroup(str(cgroup.path), EGRESS, prog)
    with link:
        assert isinstance(link, L.FDLink)
        info = link.info()
        assert info.type == LinkType.CGROUP
        assert info.extra == {"cgroup_id": cgroup.id, "attach_type": EGRESS}
        assert info.program_id == prog.info().id
        assert send3(cgroup, port) == ["ok"] * 3
        assert counts[CG] == 3
        link.update(source("cg_deny"))
        assert send3(cgroup, port) == ["EPERM"] * 3
        assert (counts[CG], counts[CG_DENY]) == (3, 3)
    assert attached_count(cgroup, EGRESS) == 0
    assert send3(cgroup, port) == ["ok"] * 3
    assert (counts[CG], counts[CG_DENY]) == (3, 3)


def test_cgroup_link_by_fd_pinned(cgroup, coll, pin_dir):
    counts = coll.maps["counts"]
    fd = os.open(cgroup.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        link = L.attach_cgroup(fd, AttachType.CGROUP_INET_SOCK_CREATE, coll.programs["cg_sock_deny"])
    finally:
        os.close(fd)  # the link keeps its own reference
    with link:
        link.pin(pin_dir / "cg")
    r = cgroup.python("import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)")
    assert "PermissionError" in r.stderr  # still attached through the pin
    assert counts[CG_SOCK] >= 1
    with L.load_pinned_link(pin_dir / "cg") as again:
        assert again.info().extra["cgroup_id"] == cgroup.id
        again.unpin()
    assert cgroup.python("import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)").returncode == 0


def test_cgroup_legacy_multi(cgroup, coll, source):
    counts, port = coll.maps["counts"], coll.maps["config"][0]
    a = L.attach_cgroup(cgroup.path, EGRESS, source("cg_count"), flags=CgroupFlags.ALLOW_MULTI)
    with a:
        assert isinstance(a, ProgAttachCgroup)
        info = a.info()
        assert info.id == 0 and info.extra["cgroup_id"] == cgroup.id
        assert info.extra["flags"] == CgroupFlags.ALLOW_MULTI
        with pytest.raises(NotSupportedError):
            a.pin("/sys/fs/bpf/never")
        with L.attach_cgroup(cgroup.path, EGRESS, source("cg_deny"), flags=CgroupFlags.ALLOW_MULTI):
            assert attached_count(cgroup, EGRESS) == 2
            assert send3(cgroup, port) == ["EPERM"] * 3
            assert (counts[CG], counts[CG_DENY]) == (3, 3)  # both ran
        assert send3(cgroup, port) == ["ok"] * 3
        a.update(coll.programs["cg_deny"])  # BPF_F_REPLACE in place
        assert attached_count(cgroup, EGRESS) == 1
        assert a.info().program_id == coll.programs["cg_deny"].info().id
        assert send3(cgroup, port) == ["EPERM"] * 3
        assert (counts[CG], counts[CG_DENY]) == (6, 6)
    assert a.closed
    assert attached_count(cgroup, EGRESS) == 0
    assert send3(cgroup, port) == ["ok"] * 3


def test_cgroup_legacy_override_update_and_program_closed(cgroup, coll, net_spec):
    counts, port = coll.maps["counts"], coll.maps["config"][0]
    prog = ebpf.Program(net_spec.programs["cg_count"], maps=coll.maps)
    link = L.attach_cgroup(cgroup.path, EGRESS, prog, flags=CgroupFlags.ALLOW_OVERRIDE)
    prog.close()  # the attachment holds its own reference and can still detach
    with link:
        assert send3(cgroup, port) == ["ok"] * 3
        link.update(coll.programs["cg_deny"])
        assert attached_count(cgroup, EGRESS) == 1
        assert send3(cgroup, port) == ["EPERM"] * 3
    assert attached_count(cgroup, EGRESS) == 0
    assert (counts[CG], counts[CG_DENY]) == (3, 3)
    with pytest.raises(ClosedError):
        link.update(coll.programs["cg_count"])


def test_cgroup_bad_input_is_typed_and_leaves_nothing(cgroup, coll):
    prog = coll.programs["cg_count"]
    before = count_fds()
    missing = cgroup.path / "absent"
    with pytest.raises(EBPFError, match="absent") as e:
        L.attach_cgroup(missing, EGRESS, prog)
    assert e.value.errno == errno.ENOENT
    with pytest.raises(EBPFError, match="absent"):
        L.attach_cgroup(missing, EGRESS, prog, flags=CgroupFlags.ALLOW_MULTI)
    with pytest.raises(EBPFError, match="not a cgroup v2 directory"):
        L.attach_cgroup("/tmp", EGRESS, prog)
    with pytest.raises(EBPFError, match="XDP program") as e:
        L.attach_cgroup(cgroup.path, EGRESS, coll.programs["xdp_count"])
    assert e.value.errno == errno.EINVAL
    with pytest.raises(EBPFError, match="not a cgroup attach type"):
        L.attach_cgroup(cgroup.path, AttachType.XDP, prog)
    with L.attach_cgroup(cgroup.path, EGRESS, prog, flags=CgroupFlags.ALLOW_MULTI):
        with pytest.raises(EBPFError, match="already attached") as e:
            L.attach_cgroup(cgroup.path, EGRESS, prog, flags=CgroupFlags.ALLOW_MULTI)
        assert e.value.errno == errno.EINVAL  # the kernel's answer, with our explanation
        assert attached_count(cgroup, EGRESS) == 1
    assert count_fds() == before
    assert attached_count(cgroup, EGRESS) == 0
    closed = ebpf.Program(prog.spec, maps=coll.maps)
    closed.close()
    with pytest.raises(ClosedError):
        L.attach_cgroup(cgroup.path, EGRESS, closed)
