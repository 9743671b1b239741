"""``ebpf run`` on the real kernel: an execsnoop-like fixture prints the
commands this test runs, then its histograms and tables; Debian's own
execsnoop does the same; perf event arrays decode; programs the kernel
refuses are skipped with the reason; links are gone afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import List, Optional

import pytest

import ebpf
from ebpf import features

from cliutil import LIBBPF_TOOLS, ROOT, cli, json_lines, one_line_error
from conftest import fixture_path

pytestmark = pytest.mark.kernel


class Running:
    """``python -m ebpf run ...`` in the background, stderr read as it comes."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "ebpf", "run", *map(str, args)], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.err: List[str] = []
        self._attached = threading.Event()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)
            if "attached" in line:
                self._attached.set()
        self._attached.set()

    def wait_attached(self, timeout: float = 60) -> None:
        assert self._attached.wait(timeout), "run did not attach"
        assert self.proc.poll() is None, f"run exited early: {''.join(self.err)}"

    def stop(self, sig: Optional[int] = signal.SIGINT, timeout: float = 60) -> str:
        if sig is not None:
            self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=timeout)
        self._reader.join(timeout)
        assert self.proc.returncode == 0, f"exit {self.proc.returncode}: {''.join(self.err)}"
        return out

    @property
    def stderr(self) -> str:
        return "".join(self.err)


@pytest.fixture
def marker():
    """An executable with a name no other process on the machine has (and a
    short path: the fixture keeps 127 bytes of it)."""
    d = Path(tempfile.mkdtemp(prefix="ebpf-cli-"))
    path = d / f"cli-{uuid.uuid4().hex[:8]}"
    shutil.copy("/bin/true", path)
    try:
        yield path
    finally:
        shutil.rmtree(d, ignore_errors=True)


def programs_named(name: str) -> int:
    count = 0
    for pid in ebpf.program_ids():
        try:
            with ebpf.program_from_id(pid) as p:
                count += p.info().name == name
        except KeyError:
            continue
    return count


def test_run_prints_the_commands_a_test_runs_then_its_maps(marker):
    before = programs_named("trace_execve")
    run = Running(fixture_path("cli_exec.o"), "--set", f"target_ppid={os.getpid()}", "--duration", "60")
    run.wait_attached()
    assert "attached trace_execve; printing events of events" in run.stderr
    for _ in range(3):
        subprocess.run([str(marker)], check=True)
    subprocess.run(["/bin/true"], check=True)
    time.sleep(0.5)
    out = run.stop(signal.SIGINT)
    events = [line for line in out.splitlines() if line.startswith("events: ")]
    mine = [line for line in events if f"filename={marker}" in line]
    assert len(mine) == 3, out
    assert all(f"ppid={os.getpid()}" in line for line in events)  # --set reached the program
    assert f"name_len={len(str(marker)) + 1}" in mine[0]
    assert any("filename=/bin/true" in line for line in events)
    # the maps, after the stream: globals, a log2 array, struct hist per uid, a table
    assert "\nglobals:\n  execs = 4\n" in out
    assert "name_lengths (array):\n     value               : count     distribution\n" in out
    assert f"lengths_by_uid (hash):\nkey = {os.getuid()}\n" in out
    comm = open("/proc/self/comm").read().strip()  # what a child is called before it execs
    table = [row.split() for row in out.split("execs_by_comm (hash):\n")[1].splitlines()]
    assert table == [["KEY", "VALUE"], [comm, "4"]]
    assert programs_named("trace_execve") == before  # detached and unloaded


def test_run_json_lines_and_duration(marker):
    run = Running(fixture_path("cli_exec.o"), "--set", f"target_ppid={os.getpid()}", "--duration", "3", "--json")
    run.wait_attached()
    subprocess.run([str(marker)], check=True)
    out = run.stop(sig=None)  # ends by itself
    docs = json_lines(out)
    assert docs[0] == {"attached": ["trace_execve"], "events": ["events"]}
    events = [d for d in docs if "event" in d]
    assert [e["value"]["filename"] for e in events] == [str(marker)]
    assert events[0]["value"]["ppid"] == os.getpid() and events[0]["value"]["comm"]
    maps = {d["map"]: d for d in docs if "map" in d}
    assert maps["name_lengths"]["kind"] == "hist"
    assert sum(maps["name_lengths"]["histograms"][0]["slots"]) == 1
    by_uid = maps["lengths_by_uid"]["histograms"]
    assert by_uid[0]["key"] == os.getuid() and sum(by_uid[0]["slots"]) == 1
    assert maps["execs_by_comm"]["kind"] == "table"
    assert next(d for d in docs if "globals" in d)["globals"]["execs"] == 1


def test_run_stops_cleanly_on_sigterm():
    run = Running(fixture_path("cli_exec.o"), "--set", "target_ppid=1")
    run.wait_attached()
    run.stop(signal.SIGTERM)
    assert "Traceback" not in run.stderr


