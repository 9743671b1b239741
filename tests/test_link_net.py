"""Network links on the real kernel: XDP, tcx and tc, netfilter, netns
(sk_lookup, flow dissector), socket filters and struct_ops.

Each test runs its programs against real packets inside a throwaway network
namespace (tests/netutil.py) and proves they ran from the map counters of
fixtures/link_net.bpf.c, or from what the sockets received.
"""

from __future__ import annotations

import ctypes
import errno
import socket

import pytest

import ebpf
from ebpf import AttachType, ProgramType, _libbpf
from ebpf import link as L
from ebpf.errors import ClosedError, EBPFError, NotSupportedError
from ebpf.link import LinkType
from ebpf.link import netfilter as nf

from conftest import fixture_path, skip_or_fail
from netutil import NetNS, count_fds, sh, udp_exchange

pytestmark = pytest.mark.kernel

# counter slots of fixtures/link_net.bpf.c
XDP, XDP_ALT, TC, TC_ALT, SOCKET, SK_LOOKUP, FLOW = 0, 1, 2, 3, 6, 7, 8
PAYLOADS = [b"a", b"Dx", b"b"]  # the 'D' datagram is dropped by the test programs


@pytest.fixture(scope="module")
def net_spec():
    return ebpf.load_collection_spec(fixture_path("link_net.o"))


@pytest.fixture
def coll(net_spec):
    with ebpf.Collection(net_spec) as c:
        yield c


def xdp_prog_id(ns: NetNS, ifindex: int, flags: int = 0) -> int:
    def query():
        pid = ctypes.c_uint32()
        _libbpf.lib.bpf_xdp_query_id(ifindex, flags, ctypes.byref(pid))
        return pid.value

    return ns.run(query)


def supported(fn, *args, **kwargs):
    """Call an attach; skip (or fail under CI) if the kernel lacks the hook."""
    try:
        return fn(*args, **kwargs)
    except NotSupportedError as exc:
        skip_or_fail(str(exc))


# --------------------------------------------------------------------------
# XDP


def test_xdp_generic_on_lo_counts_drops_and_detaches(netns, coll, source):
    counts = coll.maps["counts"]
    coll.maps["config"][0] = 4242
    prog = source("xdp_count")

    def run():
        link = L.attach_xdp("lo", prog, L.XDPFlags.SKB_MODE)
        try:
            got = udp_exchange("127.0.0.1", PAYLOADS, port=4242)
            return link, got, link.info()
        except BaseException:
            link.close()
            raise

    link, got, info = netns.run(run)
    with link:
        assert got == [b"a", b"b"]
        assert counts[XDP] == 4  # three payloads and the sentinel
        assert info.type == LinkType.XDP
        assert info.extra["ifindex"] == 1
        assert info.program_id == prog.info().id
        assert xdp_prog_id(netns, 1, int(L.XDPFlags.SKB_MODE)) == prog.info().id
    assert link.closed
    assert xdp_prog_id(netns, 1) == 0
    assert netns.run(udp_exchange, "127.0.0.1", PAYLOADS, port=4242) == PAYLOADS
    assert counts[XDP] == 4


def test_xdp_native_on_veth(veth, coll, net_spec):
    counts = coll.maps["counts"]
    coll.maps["config"][0] = 4243
    ns = veth.netns
    prog = ebpf.Program(net_spec.programs["xdp_count"], maps=coll.maps)  # alone from its spec
    with prog:
        link = ns.run(lambda: supported(L.attach_xdp, veth.peer, prog, L.XDPFlags.DRV_MODE))
        with link:
            ifindex = ns.ifindex(veth.peer)
            assert link.info().extra["ifindex"] == ifindex
            assert xdp_prog_id(ns, ifindex, int(L.XDPFlags.DRV_MODE)) == prog.info().id

            def bind():
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((veth.peer_ip, 4243))
                return s

            rx = ns.run(bind)  # a socket of the netns, used from here
            with rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
                rx.settimeout(10)
                for p in PAYLOADS + [b"END"]:
                    tx.sendto(p, (veth.peer_ip, 4243))
                got = []
                while (data := rx.recv(100)) != b"END":
                    got.append(data)
            assert got == [b"a", b"b"]
            assert counts[XDP] == 4
        assert xdp_prog_id(ns, ifindex) == 0


