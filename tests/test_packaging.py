"""What a Python developer expects of a package: a version, its metadata,
quiet logging, names that print well."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys

import pytest

import ebpf

from conftest import ROOT, fixture_path


def test_version_has_one_source():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["metadata"]["version"] == "attr: ebpf._version.__version__"
    assert ebpf.__version__.count(".") == 2 and all(p.isdigit() for p in ebpf.__version__.split("."))


def test_license_and_typing_marker_ship():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["metadata"]["license"] == "MIT"
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert "Typing :: Typed" in cfg["metadata"]["classifiers"]
    assert (ROOT / "ebpf" / "py.typed").exists()
    for v in ("3.9", "3.10", "3.11", "3.12", "3.13"):
        assert f"Python :: {v}" in cfg["metadata"]["classifiers"]


def test_attach_type_zero_prints_as_none():
    assert repr(ebpf.AttachType(0)) == "<AttachType.NONE: 0>"
    assert ebpf.AttachType.CGROUP_INET_INGRESS is ebpf.AttachType.NONE
    assert ebpf.ProgramSpec("p", ebpf.ProgramType.XDP).attach_type.name == "NONE"


QUIET = r"""
import ebpf, sys
spec = ebpf.load_collection_spec(sys.argv[1])
try:
    ebpf.Collection(spec)
except ebpf.VerifierError:
    print("rejected")
"""


@pytest.mark.kernel
def test_libbpf_warnings_stay_off_stderr_without_logging_setup():
    # libbpf warns loudly about a rejected program; an application that
    # configured no logging must not see it on stderr.
    out = subprocess.run([sys.executable, "-c", QUIET, str(fixture_path("verifier.o"))],
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "rejected", out.stderr
    assert out.stderr == ""
