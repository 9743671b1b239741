"""Shared test plumbing.

Tests that need a BPF-capable kernel carry ``@pytest.mark.kernel``.  Without
privileges they skip, unless ``EBPF_REQUIRE_KERNEL=1`` is set (CI), in which
case a missing kernel is a failure: a green run whose kernel tests skipped
proves nothing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

try:
    from hypothesis import settings as _hyp_settings

    # Property tests explore with a fixed seed: CI must not pass or fail by luck.
    _hyp_settings.register_profile("ebpf", derandomize=True, database=None)
    _hyp_settings.load_profile("ebpf")
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    pass

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "build"
CILIUM_TESTDATA = Path("/usr/share/gocode/src/github.com/cilium/ebpf")
BPFFS = Path("/sys/fs/bpf")
TRACEFS = Path("/sys/kernel/tracing")

REQUIRE_KERNEL = os.environ.get("EBPF_REQUIRE_KERNEL") == "1"

# The network and cgroup fixtures (netns, veth, cgroup, source) for every
# test module that asks for them by name.
pytest_plugins = ["netutil"]


def _kernel_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not Path("/sys/kernel/btf/vmlinux").exists():
        return "kernel without BTF"
    return None


def skip_or_fail(reason: str) -> None:
    """Skip, or fail when the run requires the kernel."""
    if REQUIRE_KERNEL:
        pytest.fail(f"kernel feature required but unavailable: {reason}")
    pytest.skip(reason)


def require(probe, *args) -> None:
    """Skip unless a feature probe says yes.  Only NotSupportedError (which
    includes KernelPolicyError: this kernel refuses it by policy) skips; a
    missing privilege is not a property of the kernel, so under
    EBPF_REQUIRE_KERNEL=1 it fails like a missing kernel."""
    from ebpf.errors import NotSupportedError, PermissionDeniedError

    try:
        probe(*args)
    except NotSupportedError as exc:
        pytest.skip(str(exc))
    except PermissionDeniedError as exc:
        skip_or_fail(str(exc))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel"):
        reason = _kernel_reason()
        if reason:
            skip_or_fail(reason)


def _mounted(path: Path, fstype: str) -> bool:
    with open("/proc/mounts") as f:
        return any(line.split()[1] == str(path) and line.split()[2] == fstype for line in f)


def ensure_mount(path: Path, fstype: str) -> None:
    """Mount a pseudo filesystem if it is not there yet (idempotent)."""
    if _mounted(path, fstype):
        return
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", fstype, fstype, str(path)], check=True)


@pytest.fixture(scope="session")
def bpffs() -> Path:
    if os.geteuid() != 0:
        skip_or_fail("needs root to mount bpffs")
    ensure_mount(BPFFS, "bpf")
    return BPFFS


@pytest.fixture
def pin_dir(bpffs: Path, request: pytest.FixtureRequest):
    """A fresh directory on bpffs, removed with everything in it afterwards."""
    import shutil
    import uuid

    d = bpffs / f"ebpf-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def tracefs() -> Path:
    if os.geteuid() != 0:
        skip_or_fail("needs root to mount tracefs")
    ensure_mount(TRACEFS, "tracefs")
    return TRACEFS


def fixture_path(name: str) -> Path:
    """Path of a built fixture object (``fixtures/build/<name>``)."""
    p = FIXTURES / name
    if not p.exists():
        pytest.fail(f"fixture {p} not built: run scripts/build_fixtures.sh")
    return p


@pytest.fixture
def fixture():
    return fixture_path