def test_xdp_update_swaps_program(netns, coll):
    counts = coll.maps["counts"]
    coll.maps["config"][0] = 4244

    def run():
        with L.attach_xdp(1, coll.programs["xdp_count"], L.XDPFlags.SKB_MODE) as link:
            udp_exchange("127.0.0.1", [b"a"], port=4244)
            first = (counts[XDP], counts[XDP_ALT])
            link.update(coll.programs["xdp_count_alt"])
            assert link.info().program_id == coll.programs["xdp_count_alt"].info().id
            got = udp_exchange("127.0.0.1", PAYLOADS, port=4244)
            return first, (counts[XDP], counts[XDP_ALT]), got

    first, second, got = netns.run(run)
    assert first == (2, 0)
    assert second == (2, 4)  # the new program counts and drops nothing
    assert got == PAYLOADS


def test_xdp_pinned_link_survives_close(netns, coll, pin_dir):
    prog = coll.programs["xdp_count"]
    path = pin_dir / "xdp_link"
    link = netns.run(L.attach_xdp, "lo", prog, L.XDPFlags.SKB_MODE)
    try:
        link.pin(path)
        link_id = link.info().id
    finally:
        link.close()
    assert path.exists()
    assert xdp_prog_id(netns, 1) == prog.info().id  # still attached: the pin holds it
    again = L.load_pinned_link(path)
    with again:
        assert again.info().id == link_id
        assert again.info().extra["ifindex"] == 1
        again.unpin()
        assert not path.exists()
    assert xdp_prog_id(netns, 1) == 0


def test_xdp_bad_input_is_typed_and_leaves_nothing(netns, coll):
    xdp = coll.programs["xdp_count"]

    def run():
        before = count_fds()
        with pytest.raises(EBPFError, match="no-such-if0") as e:
            L.attach_xdp("no-such-if0", xdp)
        assert e.value.errno == errno.ENODEV
        with pytest.raises(EBPFError, match="index 4711") as e:
            L.attach_xdp(4711, xdp)
        assert e.value.errno == errno.ENODEV
        with pytest.raises(EBPFError, match="SCHED_CLS program") as e:
            L.attach_xdp("lo", coll.programs["tc_count"])
        assert e.value.errno == errno.EINVAL
        with pytest.raises(NotSupportedError, match="native XDP on lo"):
            L.attach_xdp("lo", xdp, L.XDPFlags.DRV_MODE)
        with pytest.raises(EBPFError, match="one XDP mode"):
            L.attach_xdp("lo", xdp, L.XDPFlags.SKB_MODE | L.XDPFlags.DRV_MODE)
        with L.attach_xdp("lo", xdp, L.XDPFlags.SKB_MODE):
            with pytest.raises(EBPFError, match="already has an XDP program") as e:
                L.attach_xdp("lo", coll.programs["xdp_count_alt"], L.XDPFlags.SKB_MODE)
            assert e.value.errno == errno.EBUSY
        assert count_fds() == before

    netns.run(run)
    assert xdp_prog_id(netns, 1) == 0
    closed = ebpf.Program(coll.programs["xdp_count"].spec, maps=coll.maps)
    closed.close()
    with pytest.raises(ClosedError):
        netns.run(L.attach_xdp, "lo", closed)


# --------------------------------------------------------------------------
# tcx and tc


def test_tcx_ingress_counts_drops_updates(netns, coll, source):
    counts = coll.maps["counts"]
    coll.maps["config"][0] = 4250
    prog = source("tc_count")

    def run():
        link = supported(L.attach_tcx, "lo", prog, AttachType.TCX_INGRESS)
        with link:
            info = link.info()
            got = udp_exchange("127.0.0.1", PAYLOADS, port=4250)
            seen = counts[TC]
            link.update(source("tc_count_alt"))
            got_alt = udp_exchange("127.0.0.1", PAYLOADS, port=4250)
        after = udp_exchange("127.0.0.1", PAYLOADS, port=4250)
        return info, got, seen, got_alt, after

    info, got, seen, got_alt, after = netns.run(run)
    assert info.type == LinkType.TCX
    assert info.extra == {"ifindex": 1, "attach_type": AttachType.TCX_INGRESS}
    assert info.program_id == prog.info().id
    assert got == [b"a", b"b"] and seen == 4
    assert got_alt == PAYLOADS and counts[TC_ALT] == 4 and counts[TC] == 4
    assert after == PAYLOADS and counts[TC_ALT] == 4  # detached


