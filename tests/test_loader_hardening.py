"""Hardening of the reader and loader (issue #11, items 1, 5 and 6).

* BTF handed to libbpf as ``kernel_types`` is validated first: a mutated
  file crashed libbpf 1.1.2 (``skip_mods_and_typedefs``), it is now a
  typed error.
* Reading an object allocates memory in proportion to the file, whatever
  size its ``.bss`` header claims.
* Globals of data sections that are not memory-mappable (libbpf 1.1.2 makes
  those holding only static variables so) are read and written through the
  map's value.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ebpf
from ebpf import _elf, _libbpf
from ebpf.btf import BTFError
from ebpf.types import MapFlags

from conftest import ROOT, fixture_path

kernel = pytest.mark.kernel

VMLINUX = Path("/sys/kernel/btf/vmlinux")
XDP_DISPATCHER = Path("/usr/lib/x86_64-linux-gnu/bpf/xdp-dispatcher.o")


def _run(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


# --------------------------------------------------------------------------
# kernel_types


def _mutated_kernel_btf(tmp_path: Path) -> Path:
    """The kernel's BTF with the types of task_struct's pid and tgid members
    pointing past the last type: a few flipped bytes."""
    from ebpf.btf.parse import RawBTF

    data = VMLINUX.read_bytes()
    kspec = ebpf.btf.load_kernel_spec()
    task = kspec.type_by_name("task_struct", "struct")
    raw = RawBTF(data)
    hdr_len, type_off = struct.unpack_from("<4xII", data)
    record = hdr_len + type_off + 4 * raw.offsets[kspec.type_id(task) - raw.first_id]
    out = bytearray(data)
    names = [m.name for m in task.members]
    for member in ("pid", "tgid"):
        struct.pack_into("<I", out, record + 12 + 12 * names.index(member) + 4, 0x00FFFFFF)
    path = tmp_path / "vmlinux-mutated.btf"
    path.write_bytes(bytes(out))
    return path


@kernel
def test_mutated_kernel_types_are_a_typed_error_not_a_crash(tmp_path):
    if not VMLINUX.exists():
        pytest.skip("kernel without BTF")
    bad = _mutated_kernel_btf(tmp_path)
    # What the loader did before: hand the file to libbpf unchecked.
    unchecked = _run(f"""
        import ebpf
        from ebpf import _libbpf
        spec = ebpf.load_collection_spec({str(fixture_path("core_read.o"))!r})
        obj = _libbpf.open_object(spec._origin.elf, "core_read", {str(bad)!r})
        print("load", obj.load())
    """)
    if _libbpf.version() < (1, 2):
        assert unchecked.returncode == -signal.SIGSEGV, (unchecked.returncode, unchecked.stderr[-500:])
    # Through the public API it is checked first, in a Collection and alone.
    checked = _run(f"""
        import ebpf
        from ebpf.btf import BTFError
        spec = ebpf.load_collection_spec({str(fixture_path("core_read.o"))!r})
        for load in (lambda: ebpf.Collection(spec, kernel_types={str(bad)!r}),
                     lambda: ebpf.Program(spec.programs["read_tgid"], kernel_types={str(bad)!r})):
            try:
                load()
            except BTFError as exc:
                assert isinstance(exc, ebpf.InvalidObjectError)
                print("refused:", exc)
            else:
                raise SystemExit("loaded")
    """)
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert checked.stdout.count("refused: kernel_types:") == 2, checked.stdout


def _tiny_btf(member_type: int) -> bytes:
    """``int`` and ``struct task_struct { int pid; int tgid; }``, with the
    members' type id given."""
    strings = b"\0int\0task_struct\0pid\0tgid\0"
    types = struct.pack("<III", 1, 1 << 24, 4) + struct.pack("<I", (1 << 24) | 32)
    types += struct.pack("<III", 5, (4 << 24) | 2, 8)
    types += struct.pack("<III", 17, member_type, 0) + struct.pack("<III", 21, member_type, 32)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


@kernel
@pytest.mark.parametrize("form", ["path", "bytes", "spec"])
def test_kernel_types_in_every_form_are_checked(tmp_path, form):
    """Bytes and btf.Spec objects are checked like files; a good one still
    relocates."""
    def given(raw: bytes):
        if form == "path":
            p = tmp_path / "types.btf"
            p.write_bytes(raw)
            return p
        if form == "bytes":
            return raw
        return ebpf.btf.Spec.from_raw(raw, validate=False)  # unchecked, as a user may build one

    spec = ebpf.load_collection_spec(fixture_path("core_read.o"))
    with pytest.raises(BTFError, match="kernel_types"):
        ebpf.Collection(spec, kernel_types=given(_tiny_btf(member_type=99)))
    with ebpf.Collection(spec, kernel_types=given(_tiny_btf(member_type=1))) as coll:
        assert coll.programs["read_tgid"].run().retval == 0


@kernel
def test_kernel_types_from_an_elf_are_checked(tmp_path):
    """An ELF object as kernel_types (libbpf reads its .BTF) is checked too."""
    data = bytearray(fixture_path("core_read.o").read_bytes())
    sec = _elf.ElfFile(bytes(data)).section_by_name(".BTF")
    struct.pack_into("<H", data, sec.offset, 0xBEEF)  # the BTF magic
    bad = tmp_path / "bad.o"
    bad.write_bytes(bytes(data))
    with pytest.raises(ebpf.InvalidObjectError, match="kernel_types"):
        ebpf.Collection(ebpf.load_collection_spec(fixture_path("core_read.o")), kernel_types=bad)


