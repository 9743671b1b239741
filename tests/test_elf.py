"""Unit tests of the strict ELF reader, checked against llvm-readelf."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from ebpf import _elf
from ebpf.errors import InvalidObjectError

from conftest import CILIUM_TESTDATA, FIXTURES

OBJECTS = sorted(
    list(FIXTURES.glob("*.o"))
    + list((CILIUM_TESTDATA / "testdata").glob("*.elf"))
    + list((CILIUM_TESTDATA / "btf" / "testdata").glob("*.elf"))
)

needs_llvm = pytest.mark.skipif(
    shutil.which("llvm-readelf") is None or shutil.which("llvm-readobj") is None,
    reason="llvm-readelf not installed",
)

# R_BPF_* numbers as llvm spells them.
RELOC_TYPES = {0: "R_BPF_NONE", 1: "R_BPF_64_64", 2: "R_BPF_64_ABS64", 3: "R_BPF_64_ABS32", 4: "R_BPF_64_NODYLD32",
               10: "R_BPF_64_32"}


def _readelf_json(path: Path, *flags: str) -> dict:
    out = subprocess.run(
        ["llvm-readelf", "--elf-output-style=JSON", *flags, str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return next(iter(json.loads(out)[0].values()))


def _readobj_relocs(path: Path) -> Dict[int, List[Tuple[int, str, str]]]:
    """{relocation section index: [(offset, type name, symbol name)]}."""
    out = subprocess.run(["llvm-readobj", "-r", str(path)], check=True, capture_output=True, text=True).stdout
    relocs: Dict[int, List[Tuple[int, str, str]]] = {}
    current = None
    for line in out.splitlines():
        m = re.match(r"\s*Section \((\d+)\) ", line)
        if m:
            current = relocs.setdefault(int(m.group(1)), [])
            continue
        m = re.match(r"\s*0x([0-9A-Fa-f]+) (\S+) (\S*)", line)
        if m and current is not None:
            current.append((int(m.group(1), 16), m.group(2), m.group(3)))
    return relocs


@pytest.fixture(params=OBJECTS, ids=lambda p: p.name)
def obj(request: pytest.FixtureRequest) -> Path:
    return request.param


@needs_llvm
def test_sections_match_readelf(obj: Path) -> None:
    elf = _elf.ElfFile(obj.read_bytes())
    want = [s["Section"] for s in _readelf_json(obj, "-S")["Sections"]]
    assert len(elf.sections) == len(want)
    for sec, w in zip(elf.sections, want):
        assert sec.index == w["Index"]
        assert sec.name == w["Name"]["Value"]
        assert sec.type == w["Type"]["RawValue"]
        assert sec.flags == w["Flags"]["RawFlags"]
        assert (sec.offset, sec.size) == (w["Offset"], w["Size"])
        assert (sec.link, sec.info, sec.entsize) == (w["Link"], w["Info"], w["EntrySize"])
        if sec.type == _elf.SHT_NOBITS:
            assert sec.data == b""
        else:
            assert len(sec.data) == sec.size
        assert elf.section_by_name(sec.name) is not None


@needs_llvm
def test_symbols_match_readelf(obj: Path) -> None:
    elf = _elf.ElfFile(obj.read_bytes())
    want = [s["Symbol"] for s in _readelf_json(obj, "-s").get("Symbols", [])]
    assert len(elf.symbols) == len(want)
    for sym, w in zip(elf.symbols, want):
        if sym.type != _elf.STT_SECTION:  # llvm shows the section's name
            assert sym.name == w["Name"]["Value"]
        assert (sym.value, sym.size) == (w["Value"], w["Size"])
        assert sym.type == w["Type"]["RawValue"]
        assert sym.bind == w["Binding"]["RawValue"]
        other = w["Other"]  # llvm spells out flags (e.g. STV_HIDDEN) as a dict
        assert sym.visibility == (other["RawFlags"] if isinstance(other, dict) else other) & 3
        assert sym.shndx == w["Section"]["RawValue"]


@needs_llvm
def test_relocations_match_readobj(obj: Path) -> None:
    elf = _elf.ElfFile(obj.read_bytes())
    want = _readobj_relocs(obj)
    got: Dict[int, List[Tuple[int, str, str]]] = {}
    for sec in elf.sections:
        for rel_sec in elf.relocation_sections(sec):
            rows = got.setdefault(rel_sec.index, [])
            for rel in elf._parse_relocations(rel_sec, sec):
                sym = rel.symbol
                name = elf.sections[sym.shndx].name if sym.type == _elf.STT_SECTION else sym.name
                rows.append((rel.offset, RELOC_TYPES.get(rel.type, str(rel.type)), name))
    assert got == want
    for sec in elf.sections:
        total = sum(len(got.get(r.index, [])) for r in elf.relocation_sections(sec))
        assert len(elf.relocations(sec)) == total


def test_byteorder_and_machine() -> None:
    for name, order in (("btf_map_init-el.elf", "little"), ("btf_map_init-eb.elf", "big")):
        path = CILIUM_TESTDATA / "testdata" / name
        if not path.exists():
            pytest.skip(f"{path} not available")
        elf = _elf.ElfFile(path.read_bytes())
        assert elf.byteorder == order
        assert elf.machine == _elf.EM_BPF
        maps = elf.section_by_name(".maps")
        assert maps is not None and maps.type == _elf.SHT_PROGBITS
        names = {s.name for s in elf.symbols}
        assert {"prog_array_init", "inner_map", "outer_map_init", "tail_main"} <= names
        relocs = elf.relocations(maps)
        assert [(r.offset, r.symbol.name) for r in relocs] == [(0x20, "tail_1"), (0x70, "inner_map")]
        assert elf.section_by_name("no such section") is None


# -- malformed input -------------------------------------------------------


def _sample() -> bytes:
    path = CILIUM_TESTDATA / "testdata" / "btf_map_init-el.elf"
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path.read_bytes()


def _shdr_offset(data: bytes, index: int) -> int:
    return struct.unpack_from("<Q", data, 40)[0] + 64 * index


def _patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, value)
    return bytes(buf)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "not an ELF file"),
        (b"MZ\x90\x00" + b"\0" * 100, "not an ELF file"),
        (b"\x7fELF\x02\x01\x01", "truncated ELF header"),
        (b"\x7fELF\x01\x01\x01" + b"\0" * 57, "not a 64-bit"),
        (b"\x7fELF\x02\x03\x01" + b"\0" * 57, "byte order"),
    ],
)
def test_garbage(data: bytes, message: str) -> None:
    with pytest.raises(InvalidObjectError, match=message):
        _elf.ElfFile(data)


def test_wrong_machine() -> None:
    data = _patch(_sample(), 18, "<H", 62)
    with pytest.raises(InvalidObjectError, match=r"not a BPF object \(machine 62\)"):
        _elf.ElfFile(data)


def test_truncations_never_escape() -> None:
    data = _sample()
    for n in range(0, len(data), 7):
        try:
            _elf.ElfFile(data[:n]).symbols  # noqa: B018 - reading it parses
        except InvalidObjectError:
            pass


def test_section_past_end() -> None:
    data = _sample()
    elf = _elf.ElfFile(data)
    maps = elf.section_by_name(".maps")
    assert maps is not None
    bad = _patch(data, _shdr_offset(data, maps.index) + 32, "<Q", len(data))
    with pytest.raises(InvalidObjectError, match=r"section \d+ \(\.maps\) extends past end of file"):
        _elf.ElfFile(bad)


def test_section_header_table_past_end() -> None:
    data = _sample()
    with pytest.raises(InvalidObjectError, match="extends past end of file"):
        _elf.ElfFile(_patch(data, 60, "<H", 0x7FFF))


def test_symbol_name_out_of_range() -> None:
    data = _sample()
    elf = _elf.ElfFile(data)
    assert elf.symtab is not None
    bad = _elf.ElfFile(_patch(data, elf.symtab.offset + 24 * 3, "<I", 0xFFFFFF))
    with pytest.raises(InvalidObjectError, match="symbol 3: name offset"):
        bad.symbols  # noqa: B018 - reading it parses


def test_relocation_symbol_out_of_range() -> None:
    data = _sample()
    elf = _elf.ElfFile(data)
    maps = elf.section_by_name(".maps")
    assert maps is not None
    rel = elf.relocation_sections(maps)[0]
    bad = _elf.ElfFile(_patch(data, rel.offset + 8, "<Q", (999 << 32) | 2))
    with pytest.raises(InvalidObjectError, match="symbol index 999 out of range"):
        bad.relocations(bad.sections[maps.index])


def test_relocation_offset_out_of_range() -> None:
    data = _sample()
    elf = _elf.ElfFile(data)
    maps = elf.section_by_name(".maps")
    assert maps is not None
    rel = elf.relocation_sections(maps)[0]
    bad = _elf.ElfFile(_patch(data, rel.offset, "<Q", maps.size))
    with pytest.raises(InvalidObjectError, match="outside section"):
        bad.relocations(bad.sections[maps.index])