def test_tcx_anchors_order_programs(netns, coll):
    """Both programs return TCX_PASS, which ends the chain: only the first
    one in the hook's order counts."""
    counts = coll.maps["counts"]
    coll.maps["config"][0] = 4251
    first, alt = coll.programs["tc_count"], coll.programs["tc_count_alt"]

    def run():
        with supported(L.attach_tcx, "lo", first, "egress") as base:
            with L.attach_tcx("lo", alt, "egress", before=base):
                udp_exchange("127.0.0.1", [b"a"], port=4251)
                ahead = (counts[TC], counts[TC_ALT])
            with L.attach_tcx("lo", alt, "egress", after=first):
                udp_exchange("127.0.0.1", [b"a"], port=4251)
                behind = (counts[TC], counts[TC_ALT])
            with pytest.raises(EBPFError, match="anchor"):
                L.attach_tcx("lo", alt, "egress", before=coll.programs["tc_count_alt"])
            with pytest.raises(EBPFError, match="changed since revision") as e:
                L.attach_tcx("lo", alt, "egress", expected_revision=1 << 40)
            assert e.value.errno == errno.ESTALE
        return ahead, behind

    ahead, behind = netns.run(run)
    assert ahead == (0, 2)
    assert behind == (2, 2)


def test_tc_legacy_filter_and_qdisc_cleanup(netns, coll, source):
    counts = coll.maps["counts"]
    coll.maps["config"][0] = 4252
    prog = source("tc_count")

    def run():
        link = L.attach_tc("lo", prog, "egress", priority=7, handle=3)
        try:
            qdiscs = sh("tc", "qdisc", "show", "dev", "lo").stdout
            got = udp_exchange("127.0.0.1", PAYLOADS, port=4252)
            info = link.info()
            with pytest.raises(EBPFError, match="already exists") as e:
                L.attach_tc("lo", prog, "egress", priority=7, handle=3)
            assert e.value.errno == errno.EEXIST
            link.update(source("tc_count_alt"))
            got_alt = udp_exchange("127.0.0.1", PAYLOADS, port=4252)
            return link, qdiscs, got, info, got_alt
        except BaseException:
            link.close()
            raise

    link, qdiscs, got, info, got_alt = netns.run(run)
    assert "clsact" in qdiscs
    assert got == [b"a", b"b"] and counts[TC] == 4
    assert info.program_id == prog.info().id
    assert info.extra == {"ifindex": 1, "direction": "egress", "handle": 3, "priority": 7}
    assert got_alt == PAYLOADS and counts[TC_ALT] == 4
    with pytest.raises(NotSupportedError):
        link.pin("/sys/fs/bpf/never")
    link.close()  # from this thread, which is in another netns
    assert "clsact" not in netns.exec("tc", "qdisc", "show", "dev", "lo").stdout
    assert netns.run(udp_exchange, "127.0.0.1", PAYLOADS, port=4252) == PAYLOADS


def test_tc_legacy_keeps_a_qdisc_it_did_not_create(netns, coll):
    netns.exec("tc", "qdisc", "add", "dev", "lo", "clsact")

    def run():
        with L.attach_tc("lo", coll.programs["tc_count"], "ingress"):
            pass
        return sh("tc", "qdisc", "show", "dev", "lo").stdout, sh("tc", "filter", "show", "dev", "lo", "ingress").stdout

    qdiscs, filters = netns.run(run)
    assert "clsact" in qdiscs
    assert "bpf" not in filters


