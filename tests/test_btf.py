"""ebpf.btf: parsing cilium/ebpf's test objects, our fixture, and the kernel's BTF."""

from __future__ import annotations

import gzip
import re
import subprocess
import time
from pathlib import Path

import pytest

import ebpf.btf as btf
from ebpf.errors import EBPFError, InvalidObjectError

from conftest import CILIUM_TESTDATA, fixture_path

BTF_TESTDATA = CILIUM_TESTDATA / "btf" / "testdata"
VMLINUX_GZ = BTF_TESTDATA / "vmlinux.btf.gz"


@pytest.fixture(scope="module")
def vmlinux_testdata() -> btf.Spec:
    return btf.Spec.from_raw(gzip.decompress(VMLINUX_GZ.read_bytes()))


def _walk_all(spec: btf.Spec) -> int:
    n = 0
    for t in spec:
        assert isinstance(t.name, str)
        assert spec.type_by_id(t.id) is t
        repr(t)
        for child in t._children():
            assert isinstance(child, btf.Type)
        n += 1
    return n


ELF_FILES = sorted(BTF_TESTDATA.glob("*.elf")) + sorted((CILIUM_TESTDATA / "testdata").glob("*.elf"))


@pytest.mark.parametrize("path", ELF_FILES, ids=lambda p: p.name)
def test_cilium_elf_objects(path: Path) -> None:
    try:
        spec = btf.load_spec(path)
    except btf.BTFError as e:
        if "no .BTF section" in str(e):
            pytest.skip("object without BTF")
        raise
    assert _walk_all(spec) == len(spec) > 0
    assert spec.byte_order == ("big" if "-eb" in path.name else "little")
    assert isinstance(spec.type_by_id(0), btf.Void)
    for t in spec:
        if isinstance(t, (btf.Struct, btf.Union)):
            assert btf.sizeof(t) == t.size
            str(t)


@pytest.mark.parametrize("path", sorted(BTF_TESTDATA.glob("relocs-*.elf")), ids=lambda p: p.name)
def test_ambiguous_flavours(path: Path) -> None:
    # cilium: TestAnyTypesByName / TestTypeByNameAmbiguous
    spec = btf.load_spec(path)
    assert len(spec.types_by_name("ambiguous")) == 1
    assert len(spec.types_by_name("ambiguous___flavour")) == 1
    assert spec.type_by_name("ambiguous", btf.Struct).name == "ambiguous"
    assert spec.type_by_name("ambiguous___flavour", "struct").name == "ambiguous___flavour"


@pytest.mark.parametrize("path", sorted((CILIUM_TESTDATA / "testdata").glob("loader-e*.elf")),
                         ids=lambda p: p.name)
def test_loader_objects(path: Path) -> None:
    # cilium: TestLoadSpecFromElf
    spec = btf.load_spec(path.read_bytes())
    assert isinstance(spec.type_by_id(0), btf.Void)
    assert isinstance(spec.type_by_name("bpf_map_def"), btf.Struct)
    with pytest.raises(btf.TypeNotFoundError) as ei:
        spec.type_by_name("totally_bogus_type")
    assert isinstance(ei.value, EBPFError) and isinstance(ei.value, KeyError)
    fn = spec.type_by_name("global_fn", btf.Func)
    assert fn.linkage == btf.FuncLinkage.GLOBAL
    assert isinstance(fn.type, btf.FuncProto)
    v = spec.type_by_name("key3", btf.Var)
    assert v.linkage == btf.VarLinkage.GLOBAL


def test_vmlinux_testdata(vmlinux_testdata: btf.Spec) -> None:
    spec = vmlinux_testdata
    # cilium: TestTypeByName — same object twice, iphdr's bitfield layout.
    a = spec.type_by_name("iphdr", btf.Struct)
    assert spec.type_by_name("iphdr", btf.Struct) is a
    m = a.members[1]
    assert m.name == "version"
    assert isinstance(m.type, btf.Typedef) and isinstance(m.type.type, btf.Int)
    assert m.bitfield_size == 4 and m.offset == 4
    assert m.type.type.encoding == 0
    assert _walk_all(spec) == len(spec) > 10000
    # cilium: TestTypesIterator finds iphdr.
    assert any(t.name == "iphdr" for t in spec)


def test_split_btf(vmlinux_testdata: btf.Spec) -> None:
    # cilium: TestLoadSplitSpecFromReader
    split = btf.Spec.from_raw((BTF_TESTDATA / "btf_testmod.btf").read_bytes(), vmlinux_testdata)
    fn = split.type_by_name("bpf_testmod_init")
    assert isinstance(fn, btf.Func)
    int_type = vmlinux_testdata.type_by_name("int")
    with pytest.raises(btf.TypeNotFoundError):
        split.type_by_name("int")
    assert fn.type.return_type is int_type
    assert split.type_id(fn) == fn.id >= split.first_id
    assert split.copy().type_by_name("bpf_testmod_init").id == fn.id
    _walk_all(split)
    btf.validate((BTF_TESTDATA / "btf_testmod.btf").read_bytes(), vmlinux_testdata)


