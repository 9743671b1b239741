"""``ebpf btf dump``: bpftool's raw text, JSON, and C: a vmlinux.h of the
running kernel with bpftool's types in bpftool's order, that clang compiles
a CO-RE program against (which then loads and reads the kernel's structs)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from cliutil import ROOT, cli, cli_json, one_line_error
from conftest import fixture_path

KERNEL_BTF = "/sys/kernel/btf/vmlinux"


def need_kernel_btf() -> None:
    if not os.path.exists(KERNEL_BTF):
        pytest.skip("kernel without BTF")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not installed")
    return path


def test_text_is_bpftools_raw_format():
    need("bpftool")
    obj = fixture_path("btf_types.o")
    ours = cli("btf", "dump", obj).stdout.split("\n[")
    theirs = subprocess.run(["bpftool", "btf", "dump", "file", str(obj)], capture_output=True, text=True,
                            check=True).stdout.split("\n[")
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        if "DATASEC" in b:
            # bpftool prints the ELF's section records before libbpf fixes
            # their sizes and offsets; ours are the fixed ones.
            assert a.split(" size=")[0] == b.split(" size=")[0]
            continue
        assert a == b


def test_text_datasec_sizes_are_the_loaded_ones():
    out = cli("btf", "dump", fixture_path("btf_types.o"), "--type", ".data").stdout
    head, *vars_ = out.strip().splitlines()
    assert re.match(r"\[\d+\] DATASEC '\.data' size=12 vlen=2$", head), head
    assert [v.split("offset=")[1] for v in vars_] == ["0 size=4", "4 size=8"]


def test_json_types():
    doc = cli_json("btf", "dump", fixture_path("btf_types.o"))
    by_name = {t["name"]: t for t in doc["types"]}
    node = by_name["node"]
    assert node["kind"] == "STRUCT" and node["size"] == 160 and node["vlen"] == 17
    assert [m["name"] for m in node["members"][:3]] == ["next", "visit", "cv"]
    ids = {t["id"]: t for t in doc["types"]}
    assert ids[node["members"][0]["type_id"]]["kind"] == "PTR"
    assert [t["id"] for t in doc["types"]] == sorted(ids)
    only = cli_json("btf", "dump", fixture_path("btf_types.o"), "--format", "json", "--type", "struct node")
    assert [t["name"] for t in only["types"]] == ["node"]


def test_type_errors_are_one_line():
    err = one_line_error(cli("btf", "dump", fixture_path("btf_types.o"), "--type", "no_such_type", expect=1),
                         "btf dump")
    assert "no_such_type" in err and "hint:" in err


def test_c_of_an_object_compiles(tmp_path):
    clang = need("clang")
    header = tmp_path / "types.h"
    header.write_text(cli("btf", "dump", fixture_path("btf_types.o"), "--format", "c").stdout)
    text = header.read_text()
    assert text.startswith("#ifndef __VMLINUX_H__\n") and "struct node {" in text
    src = tmp_path / "use.c"
    src.write_text('#include "types.h"\nint size_of_node = sizeof(struct node);\n')
    subprocess.run([clang, "-target", "bpf", "-fsyntax-only", "-I", str(tmp_path), str(src)], check=True)


def test_c_of_embedded_object():
    tool = "/usr/sbin/execsnoop"
    if not os.path.exists(tool):
        pytest.skip("libbpf-tools not installed")
    out = cli("btf", "dump", tool, "--format", "c", "--type", "struct event").stdout
    assert "struct event {" in out and "char args[7680];" in out


def _declarations(text: str) -> list:
    """The top-level declarations, in order, as their first lines (with the
    two spellings libbpf releases differ in normalised)."""
    text = text.replace(" __attribute__((mode(byte)))", "").replace("(void)", "()")
    return [line for line in text.splitlines() if re.match(r"(struct|union|enum|typedef)\b", line)]


@pytest.fixture(scope="module")
def vmlinux_h(tmp_path_factory):
    need_kernel_btf()
    path = tmp_path_factory.mktemp("vmlinux") / "vmlinux.h"
    with open(path, "w") as f:
        subprocess.run([os.sys.executable, "-m", "ebpf", "btf", "dump", "--kernel", "--format", "c"], cwd=ROOT,
                       stdout=f, check=True)
    return path


def test_kernel_c_has_bpftools_types_in_bpftools_order(vmlinux_h):
    need("bpftool")
    theirs = subprocess.run(["bpftool", "btf", "dump", "file", KERNEL_BTF, "format", "c"], capture_output=True,
                            text=True, check=True).stdout
    ours = vmlinux_h.read_text()
    assert ours.startswith("#ifndef __VMLINUX_H__\n#define __VMLINUX_H__\n")
    assert ours.rstrip().endswith("#endif /* __VMLINUX_H__ */")
    a, b = _declarations(ours), _declarations(theirs)
    assert len(a) > 10000
    assert a == b


def test_kernel_c_one_call_per_chunk_equals_one_call_per_type():
    """The dump through anonymous root structs (one C call per 65535 types)
    writes exactly what one btf_dump__dump_type() per id, in id order, does."""
    need_kernel_btf()
    from ebpf import _libbpf
    from ebpf.btf import load_kernel_spec

    n = len(load_kernel_spec())
    outs = []
    for ids in (None, list(range(1, n + 1))):
        r, w = os.pipe()
        chunks = []
        import threading

        t = threading.Thread(target=lambda chunks=chunks, r=r: chunks.append(os.fdopen(r, "rb").read()))
        t.start()
        try:
            _libbpf.dump_btf_c(w, path=KERNEL_BTF, type_ids=ids)
        finally:
            os.close(w)
        t.join()
        outs.append(chunks[0])
    assert len(outs[0]) > 1_000_000
    assert outs[0] == outs[1]


def test_kernel_c_single_type(vmlinux_h):
    out = cli("btf", "dump", "--kernel", "--format", "c", "--type", "struct task_struct").stdout
    assert "\nstruct task_struct {\n" in out
    assert len(out) < len(vmlinux_h.read_text()) / 5  # the type and what it needs, not everything


@pytest.mark.kernel
def test_vmlinux_h_compiles_a_core_program_that_runs(vmlinux_h, tmp_path):
    clang = need("clang")
    import ebpf

    obj = tmp_path / "task_core.o"
    src = ROOT / "fixtures" / "vmlinux_h" / "task_core.bpf.c"
    subprocess.run([clang, "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", "-I", str(vmlinux_h.parent),
                    "-c", str(src), "-o", str(obj)], check=True)
    spec = ebpf.load_collection_spec(obj)
    spec.variables["target_tgid"].set(os.getpid())
    with ebpf.Collection(spec) as coll:
        links = ebpf.link.attach_all(coll)
        try:
            os.getppid()
        finally:
            for link in links.values():
                link.close()
        assert coll.variables["seen_tgid"].get() == os.getpid()
        assert coll.variables["seen_ppid"].get() == os.getppid()
        with open(f"/proc/{os.getpid()}/comm", "rb") as f:
            assert coll.variables["seen_comm"].get() == f.read().strip()


@pytest.mark.kernel
def test_dump_by_id_and_list():
    need_kernel_btf()
    rows = cli_json("btf", "list")
    vmlinux = next(r for r in rows if r["name"] == "vmlinux")
    assert vmlinux["kernel"] and vmlinux["size"] == os.path.getsize(KERNEL_BTF)
    out = cli("btf", "dump", "--id", vmlinux["id"], "--format", "c", "--type", "struct list_head").stdout
    assert "struct list_head {" in out


def test_split_btf_over_a_base(tmp_path):
    """A module's split BTF (this host has none: the test makes one the way
    test_btf does) dumps over the kernel's: its own types, as C and text."""
    need_kernel_btf()
    from ebpf import btf

    from test_btf import _split_on_running_kernel

    base = btf.load_kernel_spec()
    mod = tmp_path / "fake_mod"
    mod.write_bytes(_split_on_running_kernel(base))
    c = cli("btf", "dump", mod, "--base", KERNEL_BTF, "--format", "c").stdout
    body = c.split("#endif\n\n", 1)[1]
    assert body.startswith("struct task_struct;\n\nstruct mod_thing {\n\tint x;\n\tstruct task_struct *t;\n};")
    text = cli("btf", "dump", mod, "--base", KERNEL_BTF).stdout.splitlines()
    first = base._raw.end_id
    assert text[0] == f"[{first}] PTR '(anon)' type_id={base.type_id(base.type_by_name('task_struct', 'struct'))}"
    assert text[1] == f"[{first + 1}] STRUCT 'mod_thing' size=16 vlen=2"