# --------------------------------------------------------------------------
# Memory in proportion to the input


def test_huge_bss_header_costs_no_memory_to_read():
    """A 14 KB object whose .bss claims 453 MB: the old reader copied the
    section twice (about 900 MB of RSS); reading, copying and using the
    spec now stays near the interpreter's own footprint."""
    out = _run(f"""
        import resource, struct
        import ebpf
        from ebpf import _elf
        data = bytearray(open({str(fixture_path("subprog.o"))!r}, "rb").read())
        bss = _elf.ElfFile(bytes(data)).section_by_name(".bss")
        shoff = struct.unpack_from("<Q", data, 40)[0]
        struct.pack_into("<Q", data, shoff + bss.index * 64 + 32, 453 << 20)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        spec = ebpf.load_collection_spec(bytes(data))
        assert spec.maps[".bss"].value_size == 453 << 20
        copy = spec.copy()
        assert copy.variables["calls"].get() == 0 and copy == spec
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(len(data), before, after)
    """)
    assert out.returncode == 0, out.stderr[-2000:]
    size, before, after = map(int, out.stdout.split())
    assert size < 64 * 1024
    assert after - before < 64 * 1024, f"reading grew the RSS by {(after - before) // 1024} MB"


def test_bss_beyond_any_kernel_is_refused():
    data = bytearray(fixture_path("subprog.o").read_bytes())
    bss = _elf.ElfFile(bytes(data)).section_by_name(".bss")
    shoff = struct.unpack_from("<Q", data, 40)[0]
    struct.pack_into("<Q", data, shoff + bss.index * 64 + 32, 5 << 30)
    with pytest.raises(ebpf.InvalidObjectError, match="implausibly large"):
        ebpf.load_collection_spec(bytes(data))


# --------------------------------------------------------------------------
# Globals of sections that are not memory-mappable


@kernel
def test_static_only_sections_read_and_write_through_the_value():
    spec = ebpf.load_collection_spec(fixture_path("static_globals.o"))
    spec.variables["last_len"].set(11)
    with ebpf.Collection(spec) as coll:
        for section in (".bss", ".data", ".rodata"):
            assert not coll.maps[section].flags & MapFlags.MMAPABLE, section  # what this test is about
        v = coll.variables
        assert (v["packets"].get(), v["last_len"].get(), v["increment"].get()) == (0, 11, 3)
        coll.programs["count_static"].run(bytes(20))
        assert (v["packets"].get(), v["last_len"].get()) == (3, 20 - 14)
        v["packets"].set(100)
        coll.programs["count_static"].run(bytes(30))
        assert v["packets"].get() == 103 and v["last_len"].get_bytes() == (16).to_bytes(8, sys.byteorder)
        with pytest.raises(ebpf.PermissionDeniedError):
            v["increment"].set(5)
        with pytest.raises(ebpf.MarshalError):
            v["packets"].set(b"short")


def _libbpf_tools_object(tool: str) -> bytes:
    """The BPF object a libbpf-tools executable embeds (its skeleton's copy)."""
    path = Path("/usr/sbin") / tool
    if not path.exists():
        pytest.skip(f"libbpf-tools' {tool} is not installed")
    data = path.read_bytes()
    at = 1
    while True:
        at = data.find(b"\x7fELF\x02\x01\x01", at)
        if at < 0:
            pytest.fail(f"no BPF object in {path}")
        etype, machine = struct.unpack_from("<HH", data, at + 16)
        shoff, shnum = struct.unpack_from("<Q", data, at + 40)[0], struct.unpack_from("<H", data, at + 60)[0]
        if machine == _elf.EM_BPF and etype == _elf.ET_REL:
            return data[at : at + shoff + shnum * 64]
        at += 1


@kernel
def test_biolatency_static_histogram():
    """libbpf-tools' biolatency keeps ``static struct hist initial_hist`` alone
    in .bss; loaded (its raw_tp variant) the variable reads and writes."""
    spec = ebpf.load_collection_spec(_libbpf_tools_object("biolatency"))
    for name in [n for n, p in spec.programs.items() if p.type == ebpf.ProgramType.TRACING]:
        del spec.programs[name]  # the tp_btf variant; raw_tp does the same work
    spec.variables["targ_ms"].set(True)
    with ebpf.Collection(spec) as coll:
        hist = coll.variables["initial_hist"]
        assert not coll.maps[".bss"].flags & MapFlags.MMAPABLE
        assert hist.get_bytes() == bytes(hist.size)
        assert list(hist.get().slots) == [0] * len(hist.get().slots)
        pattern = bytes(range(hist.size))
        hist.set(pattern)
        assert hist.get_bytes() == pattern
        assert coll.variables["targ_ms"].get() is True


@kernel
def test_xdp_dispatcher_config_reads_back():
    """libxdp reads its dispatcher's ``conf`` (.rodata, static) back from
    the map exactly this way."""
    if not XDP_DISPATCHER.exists():
        pytest.skip("libxdp1 is not installed")
    spec = ebpf.load_collection_spec(XDP_DISPATCHER)
    conf = spec.variables["conf"]
    image = bytearray(conf.get_bytes())
    image[0], image[1], image[2] = 236, 2, 3  # magic, dispatcher_version, num_progs_enabled
    conf.set(bytes(image))
    with ebpf.Collection(spec) as coll:
        live = coll.variables["conf"]
        assert not coll.maps[".rodata"].flags & MapFlags.MMAPABLE
        assert live.get_bytes() == bytes(image)
        got = live.get()
        assert (got.magic, got.dispatcher_version, got.num_progs_enabled) == (236, 2, 3)