def test_raw_and_elf_detection() -> None:
    raw = (BTF_TESTDATA / "btf_testmod.btf").read_bytes()
    assert raw[:2] in (b"\x9f\xeb", b"\xeb\x9f")
    spec = btf.load_spec(fixture_path("btf_types.o"))
    again = btf.load_spec(spec.raw)
    assert len(again) == len(spec)
    assert again.type_by_name("node") == spec.type_by_name("node")  # structural equality


def test_sizeof_alignof() -> None:
    # cilium: TestSizeof
    assert btf.sizeof(btf.Void()) == 0
    assert btf.sizeof(btf.Int("char", 1)) == 1
    assert btf.sizeof(btf.Enum("e", 8)) == 8
    assert btf.sizeof(btf.Array(btf.Pointer(btf.Void()), 0)) == 0
    assert btf.sizeof(btf.Array(btf.Enum("e", 4), 3)) == 12
    td = btf.Typedef("t", btf.Const(btf.Int("long", 8, btf.IntEncoding.SIGNED)))
    assert btf.sizeof(td) == 8 and btf.alignof(td) == 8
    assert btf.underlying(td) is td.type.type and td.resolve() is td.type.type
    with pytest.raises(TypeError):
        btf.sizeof(btf.FuncProto(btf.Void()))


# -- our fixture --------------------------------------------------------------

@pytest.fixture(scope="module", params=["btf_types.bpfel.o", "btf_types.bpfeb.o"])
def fixture_spec(request) -> btf.Spec:
    return btf.load_spec(fixture_path(request.param))


def test_fixture_kinds(fixture_spec: btf.Spec) -> None:
    kinds = {type(t) for t in fixture_spec}
    for cls in (btf.Int, btf.Pointer, btf.Array, btf.Struct, btf.Union, btf.Enum, btf.Typedef,
                btf.Volatile, btf.Const, btf.Func, btf.FuncProto, btf.Var, btf.Datasec, btf.Float):
        assert cls in kinds, cls
    node = fixture_spec.type_by_name("node")
    assert node.size == 160
    assert [m.name for m in node.members][:4] == ["next", "visit", "cv", "name"]
    assert node.members[0].type.target is node  # the cycle
    bits = fixture_spec.type_by_name("bits")
    assert [(m.name, m.offset, m.bitfield_size) for m in bits.members] == [
        ("a", 0, 3), ("b", 3, 5), ("c", 8, 7), ("d", 15, 17), ("col", 32, 4)]
    flags = fixture_spec.type_by_name("flags_t")
    assert isinstance(flags.type, btf.Typedef) and btf.underlying(flags).name == "unsigned int"
    assert str(flags) == "typedef u32_t flags_t"
    assert "struct node *next;" in str(node)
    assert str(fixture_spec.type_by_name("visit_fn")) == "typedef int (*visit_fn)(struct node *, void *)"
    data = fixture_spec.type_by_name(".data", btf.Datasec)
    assert data.size == 12
    assert {v.type.name: v.offset for v in data.vars} == {"counter": 0, "greeting": 4}
    assert fixture_spec.type_by_name("sgn").values[0].name == "NEG"
    assert repr(node).startswith("<Struct 'node'")
    assert node == node and hash(node) == hash(node)


def _parse_c_loosely(text: str) -> dict:
    """{("struct", name): [member names]} and typedef names from a C header."""
    out: dict = {}
    for m in re.finditer(r"^(struct|union|enum) (\w+) \{\n(.*?)^\}", text, re.S | re.M):
        body = m.group(3)
        if m.group(1) == "enum":
            names = re.findall(r"^\t(\w+) =", body, re.M)
        else:
            names = [n for n in re.findall(r"^\t[^\t].*?\(?\**(\w+)\)?(?:\[\d+\])*(?:\(.*\))?(?:: \d+)?;$",
                                           body, re.M) if n not in ("long",)]
        out[(m.group(1), m.group(2))] = names
    for m in re.finditer(r"^typedef .*?\(?\**(\w+)\)?(?:\[\d+\])*(?:\(.*\))?;$", text, re.M):
        out[("typedef", m.group(1))] = []
    return out


def test_format_c_matches_bpftool(tmp_path: Path) -> None:
    path = fixture_path("btf_types.o")
    ours = btf.load_spec(path).format_c()
    theirs = subprocess.run(["bpftool", "btf", "dump", "file", str(path), "format", "c"],
                            check=True, capture_output=True, text=True).stdout
    a, b = _parse_c_loosely(ours), _parse_c_loosely(theirs)
    assert set(a) == set(b)
    assert a == b
    header = tmp_path / "x.h"
    header.write_text(ours)
    src = tmp_path / "x.c"
    src.write_text('#include "x.h"\nstruct node n; struct value_t v;\n')
    subprocess.run(["clang", "-fsyntax-only", "-target", "bpf", str(src)], check=True)


def test_format_c_testdata_compiles(tmp_path: Path) -> None:
    for path in sorted(BTF_TESTDATA.glob("*-el.elf")):
        header = tmp_path / "x.h"
        header.write_text(btf.load_spec(path).format_c())
        src = tmp_path / "x.c"
        src.write_text('#include "x.h"\n')
        subprocess.run(["clang", "-fsyntax-only", "-target", "bpf", str(src)], check=True)


