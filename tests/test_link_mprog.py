"""Multi-program hooks on the real kernel: every tcx anchor, attachments
without a link (replace included), the hook's revision, and netkit pairs.

Each test works in a throwaway network namespace.  The order of the programs
on a hook is read twice: from the kernel (``query_programs``) and from the
programs themselves (fixtures/link_mprog.bpf.c appends its number to the
``trace`` map for every test datagram, then lets the next program run).
"""

from __future__ import annotations

import errno
import os
import socket
import uuid

import pytest

import ebpf
from ebpf import AttachType, features
from ebpf import link as L
from ebpf.errors import ClosedError, EBPFError, NotSupportedError
from ebpf.link import LinkType

from conftest import fixture_path, require
from netutil import NetNS, add_link_pair, count_fds, sh, udp_exchange

pytestmark = pytest.mark.kernel

PORT = 4270


@pytest.fixture(scope="module")
def spec():
    return ebpf.load_collection_spec(fixture_path("link_mprog.o"))


@pytest.fixture
def coll(spec):
    with ebpf.Collection(spec) as c:
        c.maps["config"][0] = PORT
        yield c


def progs(coll):
    return [coll.programs[f"mprog_{i}"] for i in range(6)]


def prog_ids(coll):
    return {p.info().id: i for i, p in enumerate(progs(coll))}


def order(coll, ifname="lo", attach_type=AttachType.TCX_EGRESS):
    """The hook's programs as fixture numbers, in the kernel's order."""
    ids = prog_ids(coll)
    return [ids[p.id] for p in L.query_programs(ifname, attach_type).programs]


def run_order(coll, send):
    """The fixture numbers of the programs one datagram ran through."""
    trace = coll.maps["trace"]
    for i in range(65):
        trace[i] = 0
    send()
    n = int(trace[0])
    return [int(trace[1 + i]) for i in range(n)]


def send_lo():
    udp_exchange("127.0.0.1", [b"x"], port=PORT, sentinel=None)


# --------------------------------------------------------------------------
# tcx links at every anchor


def _anchors(p, links):
    """(anchor, expected order) with programs 0 and 1 attached by links[0..1]."""
    return [
        (L.head(), [2, 0, 1]),
        (L.tail(), [0, 1, 2]),
        (L.before_program(p[1]), [0, 2, 1]),
        (L.after_program(p[0]), [0, 2, 1]),
        (L.before_program_by_id(p[0].info().id), [2, 0, 1]),
        (L.after_program_by_id(p[1].info().id), [0, 1, 2]),
        (L.before_link(links[1]), [0, 2, 1]),
        (L.after_link(links[1]), [0, 1, 2]),
        (L.before_link_by_id(links[0].info().id), [2, 0, 1]),
        (L.after_link_by_id(links[0].info().id), [0, 2, 1]),
    ]


def test_tcx_every_anchor_places_the_link(netns, coll):
    def run():
        require(features.have_link_type, LinkType.TCX)
        p = progs(coll)
        seen = []
        with L.attach_tcx("lo", p[0], "egress") as l0, L.attach_tcx("lo", p[1], "egress") as l1:
            assert order(coll) == [0, 1]
            for anchor, want in _anchors(p, [l0, l1]):
                with L.attach_tcx("lo", p[2], "egress", anchor=anchor) as l2:
                    result = L.query_programs("lo", AttachType.TCX_EGRESS)
                    links = {p.id: p.link_id for p in result.programs}
                    assert links[p[2].info().id] == l2.info().id, anchor
                    seen.append((str(anchor), order(coll), run_order(coll, send_lo), want))
            assert order(coll) == [0, 1]
        assert order(coll) == []
        return seen

    for anchor, kernel_order, ran, want in netns.run(run):
        assert kernel_order == want, anchor
        assert ran == want, anchor  # the programs ran in the order the kernel reports


def test_tcx_before_after_keywords_are_anchors(netns, coll):
    def run():
        require(features.have_link_type, LinkType.TCX)
        p = progs(coll)
        with L.attach_tcx("lo", p[0], "egress") as l0:
            with L.attach_tcx("lo", p[1], "egress", before=l0):
                ahead = order(coll)
            with L.attach_tcx("lo", p[1], "egress", after=p[0]), L.attach_tcx("lo", p[2], "egress", before=p[1].fd):
                between = order(coll)
            with pytest.raises(EBPFError, match="not both"):
                L.attach_tcx("lo", p[1], "egress", anchor=L.head(), before=p[0])
        return ahead, between

    assert netns.run(run) == ([1, 0], [0, 2, 1])