def test_tc_bad_input(netns, coll):
    tc = coll.programs["tc_count"]

    def run():
        before = count_fds()
        with pytest.raises(EBPFError, match="nope0"):
            L.attach_tc("nope0", tc)
        with pytest.raises(EBPFError, match="nope0"):
            L.attach_tcx("nope0", tc, "ingress")
        with pytest.raises(EBPFError, match="'sideways'"):
            L.attach_tc("lo", tc, "sideways")
        with pytest.raises(EBPFError, match="TCX_INGRESS or TCX_EGRESS"):
            L.attach_tcx("lo", tc, AttachType.XDP)
        with pytest.raises(EBPFError, match="XDP program"):
            L.attach_tc("lo", coll.programs["xdp_count"])
        with pytest.raises(EBPFError, match="XDP program"):
            L.attach_tcx("lo", coll.programs["xdp_count"], "ingress")
        with pytest.raises(EBPFError, match="priority"):
            L.attach_tc("lo", tc, priority=70000)
        assert count_fds() == before
        return sh("tc", "qdisc", "show", "dev", "lo").stdout

    assert "clsact" not in netns.run(run)


# --------------------------------------------------------------------------
# netfilter


@pytest.fixture
def nf_coll():
    spec = ebpf.load_collection_spec(fixture_path("link_net_nf.o"))
    # libbpf 1.1.2 does not know SEC("netfilter"): say what the programs are.
    for ps in spec.programs.values():
        ps.type, ps.attach_type = ProgramType.NETFILTER, AttachType.NETFILTER
    try:
        c = ebpf.Collection(spec)
    except NotSupportedError as exc:
        skip_or_fail(str(exc))
    with c:
        yield spec, c


def test_netfilter_local_in_counts_and_drops(netns, nf_coll):
    _, c = nf_coll
    counts = c.maps["nf_counts"]
    c.maps["nf_config"][0] = 200  # drop packets longer than 200 bytes
    prog = c.programs["nf_count"]

    def run():
        with supported(L.attach_netfilter, prog, nf.NFPROTO_IPV4, nf.NF_INET_LOCAL_IN, -128) as link:
            info = link.info()
            got = udp_exchange("127.0.0.1", [b"a", b"D" * 300, b"b"])
        return info, got, udp_exchange("127.0.0.1", [b"D" * 300])

    info, got, after = netns.run(run)
    assert info.type == LinkType.NETFILTER
    assert info.extra == {"pf": nf.NFPROTO_IPV4, "hooknum": nf.NF_INET_LOCAL_IN, "priority": -128, "flags": 0}
    assert info.program_id == prog.info().id
    assert got == [b"a", b"b"]
    assert counts[0] == 4 and counts[1] == 1  # a fresh netns has no other IPv4 traffic
    assert after == [b"D" * 300] and counts[0] == 4


def test_netfilter_standalone_program_on_ipv6_local_out(netns, nf_coll):
    spec, c = nf_coll
    counts = c.maps["nf_counts"]
    with ebpf.Program(spec.programs["nf_count_simple"], maps=c.maps) as prog:

        def run():
            with supported(L.attach_netfilter, prog, nf.NFPROTO_IPV6, nf.NF_INET_LOCAL_OUT, 10) as link:
                got = udp_exchange("::1", [b"a", b"b"])
                return link.info(), got, udp_exchange("127.0.0.1", [b"c"])

        info, got, v4 = netns.run(run)
    assert info.extra == {"pf": nf.NFPROTO_IPV6, "hooknum": nf.NF_INET_LOCAL_OUT, "priority": 10, "flags": 0}
    assert got == [b"a", b"b"] and v4 == [b"c"]
    assert counts[0] == 3  # the IPv6 datagrams only


