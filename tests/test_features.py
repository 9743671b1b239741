"""Feature probes: True when present, NotSupportedError when not; cached."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from typing import Annotated

import pytest

import ebpf
from ebpf import MapFlags, MapType, ProgramType, asm, features
from ebpf import link as L
from ebpf.errors import NotSupportedError
from ebpf.link import LinkType
from ebpf.link import netfilter as nf

from conftest import ROOT, fixture_path

pytestmark = pytest.mark.kernel


def test_present_features():
    assert features.have_map_type(MapType.HASH) is True
    assert features.have_map_type(MapType.RINGBUF) is True
    assert features.have_program_type(ProgramType.XDP) is True
    assert features.have_program_type(ProgramType.SYSCALL) is True
    assert features.have_program_helper(ProgramType.SOCKET_FILTER, asm.Helper.map_lookup_elem) is True
    assert features.object_names_supported() is True
    assert features.have_batch_api() is True


def test_missing_features_raise():
    with pytest.raises(NotSupportedError):
        features.have_map_type(200)
    with pytest.raises(NotSupportedError):
        features.have_program_type(200)
    # Socket filters may not override return values of kernel functions.
    with pytest.raises(NotSupportedError) as exc:
        features.have_program_helper(ProgramType.SOCKET_FILTER, asm.Helper.override_return)
    assert "helper" in str(exc.value)


def test_probes_are_cached(monkeypatch):
    features.have_map_type(MapType.ARRAY)
    from ebpf import _libbpf

    def boom(*a):
        raise AssertionError("probe ran twice")

    monkeypatch.setattr(_libbpf.lib, "libbpf_probe_bpf_map_type", boom)
    assert features.have_map_type(MapType.ARRAY) is True


def test_unknown_map_type_is_not_supported():
    with pytest.raises(NotSupportedError):
        ebpf.Map(ebpf.MapSpec("nope", 200, 4, 4, 1))


def test_have_iterator():
    assert features.have_iterator("task") is True
    with pytest.raises(NotSupportedError, match="bpf_iter_no_such_target"):
        features.have_iterator("no_such_target")


def _outcome(fn):
    try:
        fn()
    except NotSupportedError as exc:
        return type(exc)
    return True


def test_iterator_probe_agrees_with_a_real_load():
    # Kernels differ: some refuse bpf_map_elem iterators by policy.  Whatever
    # this one does, the probe must say what a real load then meets.
    for target, prog in (("task", "dump_tgids"), ("bpf_map_elem", "dump_elems")):
        spec = ebpf.load_collection_spec(fixture_path("link_iter.o"))

        def load(spec=spec, prog=prog):
            objs = type("Objs", (), {"__annotations__": {"p": Annotated[ebpf.Program, prog]}})
            spec.load_and_assign(objs).p.close()

        assert _outcome(lambda target=target: features.have_iterator(target)) == _outcome(load), target


def test_newer_types_than_libbpf_knows_are_probed_with_the_kernel():
    # libbpf 1.1.2 knows neither; the answer must match what the kernel does.
    def arena():
        ebpf.Map(ebpf.MapSpec("arena", MapType.ARENA, 0, 0, 1, flags=1 << 10)).close()

    def netfilter():
        insns = asm.Instructions([asm.mov_imm(asm.R0, 1), asm.exit()])
        ebpf.Program(ebpf.ProgramSpec("nf", ProgramType.NETFILTER, attach_type=ebpf.AttachType.NETFILTER,
                                      instructions=insns, license="GPL")).close()

    assert _outcome(lambda: features.have_map_type(MapType.ARENA)) == _outcome(arena)
    assert _outcome(lambda: features.have_program_type(ProgramType.NETFILTER)) == _outcome(netfilter)


def test_tracing_type_is_there_even_where_fentry_is_refused():
    # tp_btf and iterators are TRACING programs too.
    assert features.have_program_type(ProgramType.TRACING) is True


PROBE_IMPORTS = """
import ebpf
from ebpf import features, MapFlags, MapType, ProgramType
from ebpf.link import LinkType
"""

# One line per call in CALLS: DENIED <error class>, NOTSUPPORTED or YES.
PROBE_EACH = r"""
for probe, *args in CALLS:
    try:
        probe(*args)
    except ebpf.PermissionDeniedError as exc:
        print("DENIED", type(exc).__name__, probe.__name__)
    except ebpf.NotSupportedError as exc:
        print("NOTSUPPORTED", probe.__name__, exc)
    else:
        print("YES", probe.__name__)