def test_tcx_expected_revision(netns, coll):
    def run():
        require(features.have_link_type, LinkType.TCX)
        p = progs(coll)
        with L.attach_tcx("lo", p[0], "ingress"):
            first = L.query_programs("lo", AttachType.TCX_INGRESS)
            with L.attach_tcx("lo", p[1], "ingress", anchor=L.head(), expected_revision=first.revision):
                second = L.query_programs("lo", AttachType.TCX_INGRESS)
                with pytest.raises(EBPFError, match="changed since revision") as stale:
                    L.attach_tcx("lo", p[2], "ingress", expected_revision=first.revision)
                assert order(coll, "lo", AttachType.TCX_INGRESS) == [1, 0]
        return stale.value.errno, first, second

    err, first, second = netns.run(run)
    assert err == errno.ESTALE
    assert first.revision > 0
    assert second.revision == first.revision + 1  # each change moves the revision on by one
    assert second.program_ids[1:] == first.program_ids


def test_tcx_anchor_errors(netns, coll):
    def run():
        require(features.have_link_type, LinkType.TCX)
        p = progs(coll)
        before = count_fds()
        with L.attach_tcx("lo", p[0], "egress") as l0:
            with pytest.raises(EBPFError, match="not attached") as missing:
                L.attach_tcx("lo", p[1], "egress", anchor=L.before_program(p[3]))
            with pytest.raises(EBPFError, match="not attached"):
                L.attach_tcx("lo", p[1], "egress", anchor=L.after_link_by_id(0x7FFFFFF0))
            with pytest.raises(EBPFError, match="cannot take another program's place") as replace:
                L.attach_tcx("lo", p[1], "egress", anchor=L.replace_program(p[0]))
            with pytest.raises(EBPFError, match="already attached"):
                L.attach_tcx("lo", p[0], "egress", anchor=L.head())
            # The anchor names a program on the other direction's list.
            with pytest.raises(EBPFError, match="not attached"):
                L.attach_tcx("lo", p[1], "ingress", anchor=L.after_link(l0))
        assert count_fds() == before
        return missing.value.errno, replace.value.errno

    assert netns.run(run) == (errno.ENOENT, errno.EINVAL)


def test_a_closed_program_cannot_anchor(spec, coll):
    closed = ebpf.Program(spec.programs["mprog_4"], maps=coll.maps)
    closed.close()
    with pytest.raises(ClosedError):
        L.before_program(closed)


def test_anchor_constructors_check_their_targets(coll):
    p = coll.programs["mprog_0"]
    with pytest.raises(TypeError, match="before_program_by_id"):
        L.before_program(7)
    with pytest.raises(TypeError, match="FDLink"):
        L.after_link(p)
    with pytest.raises(TypeError, match="kernel id"):
        L.before_link_by_id(-1)
    with pytest.raises(TypeError, match="kernel id"):
        L.replace_program_by_id(True)
    assert L.before_program(p).resolve() == (p.fd, 1 << 3)
    assert L.after_program_by_id(5).resolve() == (5, 1 << 4 | 1 << 5)
    assert L.before_link_by_id(9).resolve() == (9, 1 << 3 | 1 << 5 | 1 << 13)
    assert L.head().resolve() == (0, 1 << 3) and L.tail().resolve() == (0, 1 << 4)
    assert L.replace_program(p).resolve() == (p.fd, 1 << 2)


# --------------------------------------------------------------------------
# attachments without a link: BPF_PROG_ATTACH, replace