def test_netfilter_bad_input(netns, nf_coll, coll):
    _, c = nf_coll
    prog = c.programs["nf_count"]

    def run():
        before = count_fds()
        with pytest.raises(EBPFError, match="hook 9"):
            supported(L.attach_netfilter, prog, nf.NFPROTO_IPV4, 9, 0)
        with pytest.raises(EBPFError, match="family 7"):
            L.attach_netfilter(prog, 7, nf.NF_INET_LOCAL_IN, 0)
        with pytest.raises(EBPFError, match="priority"):
            L.attach_netfilter(prog, nf.NFPROTO_IPV4, nf.NF_INET_LOCAL_IN, -(2**31))
        with pytest.raises(EBPFError, match="XDP program"):
            L.attach_netfilter(coll.programs["xdp_count"], nf.NFPROTO_IPV4, nf.NF_INET_LOCAL_IN, 0)
        assert count_fds() == before

    netns.run(run)


# --------------------------------------------------------------------------
# network namespaces


def test_sk_lookup_steers_connections_into_owned_socket(netns, coll, source):
    counts = coll.maps["counts"]
    coll.maps["config"][1] = 7777  # nobody listens on 7777
    prog = source("sk_lookup_redirect")

    def listener():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        return s

    def connect():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect(("127.0.0.1", 7777))
            return s
        except OSError as exc:
            s.close()
            return exc

    with netns.run(listener) as lst:
        lst.settimeout(10)
        coll.maps["redir_map"][0] = lst.fileno()
        refused = netns.run(connect)
        assert isinstance(refused, ConnectionRefusedError)
        with L.attach_netns(netns.path, prog) as link:
            info = link.info()
            conn = netns.run(connect)
            assert isinstance(conn, socket.socket), conn
            with conn:
                peer, _ = lst.accept()
                with peer:
                    conn.sendall(b"steered")
                    assert peer.recv(16) == b"steered"
                    assert peer.getsockname() == ("127.0.0.1", 7777)
        assert counts[SK_LOOKUP] == 1
        assert isinstance(netns.run(connect), ConnectionRefusedError)  # detached
    assert info.type == LinkType.NETNS
    assert info.extra == {"netns_ino": netns.inode, "attach_type": AttachType.SK_LOOKUP}
    assert info.program_id == prog.info().id