"""

UNPRIVILEGED_PROBES = """
CALLS = [(features.have_map_type, MapType.HASH), (features.have_map_type, MapType.ARENA),
         (features.have_program_type, ProgramType.XDP), (features.have_program_type, ProgramType.NETFILTER),
         (features.have_iterator, "task"), (features.have_tracing_programs,)]
"""


def unprivileged(calls: str) -> list:
    """What PROBE_EACH prints for ``calls`` (code setting CALLS) in a process without capabilities."""
    script = PROBE_IMPORTS + calls + PROBE_EACH
    out = subprocess.run(
        ["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-c", script],
        env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=60, cwd="/",
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_probes_without_privilege_say_so():
    lines = unprivileged(UNPRIVILEGED_PROBES)
    assert len(lines) == 6, lines
    for line in lines:
        assert line.startswith("DENIED PermissionDeniedError"), line


# --------------------------------------------------------------------------
# instruction set and verifier limits


def _socket_filter(insns):
    return ebpf.Program(ebpf.ProgramSpec("isa_check", ProgramType.SOCKET_FILTER, instructions=asm.Instructions(insns),
                                         license="GPL"))


def _runs_to(insns, want):
    """Load a socket filter and run it once: it must return ``want``."""
    def load_and_run():
        with _socket_filter(insns) as prog:
            assert prog.run(b"\0" * 64).retval == want
    return load_and_run


R0, R1, R2 = asm.R0, asm.R1, asm.R2

# What each probe promises, written as the programs a user would load (not
# the probes' own instructions), with the value each must compute.
ISA_PROGRAMS = {
    "have_bounded_loops": ([asm.mov_imm(R0, 0), asm.mov_imm(R1, 10),
                            asm.add_imm(R0, 2).with_symbol("loop"), asm.sub_imm(R1, 1), asm.jne_imm(R1, 0, "loop"),
                            asm.exit()], 20),
    "have_large_instructions": ([asm.mov_imm(R0, 0)] + [asm.add_imm(R0, 1)] * 5000 + [asm.exit()], 5000),
    "have_v2_isa": ([asm.mov_imm(R0, 7), asm.jlt_imm(R0, 9, "out"), asm.mov_imm(R0, 0),
                     asm.exit().with_symbol("out")], 7),
    "have_v3_isa": ([asm.mov_imm(R0, 7), asm.mov_imm(R1, -1), asm.jsgt32_imm(R1, 0, "bad"), asm.jlt32_imm(R0, 9, "out"),
                     asm.mov_imm(R0, 0).with_symbol("bad"), asm.exit().with_symbol("out")], 7),
    # sign extension, an unconditional byte swap and a 32-bit-offset jump
    "have_v4_isa": ([asm.mov_imm(R1, 0xFF), asm.movsx_reg(R2, R1, 8), asm.mov_imm(R0, 3), asm.add_reg(R0, R2),
                     asm.bswap(R0, 16), asm.jne_imm(R0, 0x0200, "bad"), asm.gotol("out"),
                     asm.mov_imm(R0, 0).with_symbol("bad"), asm.exit().with_symbol("out")], 0x0200),
}


@pytest.mark.parametrize("probe", sorted(ISA_PROGRAMS))
def test_isa_probes_agree_with_a_real_load(probe):
    insns, want = ISA_PROGRAMS[probe]
    assert _outcome(getattr(features, probe)) == _outcome(_runs_to(insns, want)), probe


def test_large_program_needs_more_than_the_old_limit():
    # The probe's claim is about programs over 4096 instructions.
    insns, _ = ISA_PROGRAMS["have_large_instructions"]
    assert len(insns) > 4096


# --------------------------------------------------------------------------
# map flags

# (flag, map type, key size, value size, extra flags): maps a user would make.
MAP_FLAGS = [
    (MapFlags.NO_PREALLOC, MapType.HASH, 8, 8, 0),
    (MapFlags.NO_COMMON_LRU, MapType.LRU_HASH, 4, 8, 0),
    (MapFlags.NUMA_NODE, MapType.HASH, 4, 4, 0),
    (MapFlags.RDONLY, MapType.ARRAY, 4, 16, 0),
    (MapFlags.WRONLY, MapType.HASH, 4, 16, 0),
    (MapFlags.ZERO_SEED, MapType.HASH, 4, 4, 0),
    (MapFlags.RDONLY_PROG, MapType.ARRAY, 4, 32, 0),
    (MapFlags.WRONLY_PROG, MapType.ARRAY, 4, 32, 0),
    (MapFlags.MMAPABLE, MapType.ARRAY, 4, 64, 0),
    (MapFlags.PRESERVE_ELEMS, MapType.PERF_EVENT_ARRAY, 4, 4, 0),
    (MapFlags.INNER_MAP, MapType.ARRAY, 4, 8, 0),
    (MapFlags.SEGV_ON_FAULT, MapType.ARENA, 0, 0, MapFlags.MMAPABLE),
    (MapFlags.NO_USER_CONV, MapType.ARENA, 0, 0, MapFlags.MMAPABLE),
]


@pytest.mark.parametrize("flag,mtype,key,value,extra", MAP_FLAGS, ids=[f[0].name for f in MAP_FLAGS])
def test_map_flag_probes_agree_with_a_real_map(flag, mtype, key, value, extra):
    def create():
        spec = ebpf.MapSpec(f"flag_{flag.name.lower()}"[:15], mtype, key, value, 2 if mtype != MapType.ARENA else 1,
                            flags=flag | extra)
        with ebpf.Map(spec) as m:
            if flag == MapFlags.RDONLY:  # an access mode of the fd, not kept with the map
                with pytest.raises(ebpf.EBPFError) as exc:
                    m.update(0, bytes(value))
                assert exc.value.errno == errno.EPERM
            elif flag == MapFlags.WRONLY:
                m.update(1, bytes(value))
                with pytest.raises(ebpf.EBPFError) as exc:
                    m.lookup(1)
                assert exc.value.errno == errno.EPERM
            else:
                assert m.info().flags & flag == flag
    assert _outcome(lambda: features.have_map_flag(flag)) == _outcome(create)


def test_map_flag_probe_refuses_flags_it_cannot_test():
    with pytest.raises(ValueError, match="no probe for map flag"):
        features.have_map_flag(MapFlags.CLONE)
    with pytest.raises(ValueError, match="no probe for map flag"):
        features.have_map_flag(MapFlags.NO_PREALLOC | MapFlags.MMAPABLE)


def test_new_probes_are_cached(monkeypatch):
    from ebpf import _libbpf

    features.have_v3_isa(), features.have_map_flag(MapFlags.MMAPABLE), features.have_link_type(LinkType.TCX)

    def boom(*a, **k):
        raise AssertionError("probe ran twice")

    monkeypatch.setattr(_libbpf, "prog_load_probe", boom)
    monkeypatch.setattr(_libbpf, "map_create_probe", boom)
    assert features.have_v3_isa() is True
    assert features.have_map_flag(MapFlags.MMAPABLE) is True
    assert features.have_link_type(LinkType.TCX) is True


# --------------------------------------------------------------------------
# link kinds: each probe against a real attach of that kind


def _in_new_netns(fn):
    """Run ``fn`` in a fresh network namespace (a thread that unshared one)."""
    import threading

    result, failure = [], []

    def body():
        try:
            _unshare_net()
            result.append(fn())
        except BaseException as exc:  # handed to the caller
            failure.append(exc)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if failure:
        raise failure[0]
    return result[0]


def _unshare_net():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET, this thread only
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")


def _tc_prog():
    insns = asm.Instructions([asm.mov_imm(asm.R0, 0), asm.exit()])
    return ebpf.Program(ebpf.ProgramSpec("tc_probe", ProgramType.SCHED_CLS, instructions=insns, license="GPL"))


def _real_tcx():
    with _tc_prog() as prog:
        _in_new_netns(lambda: L.attach_tcx("lo", prog, "ingress").close())


def _real_netkit():
    from netutil import add_link_pair

    def attach(prog):
        try:
            add_link_pair("netkit", "nkprobe0", "nkprobe1")
        except OSError as exc:  # the kernel has no netkit devices
            if exc.errno == errno.EOPNOTSUPP:
                raise NotSupportedError("netkit devices", errno=exc.errno) from None
            raise
        L.attach_netkit("nkprobe0", prog, "primary").close()

    with _tc_prog() as prog:
        _in_new_netns(lambda: attach(prog))


def _real_netfilter():
    insns = asm.Instructions([asm.mov_imm(asm.R0, 1), asm.exit()])
    spec = ebpf.ProgramSpec("nf_probe", ProgramType.NETFILTER, attach_type=ebpf.AttachType.NETFILTER,
                            instructions=insns, license="GPL")
    with ebpf.Program(spec) as prog:
        _in_new_netns(lambda: L.attach_netfilter(prog, nf.NFPROTO_IPV4, nf.NF_INET_LOCAL_IN, -123).close())


def _kprobe_prog(attach_type):
    insns = asm.Instructions([asm.mov_imm(asm.R0, 0), asm.exit()])
    return ebpf.Program(ebpf.ProgramSpec("multi_probe", ProgramType.KPROBE, attach_type=attach_type,
                                         instructions=insns, license="GPL"))


def _real_kprobe_multi():
    with _kprobe_prog(ebpf.AttachType.TRACE_KPROBE_MULTI) as prog:
        L.kprobe_multi(["vprintk"], prog).close()


def _real_uprobe_multi():
    with _kprobe_prog(ebpf.AttachType.TRACE_UPROBE_MULTI) as prog:
        exe = L.open_executable(str(fixture_path("uprobe_target")))
        exe.uprobe_multi(["target_value", "target_add"], prog, cookies=[1, 2]).close()


REAL_LINKS = {
    LinkType.TCX: _real_tcx,
    LinkType.NETKIT: _real_netkit,
    LinkType.NETFILTER: _real_netfilter,
    LinkType.KPROBE_MULTI: _real_kprobe_multi,
    LinkType.UPROBE_MULTI: _real_uprobe_multi,
}


@pytest.mark.parametrize("kind", sorted(REAL_LINKS), ids=lambda k: k.name)
def test_link_type_probes_agree_with_a_real_attach(kind):
    assert _outcome(lambda: features.have_link_type(kind)) == _outcome(REAL_LINKS[kind]), kind.name


def test_missing_link_kinds_say_what_they_need():
    for kind in REAL_LINKS:
        try:
            features.have_link_type(kind)
        except NotSupportedError as exc:
            assert exc.min_kernel, kind
            assert "links" in str(exc), str(exc)


def test_link_type_probe_refuses_kinds_it_cannot_test():
    with pytest.raises(ValueError, match="no probe for link type"):
        features.have_link_type(LinkType.XDP)


NEW_UNPRIVILEGED_PROBES = """
CALLS = [(features.have_bounded_loops,), (features.have_large_instructions,), (features.have_v2_isa,),
         (features.have_v3_isa,), (features.have_v4_isa,), (features.have_map_flag, MapFlags.MMAPABLE),
         (features.have_map_flag, MapFlags.SEGV_ON_FAULT)]
CALLS += [(features.have_link_type, t) for t in (LinkType.KPROBE_MULTI, LinkType.UPROBE_MULTI, LinkType.TCX,
                                                 LinkType.NETKIT, LinkType.NETFILTER)]
"""


def test_new_probes_without_privilege_say_so():
    lines = unprivileged(NEW_UNPRIVILEGED_PROBES)
    assert len(lines) == 12, lines
    for line in lines:
        assert line.startswith("DENIED PermissionDeniedError"), line