def test_lookup_errors(fixture_spec: btf.Spec) -> None:
    with pytest.raises(btf.TypeNotFoundError):
        fixture_spec.type_by_name("node", btf.Union)
    with pytest.raises(btf.TypeNotFoundError):
        fixture_spec.type_by_id(10_000)
    with pytest.raises(ValueError):
        fixture_spec.type_by_name("node", "nonsense")
    assert "node" in fixture_spec and "nope" not in fixture_spec


def test_kind_preference() -> None:
    # A struct and a function named alike: without kind, the struct wins.
    spec = btf.load_spec(fixture_path("btf_types.o"))
    assert isinstance(spec.type_by_name("prog"), btf.Func)
    assert isinstance(spec.type_by_name("node"), btf.Struct)


def test_btf_error_hierarchy() -> None:
    assert issubclass(btf.BTFError, InvalidObjectError)
    with pytest.raises(btf.BTFError):
        btf.Spec.from_raw(b"\x00" * 24)
    with pytest.raises(InvalidObjectError):
        btf.load_spec(b"\x7fELF" + b"\x00" * 100)


# -- kernel -------------------------------------------------------------------

KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")


@pytest.mark.skipif(not KERNEL_BTF.exists(), reason="no kernel BTF")
def test_kernel_spec() -> None:
    btf.flush_kernel_specs()
    t0 = time.perf_counter()
    spec = btf.load_kernel_spec()
    ts = spec.type_by_name("task_struct")
    elapsed = time.perf_counter() - t0
    assert isinstance(ts, btf.Struct)
    assert ts.member("pid").name == "pid"
    assert btf.load_kernel_spec() is spec
    assert elapsed < 1.0  # generous: the 50 ms target is measured by bench/btf.py
    assert spec.type_by_name("int").size == 4
    assert btf.codec_for(spec.type_by_name("iphdr")).size == 20


@pytest.mark.skipif(not KERNEL_BTF.exists(), reason="no kernel BTF")
def test_kernel_module_spec() -> None:
    mods = [p.name for p in KERNEL_BTF.parent.iterdir() if p.name != "vmlinux"]
    if not mods:
        pytest.skip("no kernel module BTF in /sys/kernel/btf")
    spec = btf.load_kernel_module_spec(mods[0])
    assert spec.base is btf.load_kernel_spec()
    for t in spec:
        repr(t)


def _split_on_running_kernel(base: btf.Spec) -> bytes:
    """Split BTF on top of ``base``: ``struct mod_thing { int x; struct task_struct *t; }``,
    the shape of /sys/kernel/btf/<module> (ids and string offsets continue the base's)."""
    import struct as st

    int_id = base.type_id(base.type_by_name("int", "int"))
    task_id = base.type_id(base.type_by_name("task_struct", "struct"))
    str_base = base._raw.str_end
    strings = b"mod_thing\0x\0t\0"
    name, x, t = str_base, str_base + 10, str_base + 12
    first = base._raw.end_id
    types = st.pack("<III", 0, 2 << 24, task_id)  # [first] PTR -> task_struct
    types += st.pack("<III", name, (4 << 24) | 2, 16)  # [first+1] STRUCT mod_thing
    types += st.pack("<III", x, int_id, 0) + st.pack("<III", t, first, 64)
    hdr = st.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


@pytest.mark.skipif(not KERNEL_BTF.exists(), reason="no kernel BTF")
def test_kernel_module_spec_split_on_vmlinux(tmp_path, monkeypatch) -> None:
    """load_kernel_module_spec reads /sys/kernel/btf/<module> as split BTF on
    the running kernel's: this host has no module BTF, so the test makes one."""
    from ebpf.btf import spec as spec_mod

    base = btf.load_kernel_spec()
    (tmp_path / "vmlinux").symlink_to(KERNEL_BTF)
    (tmp_path / "fake_mod").write_bytes(_split_on_running_kernel(base))
    monkeypatch.setattr(spec_mod, "KERNEL_BTF_DIR", str(tmp_path))
    btf.flush_kernel_specs()
    try:
        mod = btf.load_kernel_module_spec("fake_mod")
        assert mod.base is btf.load_kernel_spec()
        thing = mod.type_by_name("mod_thing")
        assert mod.type_id(thing) == mod.base._raw.end_id + 1
        assert thing.member("x").type.name == "int"
        target = thing.member("t").type.target
        assert (target.kind, target.name) == ("struct", "task_struct")
        assert target.member("pid") is not None  # a base type, fully usable
        assert "struct task_struct *t;" in str(thing)
        # A module header declares what it uses from vmlinux, defines its own.
        assert "struct task_struct;\n" in mod.format_c() and "struct mod_thing {" in mod.format_c()
        assert btf.codec_for(thing).size == 16
        assert btf.load_kernel_module_spec("fake_mod") is mod  # cached
        with pytest.raises(btf.TypeNotFoundError):
            btf.load_kernel_module_spec("no_such_module")
    finally:
        btf.flush_kernel_specs()
