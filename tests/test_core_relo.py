"""CO-RE: field relocations against the running kernel and against custom BTF.

The fixture (fixtures/core_read.bpf.c) declares a minimal ``task_struct``
with ``preserve_access_index`` and reads ``current->tgid`` / ``->pid`` with
``BPF_CORE_READ``; a raw_tp test run executes in the calling task, so the
values must equal this process's ids.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

import ebpf
from ebpf.errors import VerifierError

from conftest import fixture_path

VMLINUX = Path("/sys/kernel/btf/vmlinux")


def _spec() -> ebpf.CollectionSpec:
    return ebpf.load_collection_spec(fixture_path("core_read.o"))


def _raw_btf(with_tgid: bool, struct_name: str = "task_struct") -> bytes:
    """A tiny raw BTF blob: ``int`` and ``struct <struct_name> { int pid; [int tgid;] }``."""
    strings = b"\0int\0" + struct_name.encode() + b"\0pid\0tgid\0"
    off_int = 1
    off_struct = off_int + 4
    off_pid = off_struct + len(struct_name) + 1
    off_tgid = off_pid + 4
    types = b""
    # [1] INT 'int' size 4, signed, 32 bits
    types += struct.pack("<III", off_int, 1 << 24, 4) + struct.pack("<I", (1 << 24) | 32)
    members = [(off_pid, 1, 0)] + ([(off_tgid, 1, 32)] if with_tgid else [])
    # [2] STRUCT
    types += struct.pack("<III", off_struct, (4 << 24) | len(members), 4 * len(members))
    for m in members:
        types += struct.pack("<III", *m)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


def _write(tmp_path: Path, name: str, raw: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(raw)
    return p


def test_spec_has_core_program():
    spec = _spec()
    prog = spec.programs["read_tgid"]
    assert prog.type == ebpf.ProgramType.RAW_TRACEPOINT
    assert {"seen_tgid", "seen_pid", "runs"} <= set(spec.variables)
    # The fixture's local type is in the object's BTF.
    assert spec.types is not None
    spec.types.type_by_name("task_struct")


def _run_and_check(coll: ebpf.Collection) -> None:
    res = coll.programs["read_tgid"].run()
    assert res.retval == 0
    assert coll.variables["runs"].get() == 1
    assert coll.variables["seen_tgid"].get() == os.getpid()
    # In the main thread pid (kernel's thread id) == tgid.
    assert coll.variables["seen_pid"].get() == os.getpid()


@pytest.mark.kernel
def test_core_read_running_kernel():
    with ebpf.Collection(_spec()) as coll:
        _run_and_check(coll)


@pytest.mark.kernel
def test_core_read_kernel_types_path():
    with ebpf.Collection(_spec(), kernel_types=str(VMLINUX)) as coll:
        _run_and_check(coll)


@pytest.mark.kernel
def test_core_read_kernel_types_spec():
    kspec = ebpf.btf.load_spec(VMLINUX) if hasattr(ebpf.btf, "load_spec") else None
    if kspec is None or getattr(kspec, "raw", None) is None:
        pytest.skip("btf.Spec without raw bytes")
    with ebpf.Collection(_spec(), kernel_types=kspec) as coll:
        _run_and_check(coll)


@pytest.mark.kernel
def test_core_read_custom_btf_with_field(tmp_path):
    # A custom BTF with both fields at the kernel's offsets would be needed to
    # read real values; here tgid sits at offset 4, so only check that the
    # relocation succeeds and the program loads and runs.
    path = _write(tmp_path, "ok.btf", _raw_btf(with_tgid=True))
    with ebpf.Collection(_spec(), kernel_types=path) as coll:
        assert coll.programs["read_tgid"].run().retval == 0
        assert coll.variables["runs"].get() == 1


@pytest.mark.kernel
def test_core_relocation_missing_field_names_field(tmp_path):
    path = _write(tmp_path, "notgid.btf", _raw_btf(with_tgid=False))
    with pytest.raises(VerifierError) as info:
        ebpf.Collection(_spec(), kernel_types=path)
    msg = str(info.value)
    first = msg.splitlines()[0]
    assert "CO-RE relocation failed" in first
    assert "task_struct" in first and "tgid" in first
    assert info.value.program == "read_tgid"
    assert info.value.errno is not None
    # The verifier log is still attached in full.
    assert any("CO-RE" in line for line in info.value.log)


@pytest.mark.kernel
def test_core_relocation_missing_field_btf_spec(tmp_path):
    """Same, with the target given as an ebpf.btf.Spec parsed from raw BTF."""
    path = _write(tmp_path, "notgid.btf", _raw_btf(with_tgid=False))
    try:
        target = ebpf.btf.load_spec(path)
    except Exception as exc:  # raw BTF files may not be accepted by load_spec
        pytest.skip(f"btf.load_spec does not read raw BTF: {exc}")
    with pytest.raises(VerifierError, match=r"CO-RE relocation failed.*task_struct\.tgid"):
        ebpf.Collection(_spec(), kernel_types=target)


@pytest.mark.kernel
def test_core_relocation_missing_struct(tmp_path):
    path = _write(tmp_path, "nostruct.btf", _raw_btf(with_tgid=True, struct_name="other_struct"))
    with pytest.raises(VerifierError) as info:
        ebpf.Collection(_spec(), kernel_types=path)
    first = str(info.value).splitlines()[0]
    assert "CO-RE relocation failed" in first
    assert "task_struct" in first


@pytest.mark.kernel
def test_plain_verifier_error_is_not_reported_as_core(tmp_path):
    """A program rejected for another reason keeps the ordinary message."""
    from ebpf import asm

    spec = ebpf.ProgramSpec(
        name="bad", type=ebpf.ProgramType.SOCKET_FILTER, license="GPL",
        instructions=asm.Instructions([asm.exit()]),  # R0 never set
    )
    with pytest.raises(VerifierError) as info:
        ebpf.Program(spec)
    assert "CO-RE" not in str(info.value).splitlines()[0]


@pytest.mark.kernel
def test_core_program_loaded_alone_is_relocated():
    """``ebpf.Program(spec)`` of a program with CO-RE relocations goes through
    libbpf too: the map it is given receives the kernel's real tgid."""
    spec = _spec()
    assert spec.programs["read_tgid"]._origin.collection is spec
    bss = ebpf.Map(spec.maps[".bss"])
    try:
        with ebpf.Program(spec.programs["read_tgid"], maps={".bss": bss}) as prog:
            assert prog.run().retval == 0
        got = bss.lookup(0)
        assert (got.seen_tgid, got.seen_pid, got.runs) == (os.getpid(), os.getpid(), 1)
    finally:
        bss.close()


def test_copied_spec_keeps_its_own_object():
    spec = _spec()
    copy = spec.copy()
    assert copy.programs["read_tgid"]._origin.collection is copy
    assert spec.programs["read_tgid"]._origin.collection is spec


@pytest.mark.kernel
def test_core_program_edited_beyond_relocation_is_refused():
    """Inserting an instruction shifts the offsets libbpf relocates by: loading
    it without CO-RE would silently read the wrong fields, so it is refused."""
    from ebpf import asm
    from ebpf.errors import NotSupportedError

    spec = _spec()
    spec.programs["read_tgid"].instructions.insert(0, asm.mov_imm(asm.R0, 0))
    with pytest.raises(NotSupportedError, match="CO-RE"):
        ebpf.Collection(spec)
