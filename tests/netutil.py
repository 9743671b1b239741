"""Test plumbing for network and cgroup links: throwaway network namespaces,
veth pairs, cgroups, UDP exchanges and fd counting.

Everything made here is removed in ``finally`` blocks, even when a test
fails.  Network namespaces are per thread: :meth:`NetNS.run` runs a call in
a fresh thread that entered the namespace (interface names, ifindexes,
XDP/tc attach and sockets then belong to it).
"""

from __future__ import annotations

import errno as errno_
import os
import random
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import pytest

from ebpf import _syscall

from conftest import skip_or_fail


def count_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True)


def run_in_netns(ns_path: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` in a new thread that entered the netns at ``ns_path``."""
    result: list = []
    failure: list = []

    def body() -> None:
        try:
            fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _syscall.setns(fd, _syscall.CLONE_NEWNET)
            finally:
                os.close(fd)
            result.append(fn(*args, **kwargs))
        except BaseException as exc:
            failure.append(exc)

    t = threading.Thread(target=body, name=f"netns-{os.path.basename(ns_path)}")
    t.start()
    t.join()
    if failure:
        raise failure[0]
    return result[0]


@dataclass
class NetNS:
    name: str

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return run_in_netns(self.path, fn, *args, **kwargs)

    def exec(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.name, *cmd, check=check)

    def ifindex(self, ifname: str) -> int:
        return self.run(socket.if_nametoindex, ifname)

    @property
    def inode(self) -> int:
        return os.stat(self.path).st_ino


def _require_ip() -> None:
    if os.geteuid() != 0:
        skip_or_fail("needs root for network namespaces")
    if sh("ip", "-V", check=False).returncode != 0:
        skip_or_fail("iproute2 'ip' missing")


@pytest.fixture
def netns() -> Iterator[NetNS]:
    """A fresh network namespace with ``lo`` up, deleted afterwards."""
    _require_ip()
    ns = NetNS(f"ebpf-test-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    sh("ip", "netns", "add", ns.name)
    try:
        ns.exec("ip", "link", "set", "lo", "up")
        yield ns
    finally:
        sh("ip", "netns", "del", ns.name, check=False)


@dataclass
class Veth:
    host: str  # end in the initial namespace
    peer: str  # end inside ``netns``
    host_ip: str
    peer_ip: str
    netns: NetNS


def _free_subnet() -> str:
    """A 10.x.y.0/30 prefix no local address uses."""
    used = sh("ip", "-4", "-o", "addr", "show").stdout
    for _ in range(100):
        prefix = f"10.{random.randint(200, 254)}.{random.randint(0, 255)}"
        if f" {prefix}." not in used:
            return prefix
    raise RuntimeError("no free 10.x.y.0/30 subnet")


@pytest.fixture
def veth(netns: NetNS) -> Iterator[Veth]:
    """A veth pair: one end in the host namespace, the other in ``netns``,
    both up with a /30 address each."""
    tag = uuid.uuid4().hex[:6]
    v = Veth(f"veh{tag}", f"ven{tag}", "", "", netns)
    prefix = _free_subnet()
    v.host_ip, v.peer_ip = f"{prefix}.1", f"{prefix}.2"
    sh("ip", "link", "add", v.host, "type", "veth", "peer", "name", v.peer)
    try:
        sh("ip", "link", "set", v.peer, "netns", netns.name)
        sh("ip", "addr", "add", f"{v.host_ip}/30", "dev", v.host)
        sh("ip", "link", "set", v.host, "up")
        netns.exec("ip", "addr", "add", f"{v.peer_ip}/30", "dev", v.peer)
        netns.exec("ip", "link", "set", v.peer, "up")
        yield v
    finally:
        sh("ip", "link", "del", v.host, check=False)


# --------------------------------------------------------------------------
# cgroups


def cgroup2_mount() -> Path:
    """Where cgroup v2 is mounted (mounting it under /tmp if nowhere)."""
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return Path(parts[1])
    target = Path("/tmp/ebpf-test-cgroup2")
    target.mkdir(exist_ok=True)
    if sh("mount", "-t", "cgroup2", "none", str(target), check=False).returncode != 0:
        skip_or_fail("cannot mount cgroup2")
    return target


@dataclass
class Cgroup:
    path: Path
    procs: List[subprocess.Popen]

    @property
    def id(self) -> int:
        return os.stat(self.path).st_ino

    def _enter(self) -> None:  # runs in the child before exec
        with open(self.path / "cgroup.procs", "w") as f:
            f.write("0")

    def python(self, code: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``python3 -c code`` inside the cgroup and wait for it."""
        p = subprocess.Popen(["python3", "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, preexec_fn=self._enter)
        self.procs.append(p)
        out, err = p.communicate(timeout=timeout)
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)


@pytest.fixture
def cgroup() -> Iterator[Cgroup]:
    """A new cgroup v2 directory; processes run in it are killed and the
    directory removed afterwards."""
    if os.geteuid() != 0:
        skip_or_fail("needs root for cgroups")
    root = cgroup2_mount()
    cg = Cgroup(root / f"ebpf-test-{os.getpid()}-{uuid.uuid4().hex[:6]}", [])
    cg.path.mkdir()
    try:
        yield cg
    finally:
        for p in cg.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        deadline = time.monotonic() + 10
        while True:
            try:
                cg.path.rmdir()
                break
            except OSError:
                # exited children leave the cgroup asynchronously
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


# --------------------------------------------------------------------------
# packets


def udp_exchange(ip: str, payloads: List[bytes], port: int = 0, timeout: float = 10.0,
                 sentinel: Optional[bytes] = b"END") -> List[bytes]:
    """Send ``payloads`` then ``sentinel`` over UDP to ``ip`` and return what
    arrived before the sentinel (which is never dropped by the test
    programs).  Ordering on one path is preserved, so no wait is needed to
    know the dropped datagrams are gone.  Runs in the caller's netns."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as rx, socket.socket(family, socket.SOCK_DGRAM) as tx:
        rx.bind((ip, port))
        rx.settimeout(timeout)  # a deadline against hanging, not a pass criterion
        dest = rx.getsockname()
        for p in payloads:
            tx.sendto(p, dest)
        if sentinel is None:
            return []
        tx.sendto(sentinel, dest)
        got = []
        while True:
            data = rx.recv(65536)
            if data == sentinel:
                return got
            got.append(data)


def free_udp_port(ip: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def wait_until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``cond`` until true; fail after ``timeout`` (a deadline only)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture(params=["collection", "standalone"])
def source(request: Any, net_spec: Any, coll: Any) -> Iterator[Callable[[str], Any]]:
    """Programs from the test module's Collection (``coll``), or loaded alone
    from their ProgramSpec (``net_spec``), sharing the collection's maps."""
    import ebpf

    alone: List[Any] = []

    def get(name: str) -> Any:
        if request.param == "collection":
            return coll.programs[name]
        p = ebpf.Program(net_spec.programs[name], maps=coll.maps)
        alone.append(p)
        return p

    yield get
    for p in alone:
        p.close()


# --------------------------------------------------------------------------
# rtnetlink: device pairs iproute2 may not know (Debian 12's cannot make netkit)

_RTM_NEWLINK = 16
_NLM_F_ACK, _NLM_F_EXCL, _NLM_F_CREATE = 0x4, 0x200, 0x400
_IFLA_IFNAME, _IFLA_LINKINFO, _IFLA_NET_NS_FD = 3, 18, 28
_IFLA_INFO_KIND, _IFLA_INFO_DATA = 1, 2
_INFO_PEER = 1  # VETH_INFO_PEER, IFLA_NETKIT_PEER_INFO


def _rtattr(kind: int, payload: bytes) -> bytes:
    import struct

    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + bytes(-len(raw) % 4)


def add_link_pair(kind: str, name: str, peer: str, *, peer_netns_fd: Optional[int] = None,
                  data: Optional[List[tuple]] = None) -> None:
    """Create a device pair of ``kind`` ("veth", "netkit") over rtnetlink in
    the calling thread's netns, the peer in ``peer_netns_fd``'s if given.
    ``data`` are extra (type, bytes) attributes of IFLA_INFO_DATA.  A kernel
    error is an OSError with its errno."""
    import struct

    ifinfo = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0)
    peer_attrs = _rtattr(_IFLA_IFNAME, peer.encode() + b"\0")
    if peer_netns_fd is not None:
        peer_attrs += _rtattr(_IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd))
    info_data = _rtattr(_INFO_PEER, ifinfo + peer_attrs) + b"".join(_rtattr(t, v) for t, v in data or ())
    linkinfo = _rtattr(_IFLA_INFO_KIND, kind.encode()) + _rtattr(_IFLA_INFO_DATA, info_data)
    body = ifinfo + _rtattr(_IFLA_IFNAME, name.encode() + b"\0") + _rtattr(_IFLA_LINKINFO, linkinfo)
    flags = 0x1 | _NLM_F_ACK | _NLM_F_EXCL | _NLM_F_CREATE
    msg = struct.pack("=IHHII", 16 + len(body), _RTM_NEWLINK, flags, 1, 0) + body
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE) as s:
        s.bind((0, 0))
        s.send(msg)
        reply = s.recv(65536)
    _length, mtype = struct.unpack_from("=IH", reply)
    if mtype != 2:  # NLMSG_ERROR carries the answer, 0 for success
        raise OSError(errno_.EPROTO, f"unexpected rtnetlink reply type {mtype}")
    err = -struct.unpack_from("=i", reply, 16)[0]
    if err:
        raise OSError(err, f"creating {kind} pair {name}/{peer}: {os.strerror(err)}")
