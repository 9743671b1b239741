"""Feature probes: True when present, NotSupportedError when not; cached."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Annotated

import pytest

import ebpf
from ebpf import MapType, ProgramType, asm, features
from ebpf.errors import NotSupportedError

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

        def load():
            objs = type("Objs", (), {"__annotations__": {"p": Annotated[ebpf.Program, prog]}})
            spec.load_and_assign(objs).p.close()

        assert _outcome(lambda: features.have_iterator(target)) == _outcome(load), target


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


UNPRIVILEGED_PROBES = r"""
import ebpf
from ebpf import features, MapType, ProgramType
for probe, arg in ((features.have_map_type, MapType.HASH), (features.have_map_type, MapType.ARENA),
                   (features.have_program_type, ProgramType.XDP), (features.have_program_type, ProgramType.NETFILTER),
                   (features.have_iterator, "task"), (features.have_tracing_programs, None)):
    try:
        probe(arg) if arg is not None else probe()
    except ebpf.PermissionDeniedError as exc:
        print("DENIED", type(exc).__name__, probe.__name__)
    except ebpf.NotSupportedError as exc:
        print("NOTSUPPORTED", probe.__name__, exc)
    else:
        print("YES", probe.__name__)
"""


def test_probes_without_privilege_say_so():
    out = subprocess.run(
        ["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-c", UNPRIVILEGED_PROBES],
        env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=60, cwd="/",
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 6, out.stdout
    for line in lines:
        assert line.startswith("DENIED PermissionDeniedError"), line
