"""ebpf.asm against real compiler output.

Every executable section of cilium/ebpf's test objects, of fixtures/build/*.o
and of an ISA v4 fixture built here with clang >= 18 (when installed) must

* decode and re-encode to the identical bytes (with and without synthesized
  labels), and
* disassemble to what ``llvm-objdump -d --no-show-raw-insn`` prints, line
  for line (modulo whitespace, ``<symbol>`` annotations and hex vs decimal).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional

import pytest

from ebpf import asm

ROOT = Path(__file__).resolve().parent.parent
CILIUM = Path("/usr/share/gocode/src/github.com/cilium/ebpf")
SHF_EXECINSTR = 0x4
SHT_NOBITS = 8


class ExecSection(NamedTuple):
    name: str
    data: bytes
    byteorder: str


def exec_sections(data: bytes) -> List[ExecSection]:
    """The non-empty SHF_EXECINSTR sections of an ELF64 object.

    Deliberately tiny and independent of ebpf's own ELF reader so this test
    checks ebpf.asm alone.
    """
    assert data[:4] == b"\x7fELF" and data[4] == 2, "not an ELF64 file"
    byteorder = "little" if data[5] == 1 else "big"
    e = "<" if byteorder == "little" else ">"
    shoff = struct.unpack_from(e + "Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", data, 0x3A)
    headers = [struct.unpack_from(e + "IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab_off, strtab_size = headers[shstrndx][4], headers[shstrndx][5]
    strtab = data[strtab_off : strtab_off + strtab_size]
    out = []
    for name_off, sh_type, flags, _addr, offset, size, *_ in headers:
        if not flags & SHF_EXECINSTR or sh_type == SHT_NOBITS or size == 0:
            continue
        name = strtab[name_off : strtab.index(b"\0", name_off)].decode()
        out.append(ExecSection(name, data[offset : offset + size], byteorder))
    return out


def _objects() -> List[Path]:
    paths = sorted((CILIUM / "testdata").glob("*.elf")) + sorted((CILIUM / "btf" / "testdata").glob("*.elf"))
    paths += sorted((ROOT / "fixtures" / "build").glob("*.o"))
    return paths


OBJECTS = _objects()


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def test_objects_present() -> None:
    if not (CILIUM / "testdata").is_dir():
        pytest.skip("cilium/ebpf test data not installed (golang-github-cilium-ebpf-dev)")
    assert len(OBJECTS) >= 40


@pytest.mark.parametrize("path", OBJECTS, ids=_id)
def test_round_trip(path: Path) -> None:
    sections = exec_sections(path.read_bytes())
    for section in sections:
        insns = asm.Instructions.decode(section.data, section.byteorder)
        assert insns.encode(section.byteorder) == section.data, section.name
        labelled = asm.Instructions.decode(section.data, section.byteorder, labels=True)
        assert labelled.encode(section.byteorder) == section.data, section.name
        assert sum(ins.slots for ins in insns) * 8 == len(section.data)


# -- llvm-objdump comparison ----------------------------------------------------------------

_LINE = re.compile(r"^\s*(\d+):\s+(.*)$")
_SECTION = re.compile(r"^Disassembly of section (.*):$")
_ANNOTATION = re.compile(r"\s*<[^>]*>")
_HEX = re.compile(r"(-?)0x([0-9a-f]+)")


def _normalise(text: str) -> str:
    text = _ANNOTATION.sub("", text)
    # LLVM >= 17 prints numbers in hex; ours (like LLVM 14) are decimal.
    text = _HEX.sub(lambda m: str(int(m.group(2), 16) * (-1 if m.group(1) else 1)), text)
    return " ".join(text.replace(",", ", ").split()).replace(" ,", ",")


def objdump(tool: str, path: Path, *extra: str) -> Dict[str, Dict[int, str]]:
    """section name -> slot -> normalised disassembly."""
    out = subprocess.run([tool, "-d", "--no-show-raw-insn", *extra, str(path)],
                         check=True, capture_output=True, text=True).stdout
    result: Dict[str, Dict[int, str]] = {}
    current: Optional[Dict[int, str]] = None
    for line in out.splitlines():
        m = _SECTION.match(line)
        if m:
            current = result.setdefault(m.group(1), {})
            continue
        m = _LINE.match(line)
        if m and current is not None:
            current[int(m.group(1))] = _normalise(m.group(2))
    return result


def _find_tool(*names: str) -> Optional[str]:
    for name in names:
        found = shutil.which(name) or (name if Path(name).exists() else None)
        if found:
            return found
    return None


LLVM14 = _find_tool("llvm-objdump-14", "llvm-objdump")
LLVM_NEW = _find_tool(*(f"/usr/lib/llvm-{v}/bin/llvm-objdump" for v in (21, 20, 19, 18)))
CLANG_NEW = _find_tool(*(f"clang-{v}" for v in (21, 20, 19, 18)))


def compare_with_objdump(tool: str, path: Path) -> int:
    """Assert our disassembly equals tool's; return the number of lines compared."""
    reference = objdump(tool, path)
    # 32-bit atomics other than a plain add only exist in LLVM's alu32 syntax.
    reference32 = objdump(tool, path, "--mattr=+alu32")
    compared = 0
    for section in exec_sections(path.read_bytes()):
        expected = reference.get(section.name, {})
        insns = asm.Instructions.decode(section.data, section.byteorder)
        for slot, ins in zip(insns.raw_offsets(), insns):
            want = expected.get(slot)
            if ins.opcode == 0xC3 and ins.constant != 0:
                want = reference32[section.name].get(slot)
            if want is None or want == "<unknown>":
                continue
            assert _normalise(str(ins)) == want, f"{path.name} {section.name} slot {slot}: {ins!r}"
            compared += 1
    return compared


