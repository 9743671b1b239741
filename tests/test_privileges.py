"""Without privilege: a clear PermissionDeniedError saying what is missing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.kernel

CHILD = r"""
import ebpf
from ebpf import asm
spec = ebpf.ProgramSpec("xdp_unpriv", ebpf.ProgramType.XDP,
                        instructions=asm.Instructions([asm.mov_imm(asm.R0, 2), asm.exit()]), license="GPL")
try:
    ebpf.Program(spec)
except ebpf.PermissionDeniedError as exc:
    assert isinstance(exc, PermissionError)
    print("DENIED", exc.errno, exc)
else:
    print("LOADED")
"""


def test_unprivileged_load_says_what_is_missing():
    # Root without capabilities: an empty bounding set leaves execve() none.
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        ["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-c", CHILD],
        env=env, capture_output=True, text=True, timeout=60, cwd="/",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("DENIED 1"), out.stdout
    assert "CAP_BPF" in out.stdout or "CAP_SYS_ADMIN" in out.stdout