def test_raw_attach_replace_update_and_detach(netns, coll):
    def run():
        require(features.have_link_type, LinkType.TCX)
        p = progs(coll)
        at = AttachType.TCX_EGRESS
        steps = {}
        with L.attach_tcx("lo", p[0], "egress") as l0:
            raw = L.raw_attach_program("lo", p[1], at, anchor=L.head())
            steps["head"] = (order(coll), run_order(coll, send_lo))
            query = L.query_programs("lo", at)
            steps["links"] = [q.link_id for q in query.programs] == [None, l0.info().id]
            # p[2] takes p[1]'s place: same position, one revision on.
            with L.raw_attach_program("lo", p[2], at, anchor=L.replace_program(p[1]),
                                      expected_revision=query.revision) as taker:
                steps["replace"] = (order(coll), run_order(coll, send_lo))
                raw.close()  # p[1] is gone already: closing must not fail
                # and p[3] takes p[2]'s, found by id
                with L.raw_attach_program("lo", p[3], at, anchor=L.replace_program_by_id(p[2].info().id)):
                    steps["replace_by_id"] = order(coll)
                    taker.close()
                    steps["after_taker_closed"] = order(coll)
            steps["detached"] = order(coll)
            with L.raw_attach_program("lo", p[4], at, anchor=L.after_link(l0)) as tail:
                info = tail.info()
                tail.update(p[5])
                steps["update"] = (order(coll), run_order(coll, send_lo), tail.info().program_id)
                with pytest.raises(EBPFError, match="attached by a link"):
                    L.raw_attach_program("lo", p[1], at, anchor=L.replace_program(p[0]))
                with pytest.raises(NotSupportedError):
                    tail.pin("/sys/fs/bpf/never")
            steps["closed"] = order(coll)
        steps["end"] = order(coll)
        return steps, info

    steps, info = netns.run(run)
    assert steps["head"] == ([1, 0], [1, 0])
    assert steps["links"]
    assert steps["replace"] == ([2, 0], [2, 0])
    assert steps["replace_by_id"] == [3, 0]
    assert steps["after_taker_closed"] == [3, 0]  # p[2] was replaced: nothing of its left to detach
    assert steps["detached"] == [0]
    assert steps["update"][:2] == ([0, 5], [0, 5])
    assert steps["update"][2] == coll.programs["mprog_5"].info().id
    assert info.extra == {"ifindex": 1, "attach_type": AttachType.TCX_EGRESS}
    assert info.program_id == coll.programs["mprog_4"].info().id and info.id == 0
    assert steps["closed"] == [0]
    assert steps["end"] == []


def test_raw_attachment_detaches_from_another_thread_and_netns(netns, coll):
    p = progs(coll)
    raw = netns.run(lambda: (require(features.have_link_type, LinkType.TCX),
                             L.raw_attach_program("lo", p[0], AttachType.TCX_INGRESS))[1])
    assert netns.run(order, coll, "lo", AttachType.TCX_INGRESS) == [0]
    raw.close()  # this thread is in the initial netns
    assert netns.run(order, coll, "lo", AttachType.TCX_INGRESS) == []
    raw.close()


def test_raw_attach_bad_input(netns, coll):
    p = coll.programs["mprog_0"]

    def run():
        with pytest.raises(EBPFError, match="not a tcx or netkit hook"):
            L.raw_attach_program("lo", p, AttachType.XDP)
        with pytest.raises(EBPFError, match="nope0"):
            L.raw_attach_program("nope0", p, AttachType.TCX_INGRESS)
        with pytest.raises(ValueError, match="expected_revision"):
            L.raw_attach_program("lo", p, AttachType.TCX_INGRESS, expected_revision=-1)

    netns.run(run)


# --------------------------------------------------------------------------
# query_programs on other hooks


def test_query_programs_of_a_cgroup_path(coll):
    from netutil import cgroup2_mount

    root = cgroup2_mount() / f"ebpf-test-query-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    root.mkdir()
    try:
        assert L.query_programs(root, AttachType.CGROUP_INET_INGRESS).programs == []
        fd = os.open(root, os.O_RDONLY)
        try:
            assert L.query_programs(fd, AttachType.CGROUP_INET_EGRESS).program_ids == []
        finally:
            os.close(fd)
    finally:
        root.rmdir()


# --------------------------------------------------------------------------
# netkit


def test_netkit_attach_is_refused_typed_or_names_the_device(netns, coll):
    """On a kernel without netkit the attach is a NotSupportedError; with it,
    ``lo`` is not a netkit device."""
    def run():
        try:
            features.have_link_type(LinkType.NETKIT)
        except NotSupportedError:
            with pytest.raises(NotSupportedError, match="netkit") as exc:
                L.attach_netkit("lo", coll.programs["mprog_0"], "primary")
            assert exc.value.min_kernel == "6.7"
            with pytest.raises(NotSupportedError, match="netkit"):
                L.raw_attach_program("lo", coll.programs["mprog_0"], AttachType.NETKIT_PEER)
            with pytest.raises(NotSupportedError, match="netkit"):
                L.query_programs("lo", AttachType.NETKIT_PRIMARY)
            return "refused"
        with pytest.raises(EBPFError, match="not a netkit device") as exc:
            L.attach_netkit("lo", coll.programs["mprog_0"], "primary")
        assert exc.value.errno == errno.ENXIO
        return "not netkit"

    assert netns.run(run) in ("refused", "not netkit")