def test_run_of_debians_execsnoop(marker):
    tool = LIBBPF_TOOLS / "execsnoop"
    if not tool.exists():
        pytest.skip("libbpf-tools not installed")
    run = Running(tool, "--events", "events:event", "--duration", "60")
    run.wait_attached()
    subprocess.run([str(marker), "an-argument"], check=True)
    time.sleep(0.5)
    out = run.stop()
    line = next(line for line in out.splitlines() if f"comm={marker.name}" in line)
    assert f"ppid={os.getpid()}" in line and "retval=0" in line and "args_count=2" in line
    assert f"args={marker}" in line


def test_run_decodes_perf_event_array_records():
    run = Running(fixture_path("perfbuf.o"), "--set", "count=1", "--set", "start=1000", "--duration", "1.5", "--json")
    run.wait_attached()
    subprocess.run(["/bin/true"], check=True)
    docs = json_lines(run.stop(sig=None))
    events = [d for d in docs if "event" in d]
    assert events, "no perf events (the program runs on every syscall)"
    for e in events[:50]:
        assert e["event"] == "perf_events" and isinstance(e["cpu"], int)
        seq = e["value"]["seq"]  # struct event: the one struct of that size
        assert seq == 1000 and e["value"]["val"] == (seq * 0x9E3779B97F4A7C15) % (1 << 64)


def test_run_skips_what_the_kernel_refuses_and_says_why():
    run = Running(fixture_path("link_fentry.o"), "--duration", "0.5")
    run.wait_attached()
    run.stop(sig=None)
    try:
        features.have_tracing_programs()
    except ebpf.NotSupportedError as exc:
        assert "skipped fentry_test1: fentry/bpf_fentry_test1: " in run.stderr
        assert str(exc).split(":")[0] in run.stderr
        assert "attached no programs" in run.stderr
    else:
        assert "fentry_test1" in run.stderr.split("attached")[1]


def test_run_prints_iterator_output():
    out = cli("run", fixture_path("link_iter.o"), "--duration", "0").stdout
    dump = out.split("dump_tgids (iterator):\n")[1].split("\n\n")[0]
    assert str(os.getpid()) in dump.split()


def test_run_skips_programs_without_a_hook_in_their_section():
    proc = cli("run", fixture_path("core.o"), "--duration", "0")
    assert "skipped xdp_pass: section 'xdp' names no hook" in proc.stderr
    assert "pinning ignored" in proc.stderr
    assert "attached tp_getpid, raw_tp_prog" in proc.stderr
    assert "\nglobals:\n" in proc.stdout and "message      = hello" in proc.stdout


def test_run_set_errors_are_one_line():
    obj = fixture_path("cli_exec.o")
    err = one_line_error(cli("run", obj, "--set", "nope=1", expect=1), "run")
    assert "no global 'nope'" in err and "target_ppid" in err
    err = one_line_error(cli("run", obj, "--set", "target_ppid=abc", expect=1), "run")
    assert "not an integer" in err
    err = one_line_error(cli("run", obj, "--set", "target_ppid=99999999999", expect=1), "run")
    assert "target_ppid" in err
    err = one_line_error(cli("run", obj, "--events", "nope", expect=1), "run")
    assert "no map 'nope'" in err and "events" in err
    err = one_line_error(cli("run", obj, "--events", "name_lengths", expect=1), "run")
    assert "not a ring buffer" in err


def test_parse_value_by_btf_type():
    from ebpf.cli.run import parse_value

    spec = ebpf.load_collection_spec(fixture_path("core.o"))
    assert parse_value(spec.variables["counter"], "0x10") == 16
    assert parse_value(spec.variables["message"], "hi") == "hi"
    spec.variables["message"].set(parse_value(spec.variables["message"], "hi"))
    assert spec.variables["message"].get() == b"hi"
    tools = ebpf.load_collection_spec(fixture_path("cli_exec.o"))
    assert parse_value(tools.variables["target_ppid"], "42") == 42
    with pytest.raises(ValueError):
        parse_value(tools.variables["target_ppid"], "4.2")


def test_libbpf_messages_only_with_verbose():
    quiet = cli("run", fixture_path("link_iter.o"), "--duration", "0")
    loud = cli("-v", "run", fixture_path("link_iter.o"), "--duration", "0")
    assert "ebpf.libbpf:" not in quiet.stderr and "libbpf:" not in quiet.stderr
    try:
        features.have_iterator("bpf_map_elem")
    except ebpf.NotSupportedError:  # its refusal is what libbpf talks about
        assert "ebpf.libbpf: " in loud.stderr
    assert "dump_tgids (iterator):" in loud.stdout and "dump_tgids (iterator):" in quiet.stdout
