"""The command line on objects (no kernel needed): --help, exit codes and
errors, ``inspect`` and ``disasm`` of the project's fixtures and of
third-party objects (Debian's libbpf-tools executables, libxdp, cilium)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cliutil import LIBBPF_TOOLS, ROOT, XDP_OBJECTS, cli, cli_json, one_line_error
from conftest import CILIUM_TESTDATA, fixture_path

COMMANDS = [
    [], ["inspect"], ["disasm"], ["btf"], ["btf", "dump"], ["btf", "list"], ["prog"], ["prog", "list"],
    ["prog", "show"], ["map"], ["map", "list"], ["map", "show"], ["map", "dump"], ["link"], ["link", "list"],
    ["features"], ["run"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "ebpf")
def test_help_on_every_command(command):
    out = cli(*command, "--help").stdout
    assert out.startswith("usage: ebpf")
    assert " ".join(["ebpf", *command]) in out.splitlines()[0]


def test_console_script_is_declared():
    cfg = (ROOT / "setup.cfg").read_text()
    assert "ebpf = ebpf.cli:main" in cfg
    proc = subprocess.run([sys.executable, "-c", "import sys; from ebpf.cli import main; sys.exit(main(['--help']))"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and "COMMAND" in proc.stdout


def test_usage_errors_exit_2():
    assert "required" in cli(expect=2).stderr
    assert "invalid choice" in cli("no-such-command", expect=2).stderr
    assert "OBJ" in cli("inspect", expect=2).stderr
    assert "invalid choice" in cli("btf", "dump", "--kernel", "--format", "xml", expect=2).stderr


def test_failures_are_one_line_with_a_hint(tmp_path):
    err = one_line_error(cli("inspect", tmp_path / "missing.o", expect=1), "inspect")
    assert "no such file" in err and "hint:" in err
    text = tmp_path / "text.o"
    text.write_text("not an object")
    assert "not an ELF file" in one_line_error(cli("inspect", text, expect=1), "inspect")
    host = shutil.which("ls")
    assert "neither a BPF object" in one_line_error(cli("inspect", host, expect=1), "inspect")
    err = one_line_error(cli("disasm", fixture_path("core.o"), "nope", expect=1), "disasm")
    assert "no program 'nope'" in err and "tp_getpid" in err


def test_inspect_core_fixture():
    out = cli("inspect", fixture_path("core.o")).stdout
    assert out.splitlines()[0].endswith(": 13 maps, 6 programs, 5 variables")
    for text in ("hash_map", "lpm_trie", "struct lpm_key", "by_name", "tracepoint/syscalls/sys_enter_getpid",
                 "raw_tp/sys_enter", "ret_value", "const volatile u32", "hello", "btf:"):
        assert text in out, text


def test_inspect_json_core_fixture():
    doc = cli_json("inspect", fixture_path("core.o"))
    maps = {m["name"]: m for m in doc["maps"]}
    assert maps["hash_map"]["type"] == "hash"
    assert (maps["hash_map"]["key_type"], maps["hash_map"]["value_type"]) == ("u32", "u64")
    assert maps["hash_map"]["max_entries"] == 64
    assert maps["lpm_map"]["flags"] == ["no_prealloc"]
    assert maps["pinned_map"]["pinning"] == "by_name"
    assert maps["outer_map"]["inner_map"] is not None
    progs = {p["name"]: p for p in doc["programs"]}
    assert progs["tp_getpid"]["type"] == "tracepoint"
    assert progs["tp_getpid"]["section"] == "tracepoint/syscalls/sys_enter_getpid"
    assert progs["xdp_pass"]["attach_type"] == "xdp"
    assert progs["run_syscall"]["attach_type"] is None
    assert progs["tp_getpid"]["license"] == "GPL"
    assert progs["tp_getpid"]["instructions"] > 0
    variables = {v["name"]: v for v in doc["variables"]}
    assert variables["ret_value"]["value"] == 7 and variables["ret_value"]["constant"]
    assert variables["message"]["value"] == "hello" and variables["message"]["type"] == "char [8]"
    assert variables["custom_value"]["section"] == ".data.custom"
    assert doc["btf"]["kinds"]["struct"] >= 1 and doc["btf"]["byte_order"] == "little"


def test_inspect_big_endian_object():
    proc = cli("inspect", fixture_path("core.bpfeb.o"), "--json", expect=None)
    if proc.returncode == 1:  # libbpf before 1.5 cannot open them: a typed refusal in one line
        assert "NotSupportedError" in one_line_error(proc, "inspect") and "big-endian" in proc.stderr
        return
    doc = json.loads(proc.stdout)
    assert doc["btf"]["byte_order"] == "big"
    assert {v["name"]: v["value"] for v in doc["variables"]}["custom_value"] == 42


def _libbpf_tool(name: str) -> Path:
    path = LIBBPF_TOOLS / name
    if not path.exists():
        pytest.skip(f"{path} not installed (Debian package libbpf-tools)")
    return path


def test_inspect_object_embedded_in_libbpf_tools_executable():
    doc = cli_json("inspect", _libbpf_tool("execsnoop"))
    sections = {p["section"] for p in doc["programs"]}
    assert "tracepoint/syscalls/sys_enter_execve" in sections
    maps = {m["name"]: m for m in doc["maps"]}
    assert maps["events"]["type"] == "perf_event_array"
    assert maps["execs"]["value_type"] == "struct event"
    assert {v["name"] for v in doc["variables"]} >= {"targ_uid", "max_args", "ignore_failed"}


def test_embedded_objects_found_exactly(tmp_path):
    from ebpf.cli._common import embedded_objects, read_object

    obj = fixture_path("subprog.o").read_bytes()
    other = fixture_path("core.o").read_bytes()
    blob = b"\x7fELF junk" + bytes(100) + obj + b"\x00" * 37 + other + b"trailer"
    found = embedded_objects(blob)
    assert found == [(109, len(obj)), (109 + len(obj) + 37, len(other))]
    host = tmp_path / "tool"
    host.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(57) + blob)  # a (fake) x86 ELF carrying both
    err = cli("inspect", host, expect=1).stderr
    assert "embeds 2 BPF objects" in err and f"{host}#1" in err
    data, label = read_object(f"{host}#1")
    assert data == other and label == f"{host}#1"
    assert cli_json("inspect", f"{host}#0")["programs"][0]["name"] == "uses_subprogs"


def test_inspect_libxdp_dispatcher():
    path = XDP_OBJECTS / "xdp-dispatcher.o"
    if not path.exists():
        pytest.skip("libxdp1 not installed")
    doc = cli_json("inspect", path)
    assert {p["name"] for p in doc["programs"]} >= {"xdp_dispatcher"}
    assert all(p["type"] == "xdp" for p in doc["programs"])
    assert any(v["name"] == "conf" for v in doc["variables"])


# The cilium test objects libbpf 1.1 opens (the others use legacy map
# definitions or static programs it refuses).
@pytest.mark.parametrize("name", ["btf_map_init-el.elf", "freplace-el.elf", "map_spin_lock-el.elf",
                                  "raw_tracepoint-el.elf", "strings-el.elf"])
def test_inspect_and_disasm_cilium_objects(name):
    path = CILIUM_TESTDATA / "testdata" / name
    if not path.exists():
        pytest.skip(f"{path} not installed (golang-github-cilium-ebpf-dev)")
    doc = cli_json("inspect", path)
    assert doc["programs"] or doc["maps"]
    listing = cli_json("disasm", path)
    assert [p["name"] for p in listing["programs"]] == [p["name"] for p in doc["programs"]]
    for prog in listing["programs"]:
        assert any(i["text"] == "exit" for i in prog["instructions"]), prog["name"]


def test_disasm_names_maps_globals_functions_and_helpers():
    out = cli("disasm", fixture_path("ringbuf.o"), "produce").stdout
    assert out.startswith("produce (syscall, syscall, ")
    assert "<events>" in out and "<.bss>" in out  # map and global references
    assert "\nemit:\n" in out  # the subprogram's label
    assert "<emit>" in out  # the callback passed to bpf_loop
    assert "call 181  # bpf_loop" in out
    assert "call 130  # bpf_ringbuf_output" in out


def test_disasm_json_and_all_programs():
    doc = cli_json("disasm", fixture_path("core.o"))
    names = [p["name"] for p in doc["programs"]]
    assert names == ["tail_target", "xdp_pass", "run_syscall", "sock_filter", "tp_getpid", "raw_tp_prog"]
    tp = next(p for p in doc["programs"] if p["name"] == "tp_getpid")
    slots = [i["slot"] for i in tp["instructions"]]
    assert slots == sorted(slots) and slots[0] == 0
    helpers = {i["helper"] for i in tp["instructions"] if i["helper"]}
    assert "bpf_map_lookup_elem" in helpers


def test_disasm_of_embedded_object():
    out = cli("disasm", _libbpf_tool("execsnoop"), "tracepoint__syscalls__sys_exit_execve").stdout
    assert "# bpf_perf_event_output" in out
    assert "<execs>" in out
