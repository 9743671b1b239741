"""Broken objects must never crash the interpreter.

A bounded run of ``scripts/fuzz.py`` through ``ebpf.load_collection_spec``
(in child processes, so a crash is visible as a signal), plus one regression
test per class of input that crashes or hangs libbpf 1.1.2's
``bpf_object__open_mem``.  The regression inputs are built by editing a
cilium/ebpf test object in exactly the way the fuzzer found harmful.
"""

from __future__ import annotations

import ctypes
import struct
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

from ebpf import _elf
from ebpf._validate import check_object
from ebpf.errors import InvalidObjectError

from conftest import CILIUM_TESTDATA, ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import fuzz


def _have_libbpf() -> bool:
    try:
        ctypes.CDLL("libbpf.so.1")
    except OSError:
        return False
    return True


needs_libbpf = pytest.mark.skipif(not _have_libbpf(), reason="libbpf.so.1 not installed")

BTF_MAP_INIT = CILIUM_TESTDATA / "testdata" / "btf_map_init-el.elf"
FWD_DECL = CILIUM_TESTDATA / "testdata" / "fwd_decl-el.elf"

# BTF kinds used below.
PTR, ARRAY, STRUCT, TYPEDEF, VOLATILE, CONST, FUNC, VAR, DATASEC = 2, 3, 4, 8, 9, 10, 12, 14, 15


def _base(path: Path = BTF_MAP_INIT) -> bytes:
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path.read_bytes()


def _btf_types(data: bytes) -> Tuple[int, List[Tuple[int, int, int]]]:
    """(file offset of the BTF section, [(type id, file offset, kind)]) of a
    little-endian object, by walking the type records."""
    sec = _elf.ElfFile(data).section_by_name(".BTF")
    assert sec is not None
    hdr_len, type_off, type_len = struct.unpack_from("<III", sec.data, 4)
    pos = sec.offset + hdr_len + type_off
    end = pos + type_len
    out = []
    tid = 0
    extra_fixed = {1: 4, ARRAY: 12, VAR: 4, 17: 4}
    per_item = {STRUCT: 12, 5: 12, 6: 8, 19: 12, 13: 8, DATASEC: 12}
    while pos < end:
        tid += 1
        info = struct.unpack_from("<I", data, pos + 4)[0]
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        out.append((tid, pos, kind))
        pos += 12 + extra_fixed.get(kind, 0) + per_item.get(kind, 0) * vlen
    return sec.offset, out


def _put32(data: bytes, offset: int, value: int) -> bytes:
    buf = bytearray(data)
    struct.pack_into("<I", buf, offset, value)
    return bytes(buf)


def _first(types: List[Tuple[int, int, int]], kind: int) -> Tuple[int, int, int]:
    return next(t for t in types if t[2] == kind)


# -- crasher classes -------------------------------------------------------


def crasher_type_id_out_of_range() -> bytes:
    """A map definition member whose type id is past the last type.

    libbpf's ``skip_mods_and_typedefs`` gets NULL from ``btf__type_by_id``
    and dereferences it (the bulk of the fuzzer's crashes).
    """
    data = _base()
    _, types = _btf_types(data)
    tid, off, _ = _first(types, STRUCT)
    # First member: name_off, type, offset after the 12-byte header.
    return _put32(data, off + 12 + 4, 0x00FFFFFF)


def crasher_name_offset_out_of_range() -> bytes:
    """A FUNC type whose name offset is past the string section, in an
    object with an extern symbol.

    ``btf__name_by_offset`` returns NULL and ``find_extern_btf_id``
    ``strcmp``s it against the extern's name.
    """
    data = _base(FWD_DECL)
    _, types = _btf_types(data)
    func = _first(types, FUNC)
    return _put32(data, func[1], 0x00FFFFFF)


def crasher_symbol_wraps() -> bytes:
    """A program symbol whose st_value + st_size wraps around 2**64.

    libbpf's bounds check is done in 64-bit arithmetic, passes, and it
    copies the "program" from 16 MiB before the buffer.
    """
    data = _base()
    elf = _elf.ElfFile(data)
    sym = next(s for s in elf.symbols if s.type == _elf.STT_FUNC)
    assert elf.symtab is not None
    off = elf.symtab.offset + sym.index * 24
    buf = bytearray(data)
    size = 1 << 24
    struct.pack_into("<QQ", buf, off + 8, (1 << 64) - size, size + sym.size)
    return bytes(buf)


def hang_typedef_cycle() -> bytes:
    """A map variable typed by a modifier that refers to itself.

    ``skip_mods_and_typedefs`` follows modifiers without a depth limit and
    spins for ever.
    """
    data = _base()
    _, types = _btf_types(data)
    mod = next(t for t in types if t[2] in (TYPEDEF, VOLATILE, CONST))
    var = _first(types, VAR)
    data = _put32(data, mod[1] + 8, mod[0])
    return _put32(data, var[1] + 8, mod[0])


CRASHERS = {
    "type_id_out_of_range": crasher_type_id_out_of_range,
    "name_offset_out_of_range": crasher_name_offset_out_of_range,
    "symbol_wraps": crasher_symbol_wraps,
    "typedef_cycle": hang_typedef_cycle,
}