@pytest.mark.skipif(LLVM14 is None, reason="llvm-objdump not installed")
@pytest.mark.parametrize("path", OBJECTS, ids=_id)
def test_disassembly_matches_llvm_objdump(path: Path) -> None:
    compared = compare_with_objdump(LLVM14, path)
    if exec_sections(path.read_bytes()):
        assert compared > 0


@pytest.fixture(scope="module")
def v4_objects(tmp_path_factory: pytest.TempPathFactory) -> List[Path]:
    if CLANG_NEW is None or LLVM_NEW is None:
        pytest.skip("needs clang and llvm-objdump >= 18 (apt-get install clang-19 llvm-19) for -mcpu=v4")
    out = tmp_path_factory.mktemp("asm_v4")
    objects = []
    for source in sorted((ROOT / "fixtures").glob("asm_*.bpf.c")):
        for target in ("bpfel", "bpfeb"):
            obj = out / f"{source.name[:-6]}.{target}.o"
            subprocess.run([CLANG_NEW, "-O2", "-g", "-target", target, "-mcpu=v4", "-c", str(source), "-o", str(obj)],
                           check=True)
            objects.append(obj)
    assert objects
    return objects


def test_v4_round_trip(v4_objects: List[Path]) -> None:
    for path in v4_objects:
        test_round_trip(path)


def test_v4_disassembly_matches_llvm_objdump(v4_objects: List[Path]) -> None:
    for path in v4_objects:
        assert compare_with_objdump(LLVM_NEW, path) > 100


def test_v4_fixture_covers_v4_instructions(v4_objects: List[Path]) -> None:
    seen = set()
    for section in exec_sections(v4_objects[0].read_bytes()):
        for ins in asm.Instructions.decode(section.data, section.byteorder):
            seen.add(re.sub(r"[rw]\d+|-?\d+", "N", str(ins)))
    for wanted in [
        "N s/= N",
        "N = (sN)N",
        "N = *(sN *)(N + N)",
        "N = bswapN N",
        "gotol +N",
        "may_goto +N",
        "N = atomic_fetch_or((uN *)(N + N), N)",
        "N = cmpxchgN_N(N + N, N, N)",
        "N = xchg_N(N + N, N)",
        "if N & N goto +N",
    ]:
        assert wanted in seen, wanted
