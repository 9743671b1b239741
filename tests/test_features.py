"""Feature probes: True when present, NotSupportedError when not; cached."""

from __future__ import annotations

import pytest

import ebpf
from ebpf import MapType, ProgramType, asm, features
from ebpf.errors import NotSupportedError

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