def test_netkit_bad_input(netns, coll):
    def run():
        with pytest.raises(EBPFError, match="'primary' or 'peer'"):
            L.attach_netkit("lo", coll.programs["mprog_0"], "ingress")
        with pytest.raises(EBPFError, match="NETKIT_PRIMARY or NETKIT_PEER"):
            L.attach_netkit("lo", coll.programs["mprog_0"], AttachType.TCX_INGRESS)
        with pytest.raises(EBPFError, match="nope0"):
            L.attach_netkit("nope0", coll.programs["mprog_0"], "peer")

    netns.run(run)


@pytest.fixture
def netkit_pair(netns):
    """A netkit pair in L2 mode: the primary in ``netns``, the peer in a
    second namespace, both up with a /30 address each."""
    require(features.have_link_type, LinkType.NETKIT)
    peer_ns = NetNS(f"ebpf-test-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    sh("ip", "netns", "add", peer_ns.name)
    tag = uuid.uuid4().hex[:6]
    primary, peer = f"nkp{tag}", f"nkq{tag}"
    try:
        fd = os.open(peer_ns.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            netns.run(add_link_pair, "netkit", primary, peer, peer_netns_fd=fd,
                      data=[(5, (0).to_bytes(4, "little"))])  # IFLA_NETKIT_MODE: NETKIT_L2
        finally:
            os.close(fd)
        netns.exec("ip", "addr", "add", "10.252.7.1/30", "dev", primary)
        netns.exec("ip", "link", "set", primary, "up")
        peer_ns.exec("ip", "addr", "add", "10.252.7.2/30", "dev", peer)
        peer_ns.exec("ip", "link", "set", peer, "up")
        peer_ns.exec("ip", "link", "set", "lo", "up")
        yield netns, peer_ns, primary, peer
    finally:
        sh("ip", "netns", "del", peer_ns.name, check=False)


def test_netkit_links_see_packets_of_their_side(netkit_pair, coll):
    ns, peer_ns, primary, peer = netkit_pair
    p = progs(coll)

    def to_peer():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.sendto(b"x", ("10.252.7.2", PORT))

    rx = peer_ns.run(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    peer_ns.run(rx.bind, ("10.252.7.2", PORT))
    rx.settimeout(10)

    def run():
        with L.attach_netkit(primary, p[0], "primary") as l0, \
                L.attach_netkit(primary, p[1], AttachType.NETKIT_PRIMARY, anchor=L.before_link(l0)), \
                L.attach_netkit(primary, p[2], "peer"):
            info = l0.info()
            ran = run_order(coll, lambda: (to_peer(), rx.recv(10)))
            kernel = order(coll, primary, AttachType.NETKIT_PRIMARY)
            peer_side = order(coll, primary, AttachType.NETKIT_PEER)
            with pytest.raises(EBPFError, match="peer of a netkit pair"):
                peer_ns.run(L.attach_netkit, peer, p[3], "primary")
        return info, ran, kernel, peer_side

    with rx:
        info, ran, kernel, peer_side = ns.run(run)
    assert info.type == LinkType.NETKIT
    assert info.extra["attach_type"] == AttachType.NETKIT_PRIMARY
    assert ran == [1, 0] == kernel  # the peer's program does not see what the primary sends
    assert peer_side == [2]


def test_rtnetlink_pair_helper_makes_a_veth_pair(netns):
    """The netkit fixture's rtnetlink code, checked on a veth pair (same
    message shape: kind, and the peer as a nested ifinfomsg)."""
    netns.run(add_link_pair, "veth", "vta0", "vtb0")
    out = netns.exec("ip", "-o", "link", "show", "type", "veth").stdout
    assert "vta0@vtb0" in out and "vtb0@vta0" in out
    with pytest.raises(OSError) as exc:
        netns.run(add_link_pair, "no-such-kind", "x0", "x1")
    assert exc.value.errno in (errno.EOPNOTSUPP, errno.EINVAL)
