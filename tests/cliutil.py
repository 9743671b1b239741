"""Running ``python -m ebpf`` as the tests do: a subprocess, like a user."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, List, Optional

ROOT = Path(__file__).resolve().parent.parent
LIBBPF_TOOLS = Path("/usr/sbin")
XDP_OBJECTS = Path("/usr/lib/x86_64-linux-gnu/bpf")


def cli(*args: Any, expect: Optional[int] = 0, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m ebpf ARGS``; fail unless it exits with ``expect`` (None: any)."""
    cmd = [sys.executable, "-m", "ebpf", *map(str, args)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert expect is None or proc.returncode == expect, (
        f"{' '.join(cmd[2:])}: exit {proc.returncode}, expected {expect}\n"
        f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
    )
    return proc


def cli_json(*args: Any) -> Any:
    """One JSON document from ``python -m ebpf ARGS --json``."""
    return json.loads(cli(*args, "--json").stdout)


def json_lines(text: str) -> List[Any]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def one_line_error(proc: subprocess.CompletedProcess, command: str) -> str:
    """The failure line (checked to be one, prefixed with the command)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines, "no error message"
    assert lines[0].startswith(f"ebpf {command}: "), lines[0]
    assert len(lines) <= 2 and all(not line.startswith("Traceback") for line in lines), proc.stderr
    if len(lines) == 2:
        assert lines[1].startswith("hint: "), lines[1]
    return proc.stderr