@pytest.mark.parametrize("name", sorted(CRASHERS))
def test_validator_rejects_crasher(name: str) -> None:
    check_object(_base())  # the unedited objects are fine
    check_object(_base(FWD_DECL))
    data = CRASHERS[name]()
    with pytest.raises(InvalidObjectError):
        check_object(data)


@needs_libbpf
@pytest.mark.parametrize("name", sorted(CRASHERS))
def test_library_rejects_crasher_without_crashing(name: str) -> None:
    child = fuzz.Child("lib")
    try:
        status, detail = child.run(CRASHERS[name]())
    finally:
        child.close()
    assert status == "rej", detail
    assert "InvalidObjectError" in detail


@needs_libbpf
@pytest.mark.parametrize("name", sorted(CRASHERS))
def test_raw_libbpf_still_crashes(name: str) -> None:
    """Informative: shows the validator is still needed with this libbpf."""
    old_timeout = fuzz.TIMEOUT
    fuzz.TIMEOUT = 5.0
    child = fuzz.Child("raw")
    try:
        status, detail = child.run(CRASHERS[name]())
    finally:
        fuzz.TIMEOUT = old_timeout
        child.close()
    if status not in ("crash", "hang"):
        pytest.skip(f"installed libbpf no longer crashes on {name} ({status} {detail})")


# -- bounded fuzz run --------------------------------------------------------


# Counts, not time: each slice takes a few seconds here.  The long campaign
# is scripts/fuzz.py run by hand (see its docstring).
SLICE = {"lib": 800, "btf": 300, "ktypes": 400}


def _run_slice(mode: str, allowed: set) -> None:
    stats = fuzz.run(mode, seed=20240601, count=SLICE[mode], jobs=2, save=None, progress=False)
    assert stats.inputs == SLICE[mode]
    assert not stats.failures, stats.failures[:10]
    assert set(stats.counts) <= allowed, stats.counts
    # Mutations reach both sides of the validator.
    assert stats.counts.get("ok", 0) > 0 and stats.counts.get("rej", 0) > 0


@needs_libbpf
def test_fuzz_library_path_never_crashes() -> None:
    if not fuzz.seed_paths():
        pytest.skip("no seed objects")
    _run_slice("lib", {"ok", "rej", "fail"})


def test_fuzz_btf_parsing_formatting_and_iteration() -> None:
    """Mutated BTF through the validator, format_c(), every type's repr,
    str, walk, sizeof, alignof and codec; refused BTF through the lazy path."""
    if not fuzz.btf_seeds():
        pytest.skip("no seed objects")
    _run_slice("btf", {"ok", "rej"})


@pytest.mark.kernel
def test_fuzz_kernel_types_path_never_crashes() -> None:
    """Mutated kernel-types files: checked by btf.load_spec (what the loader
    calls), then handed to libbpf for a CO-RE load.  Without the check
    libbpf 1.1.2 crashes on a few percent of them (ktypes-raw mode)."""
    if not fuzz.ktypes_seeds():
        pytest.skip("no CO-RE fixture")
    _run_slice("ktypes", {"ok", "rej", "fail"})


def _kernel_types_crasher() -> bytes:
    """A CO-RE target whose task_struct member refers to a type id past the
    last type: libbpf's skip_mods_and_typedefs dereferences NULL."""
    data = bytearray(fuzz.tiny_task_struct_btf())
    # Second member of the struct: header (24) + int record (16) + struct
    # header (12) + first member (12); its type id is the word at +4.
    struct.pack_into("<I", data, 24 + 16 + 12 + 12 + 4, 0xFFFF)
    return bytes(data)


@pytest.mark.kernel
def test_kernel_types_crasher_is_refused_before_libbpf() -> None:
    child = fuzz.Child("ktypes")
    try:
        status, detail = child.run(_kernel_types_crasher())
        seed_status, _ = child.run(fuzz.tiny_task_struct_btf())
    finally:
        child.close()
    assert status == "rej", detail
    assert "BTFError" in detail and "out of range" in detail
    assert seed_status == "ok"


@pytest.mark.kernel
def test_raw_libbpf_crashes_on_the_kernel_types_crasher() -> None:
    """Informative: shows the check is still needed with this libbpf."""
    child = fuzz.Child("ktypes-raw")
    try:
        status, detail = child.run(_kernel_types_crasher())
    finally:
        child.close()
    if status != "crash":
        pytest.skip(f"installed libbpf no longer crashes on it ({status} {detail})")


def test_seed_objects_pass_validation() -> None:
    """Every object libbpf opens must pass; the validator rejects no real input."""
    objects = fuzz.corpus()
    if not objects:
        pytest.skip("no seed objects")
    for _name, data in objects:
        check_object(data)


def test_mutations_are_deterministic() -> None:
    seeds = [("a", bytes(range(256)) * 4)]
    assert fuzz.make_input(seeds, 7, 123) == fuzz.make_input(seeds, 7, 123)
    assert fuzz.make_input(seeds, 7, 123) != fuzz.make_input(seeds, 7, 124)


def test_check_object_garbage() -> None:
    for data in (b"", b"\x7fELF", b"\0" * 100, b"\x7fELF\x02\x01\x01" + b"\0" * 57):
        with pytest.raises(InvalidObjectError):
            check_object(data)