def _hash_fanout_traffic():
    """Packets delivered to an AF_PACKET socket with hash fanout get their
    flow hash computed, which runs the netns' flow dissector."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800)) as ps:
        ps.bind(("lo", 0))
        ps.setsockopt(263, 18, 0x4242)  # SOL_PACKET, PACKET_FANOUT, id | PACKET_FANOUT_HASH << 16
        udp_exchange("127.0.0.1", [b"a", b"b"])


def test_flow_dissector_attach_info_and_runs(netns, coll, source):
    counts = coll.maps["counts"]
    prog = source("flow_count")
    with open(netns.path) as nsfile:  # by fd this time
        link = L.attach_netns(nsfile.fileno(), prog)
    with link:
        info = link.info()
        assert info.extra == {"netns_ino": netns.inode, "attach_type": AttachType.FLOW_DISSECTOR}
        netns.run(_hash_fanout_traffic)
        seen = counts[FLOW]
        assert seen >= 1
    netns.run(_hash_fanout_traffic)
    assert counts[FLOW] == seen


def test_netns_bad_input(netns, coll):
    before = count_fds()
    with pytest.raises(EBPFError, match="/run/netns/absent-ns") as e:
        L.attach_netns("/run/netns/absent-ns", coll.programs["sk_lookup_redirect"])
    assert e.value.errno == errno.ENOENT
    with pytest.raises(EBPFError, match="XDP program"):
        L.attach_netns(netns.path, coll.programs["xdp_count"])
    with pytest.raises(EBPFError, match="/tmp"):
        L.attach_netns("/tmp", coll.programs["sk_lookup_redirect"])
    assert count_fds() == before


# --------------------------------------------------------------------------
# socket filters


def _filtered_exchange(prog_or_none, use_fd=False):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(10)
        link = L.attach_socket_filter(rx.fileno() if use_fd else rx, prog_or_none) if prog_or_none else None
        for p in PAYLOADS + [b"END"]:
            tx.sendto(p, rx.getsockname())
        got = []
        while (data := rx.recv(100)) != b"END":
            got.append(data)
        return link, got


def test_socket_filter_drops_by_payload(coll, source):
    counts = coll.maps["counts"]
    prog = source("socket_drop_d")
    link, got = _filtered_exchange(prog)
    assert got == [b"a", b"b"]
    assert counts[SOCKET] == 4
    link.close()  # the socket is gone already: nothing to do
    assert _filtered_exchange(None)[1] == PAYLOADS


def test_socket_filter_close_detach_and_update(coll):
    counts = coll.maps["counts"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(10)

        def exchange():
            for p in PAYLOADS + [b"END"]:
                tx.sendto(p, rx.getsockname())
            got = []
            while (data := rx.recv(100)) != b"END":
                got.append(data)
            return got

        with L.attach_socket_filter(rx.fileno(), coll.programs["socket_drop_d"]):
            assert exchange() == [b"a", b"b"]
        assert exchange() == PAYLOADS  # the link's close detached it
        assert counts[SOCKET] == 4
        with pytest.raises(EBPFError, match="no filter") as e:
            L.detach_socket_filter(rx)
        assert e.value.errno == errno.ENOENT
        L.attach_socket_filter(rx, coll.programs["socket_drop_d"])
        L.detach_socket_filter(rx)
        assert exchange() == PAYLOADS
        assert counts[SOCKET] == 4


def test_socket_filter_bad_input(coll):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        with pytest.raises(EBPFError, match="XDP program"):
            L.attach_socket_filter(s, coll.programs["xdp_count"])
    with pytest.raises(ClosedError):
        L.attach_socket_filter(s, coll.programs["socket_drop_d"])
    with open("/dev/null") as f:
        with pytest.raises(EBPFError, match="not a socket"):
            L.attach_socket_filter(f.fileno(), coll.programs["socket_drop_d"])


# --------------------------------------------------------------------------
# struct_ops

CC_NAME = "pyebpf_cc"  # .name in fixtures/link_net_struct_ops.bpf.c


@pytest.fixture
def cc_lock():
    """The congestion control's name is machine-wide: copies of the suite
    running at once (worktrees, CI beside a session) take turns."""
    import fcntl

    with open("/tmp/ebpf-test-struct-ops.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def available_cc() -> list:
    with open("/proc/sys/net/ipv4/tcp_available_congestion_control") as f:
        return f.read().split()


def _use_cc(name: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, name.encode())
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0") == name.encode()


@pytest.mark.parametrize("with_link", [False, True], ids=["map-update", "bpf_link"])
def test_struct_ops_registers_tcp_congestion_control(with_link, cc_lock):
    if CC_NAME in available_cc():
        pytest.fail(f"{CC_NAME} is registered already (left over from an earlier run?)")
    spec = ebpf.load_collection_spec(fixture_path("link_net_struct_ops.o"))
    if with_link:
        spec.maps[CC_NAME].flags |= ebpf.MapFlags.LINK
    with ebpf.Collection(spec) as c:
        m = c.maps[CC_NAME]
        link = supported(L.attach_struct_ops, m)
        with link:
            assert CC_NAME in available_cc()
            _use_cc(CC_NAME)
            info = link.info()
            assert info.type == LinkType.STRUCT_OPS
            assert info.extra["map_id"] == m.info().id
            assert isinstance(link, L.FDLink) == with_link
        assert CC_NAME not in available_cc()
        if with_link:  # a BPF_F_LINK map can be linked again
            with L.attach_struct_ops(m):
                assert CC_NAME in available_cc()
            assert CC_NAME not in available_cc()
        else:
            with pytest.raises(EBPFError, match="registers only once"):
                L.attach_struct_ops(m)


def test_struct_ops_bad_input(coll, cc_lock):
    with pytest.raises(EBPFError, match="not a STRUCT_OPS map"):
        L.attach_struct_ops(coll.maps["counts"])
    spec = ebpf.load_collection_spec(fixture_path("link_net_struct_ops.o"))
    with ebpf.Collection(spec) as c:
        m = c.detach_map(CC_NAME)
    with m:  # its programs closed with the collection
        with pytest.raises(ClosedError, match="pyebpf_ssthresh"):
            L.attach_struct_ops(m)
    with pytest.raises(ClosedError):
        L.attach_struct_ops(m)
    assert CC_NAME not in available_cc()
