"""C output: format_c() of every object we can get compiles with clang and
lays out memory as the BTF says (checked by _Static_asserts on every size
and offset), prototypes print as libbpf prints them, and the output grows
with the number of members, not with sizes in bytes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from btftest import cpu_budget

import ebpf.btf as btf
from ebpf.btf import (
    Array,
    Builder,
    Enum,
    EnumValue,
    FuncParam,
    FuncProto,
    Int,
    Member,
    Pointer,
    Struct,
    Typedef,
    Union,
    Void,
)

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import fuzz

INT = Int("int", 4, 1)
CHAR = Int("char", 1, 1)
U64 = Int("unsigned long long", 8)


def compile_headers(tmp_path: Path, headers: List[Tuple[str, str, str]]) -> None:
    """Compile (name, header text, clang target) units, several per clang run."""
    by_target: Dict[str, List[Path]] = {}
    for n, (name, text, target) in enumerate(headers):
        unit = tmp_path / f"u{n}.c"
        (tmp_path / f"u{n}.h").write_text(text)
        unit.write_text(f'/* {name} */\n#include "u{n}.h"\n')
        by_target.setdefault(target, []).append(unit)
    for target, units in by_target.items():
        r = subprocess.run(["clang", "-fsyntax-only", "-target", target, "-Wno-everything", *map(str, units)],
                           capture_output=True, text=True)
        if r.returncode:
            names = {f"u{n}.h": name for n, (name, _, _) in enumerate(headers)}
            errors = [ln for ln in r.stderr.splitlines() if "error" in ln][:10]
            for key, name in names.items():
                errors = [e.replace(key, name) for e in errors]
            pytest.fail("clang refused the headers:\n" + "\n".join(errors))


def _target(spec: btf.Spec) -> str:
    return "bpfeb" if spec.byte_order == "big" else "bpfel"


# -- every object ---------------------------------------------------------------

_GROUPS = {
    "fixtures": lambda p: str(p).startswith(str(ROOT)),
    "cilium": lambda p: "cilium" in str(p),
    "libxdp": lambda p: "/bpf/" in str(p) and "cilium" not in str(p),
}


def _corpus_groups() -> Dict[str, List[Tuple[str, bytes]]]:
    groups: Dict[str, List[Tuple[str, bytes]]] = {"fixtures": [], "cilium": [], "libxdp": [], "libbpf-tools": []}
    paths = {p.name: p for p in fuzz.seed_paths()}
    for name, data in fuzz.corpus():
        p = paths.get(name)
        group = next((g for g, match in _GROUPS.items() if p is not None and match(p)), "libbpf-tools")
        groups[group].append((name, data))
    return groups


@pytest.mark.parametrize("group", ["fixtures", "cilium", "libxdp", "libbpf-tools"])
def test_every_object_header_compiles_with_its_layout(group: str, tmp_path: Path) -> None:
    objects = _corpus_groups()[group]
    if not objects:
        pytest.skip(f"no {group} objects on this machine")
    headers = []
    for name, data in objects:
        try:
            spec = btf.load_spec(data)
        except btf.BTFError as e:
            assert "no .BTF section" in str(e)
            continue
        text = spec.format_c(layout_asserts=True)
        headers.append((name, text, _target(spec)))
    assert headers
    # The asserts are there: every named struct has one.
    assert any("_Static_assert(sizeof(struct" in text for _, text, _ in headers)
    compile_headers(tmp_path, headers)


@pytest.mark.parametrize("tool", ["execsnoop", "exitsnoop", "syscount", "runqlat", "mountsnoop"])
def test_libbpf_tools_headers_compile(tool: str, tmp_path: Path) -> None:
    """These have `u64 (*clock)(void)`-style prototypes (one void parameter)."""
    objs = [(n, d) for n, d in fuzz.libbpf_tools_objects() if n.startswith(tool + ".")]
    if not objs:
        pytest.skip(f"{tool} (libbpf-tools) not installed")
    spec = btf.load_spec(objs[0][1])
    text = spec.format_c()
    assert "(...)" not in text
    compile_headers(tmp_path, [(tool, text, "bpfel")])


def test_kernel_header_compiles_with_its_layout(tmp_path: Path) -> None:
    path = Path("/sys/kernel/btf/vmlinux")
    if not path.exists():
        pytest.skip("no kernel BTF")
    # The kernel's types have the host's layout (va_list differs on BPF).
    text = btf.load_kernel_spec().format_c(layout_asserts=True)
    compile_headers(tmp_path, [("vmlinux", text, "x86_64-linux-gnu")])


# -- prototypes -------------------------------------------------------------------


def test_a_lone_void_parameter_prints_as_void() -> None:
    proto = FuncProto(U64, [FuncParam("", Void())])
    assert str(Typedef("clock_fn", Pointer(proto))) == "typedef unsigned long long (*clock_fn)(void)"
    assert btf.declarator(proto, "clock") == "unsigned long long clock(void)"
    assert btf.declarator(FuncProto(INT, []), "f") == "int f(void)"
    varargs = FuncProto(INT, [FuncParam("fmt", Pointer(CHAR)), FuncParam("", Void())])
    assert btf.declarator(varargs, "printk") == "int printk(char *fmt, ...)"


# -- size and layout ---------------------------------------------------------------


def _header(*types: btf.Type) -> Tuple[btf.Spec, str]:
    b = Builder(types)
    spec = b.spec()
    return spec, spec.format_c(layout_asserts=True)


def test_a_struct_near_2_gib_prints_in_a_few_lines(tmp_path: Path) -> None:
    # Member offsets are in bits (32 of them): the last member sits below
    # 512 MiB, the rest is tail padding.
    size = (1 << 31) - 8
    tail = (1 << 29) - 8
    big = Struct("big", size, [Member("head", INT, 0), Member("tail", U64, tail * 8)])
    gap = Struct("gap", 1 << 20, [Member("a", CHAR, 24), Member("b", INT, 8 * 1000), Member("c", U64, 8 * 4096)])
    with cpu_budget(20):
        text = str(big)
        spec, header = _header(big, gap)
    # One line per member and per gap, not one per 64 bits.
    assert len(text.splitlines()) < 10, text
    assert len(header.splitlines()) < 60, header
    assert f"char __pad_8[{tail - 8}];" in text
    assert f"char __pad_{tail + 8}[{size - tail - 8}];" in text
    compile_headers(tmp_path, [("big", header, "bpfel")])


def test_layouts_that_need_attributes(tmp_path: Path) -> None:
    """Packed structs (every gap explicit), unions larger than their members,
    enums of 1, 2 and 8 bytes whose values fit in an int, a struct whose
    tail padding exceeds its alignment."""
    u16, u32 = Int("unsigned short", 2), Int("unsigned int", 4)
    compat_u64 = Typedef("compat_u64", U64)
    packed = Struct("compat_setup", 64, [  # like the kernel's compat_blk_user_trace_setup
        Member("name", Array(CHAR, 32), 0), Member("act_mask", u16, 256), Member("buf_size", u32, 288),
        Member("buf_nr", u32, 320), Member("start", compat_u64, 352), Member("end", compat_u64, 416),
        Member("pid", u32, 480)])
    wide_union = Union("wide", 8, [])  # members dropped, size kept
    e8 = Enum("e8", 8, [EnumValue("SMALL", 1), EnumValue("TRUNCATED", 878082192)])
    e2 = Enum("e2", 2, [EnumValue("A", 1)])
    e1 = Enum("e1", 1, [EnumValue("B", 2)])
    holder = Struct("holder", 32, [Member("a", e1, 0), Member("b", e2, 16), Member("c", e8, 64),
                                   Member("w", wide_union, 128)])
    spec, header = _header(packed, holder)
    assert "__attribute__((packed))" in header
    assert "__attribute__((mode(word)))" in header and "__attribute__((mode(HI)))" in header
    assert btf.alignof(spec.type_by_name("compat_setup")) == 1
    compile_headers(tmp_path, [("layouts", header, "bpfel"), ("layouts-eb", header, "bpfeb")])


def test_alignof_matches_libbpf_for_packed_structs() -> None:
    packed = Struct("p", 5, [Member("a", INT, 0), Member("b", CHAR, 32)])
    assert btf.alignof(packed) == 1
    natural = Struct("n", 8, [Member("a", INT, 0), Member("b", CHAR, 32)])
    assert btf.alignof(natural) == 4
    outer = Struct("o", 6, [Member("c", CHAR, 0), Member("p", packed, 8)])
    assert btf.alignof(outer) == 1
    with pytest.raises(TypeError):
        btf.alignof(btf.Fwd("f"))