def test_c_dump_when_stdout_is_no_file():
    """main() called in-process with stdout redirected: the C stream goes
    through a temporary file instead of file descriptor 1."""
    import contextlib
    import io

    from ebpf.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["btf", "dump", str(fixture_path("btf_types.o")), "--format", "c", "--type", "struct node"]) == 0
    assert "struct node {" in buf.getvalue() and buf.getvalue().endswith("#endif /* __VMLINUX_H__ */\n")


def test_malformed_raw_btf_is_refused_before_libbpf_reads_it(tmp_path):
    """A typedef that refers to itself sends libbpf 1.1's C dumper into
    unbounded recursion (a segfault, exit -11); the file is checked first."""
    import struct

    from ebpf import btf

    raw = bytearray(btf.load_spec(fixture_path("btf_types.o")).raw)
    _, _, _, hdr_len, type_off, type_len, _, _ = struct.unpack_from("<HBBIIIII", raw)
    vlen_size = {1: 4, 3: 12, 4: 12, 5: 12, 6: 8, 13: 8, 14: 4, 15: 12, 17: 4, 19: 12}
    per_member = {4, 5, 6, 13, 15, 19}
    pos, end, tid = hdr_len + type_off, hdr_len + type_off + type_len, 1
    while True:
        assert pos < end, "the fixture has a typedef"
        _, info, _ = struct.unpack_from("<III", raw, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        if kind == 8:  # TYPEDEF: make it its own target
            struct.pack_into("<I", raw, pos + 8, tid)
            break
        pos += 12 + vlen_size.get(kind, 0) * (vlen if kind in per_member else 1)
        tid += 1
    bad = tmp_path / "loop.btf"
    bad.write_bytes(bytes(raw))
    proc = cli("btf", "dump", bad, "--format", "c", expect=1)
    assert "BTFError" in one_line_error(proc, "btf dump")
