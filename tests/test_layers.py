"""The middle layer as layers: reader, specs, section table, names, loader.

Specs are pure data that never reach up into the objects layer; one table of
section names serves the reader and ``ebpf.link.auto``; one loader serves
``Collection`` and ``Program``; what a spec keeps of its ELF is private.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import os
import subprocess
import sys

import pytest

import ebpf
from ebpf import sections
from ebpf.link.auto import section_hook
from ebpf.names import object_name, sanitize_name
from ebpf.spec import _decoded

from conftest import CILIUM_TESTDATA, FIXTURES, ROOT, fixture_path

kernel = pytest.mark.kernel

SPEC_LAYER = ["ebpf.spec", "ebpf.elf_reader", "ebpf.sections", "ebpf.names", "ebpf._linker", "ebpf._elf",
              "ebpf._validate"]
OBJECTS_LAYER = ["ebpf.maps", "ebpf.programs", "ebpf.collection", "ebpf._loader", "ebpf._fd", "ebpf.info",
                 "ebpf.features", "ebpf.link", "ebpf.ringbuf", "ebpf.perf"]


def _fresh(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_spec_layer_loads_nothing_of_the_objects_layer():
    """Importing the spec layer, reading an object and working with the spec
    (decoded instructions, variables, copies) loads no objects-layer module."""
    out = _fresh(f"""
import json, sys
for name in {SPEC_LAYER!r}:
    __import__(name)
import ebpf.elf_reader
spec = ebpf.elf_reader.load_collection_spec({str(fixture_path("subprog.o"))!r})
copy = spec.copy()
copy.programs["uses_loop"].instructions.encode()
copy.variables["factor"].set(9)
assert copy.variables["factor"].get() == 9 and spec.variables["factor"].get() == 3
print(json.dumps(sorted(sys.modules)))
""")
    loaded = set(json.loads(out))
    assert set(SPEC_LAYER) <= loaded
    assert not loaded & set(OBJECTS_LAYER), sorted(loaded & set(OBJECTS_LAYER))


def test_spec_module_is_data_only():
    """spec.py imports neither ctypes nor libbpf nor the objects layer."""
    out = _fresh("""
import json, sys
import ebpf.spec
print(json.dumps(sorted(sys.modules)))
""")
    loaded = set(json.loads(out))
    assert "ebpf._libbpf" not in loaded
    assert not loaded & set(OBJECTS_LAYER)
    tree = ast.parse((ROOT / "ebpf" / "spec.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "ctypes" not in imported and "_libbpf" not in imported
    assert not {m.rpartition(".")[2] for m in imported} & {m.rpartition(".")[2] for m in OBJECTS_LAYER}


def test_origin_is_private():
    """What a spec keeps of its ELF shows in no signature, field or repr."""
    spec = ebpf.load_collection_spec(fixture_path("subprog.o"))
    for cls in (ebpf.ProgramSpec, ebpf.CollectionSpec, ebpf.MapSpec):
        params = inspect.signature(cls).parameters
        assert not [p for p in params if p.startswith("_")], cls
        assert not [f.name for f in dataclasses.fields(cls) if f.name.startswith("_")], cls
    assert "_origin" not in repr(spec.programs["uses_loop"]) and "_elf" not in repr(spec)
    assert spec._origin is not None and spec.programs["uses_loop"]._origin is not None
    # A spec built by hand has none, and compares equal to nothing but its like.
    ps = ebpf.ProgramSpec("p", ebpf.ProgramType.SOCKET_FILTER)
    assert ps._origin is None and ps == ebpf.ProgramSpec("p", ebpf.ProgramType.SOCKET_FILTER)


# --------------------------------------------------------------------------
# Names


def test_sanitize_name_like_cilium():
    assert sanitize_name("my-map:v2") == "my_map_v2"
    assert sanitize_name("my-map:v2", replacement=None) == "mymapv2"
    assert sanitize_name("a b", "") == "ab"
    assert sanitize_name("ünïcode.ok_09") == "_n_code.ok_09"
    assert sanitize_name("ünïcode", None) == "ncode"
    long = "x" * 40
    assert sanitize_name(long) == long  # length is left alone
    assert object_name(long) == "x" * 15 and object_name("a-b") == "a_b"
    assert ebpf.sanitize_name is sanitize_name
    with pytest.raises(TypeError):
        sanitize_name("x", replacement=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sanitize_name(b"x")  # type: ignore[arg-type]


@kernel
def test_sanitized_names_reach_the_kernel():
    insns = ebpf.asm.Instructions([ebpf.asm.mov_imm(ebpf.asm.R0, 0), ebpf.asm.exit()])
    spec = ebpf.ProgramSpec("bad-name:and_far_too_long", ebpf.ProgramType.SOCKET_FILTER, instructions=insns,
                            license="GPL")
    with ebpf.Program(spec) as p:
        assert p.info().name == "bad_name_and_fa"
    with ebpf.Map(ebpf.MapSpec("m-1", ebpf.MapType.ARRAY, 4, 4, 1)) as m:
        assert m.info().name == "m_1"


# --------------------------------------------------------------------------
# One table of section names


@pytest.mark.parametrize("section,target", [
    ("tracepoint/syscalls/sys_enter_read", "syscalls/sys_enter_read"),
    ("kprobe/do_sys_open", "do_sys_open"),
    ("uprobe.s//bin/bash:readline", "/bin/bash:readline"),
    ("struct_ops/init", "init"),
    ("freplace/func", "func"),
    ("socket/tail", ""),  # a label, not a hook
    ("xdp", ""),
    ("kprobe", ""),
    ("kprobe/", ""),
    ("netfilter", ""),
])
def test_attach_to(section, target):
    assert sections.attach_to(section) == target


def test_newer_sections_have_types():
    assert sections.newer_section_types("tcx/ingress") == (ebpf.ProgramType.SCHED_CLS, ebpf.AttachType.TCX_INGRESS)
    assert sections.newer_section_types("netfilter") == (ebpf.ProgramType.NETFILTER, ebpf.AttachType.NETFILTER)
    assert sections.newer_section_types("xdp") is None
    spec = ebpf.load_collection_spec(fixture_path("newer_sections.o"))
    types = {p.section_name: (p.type, p.attach_type) for p in spec.programs.values()}
    for name, want in types.items():
        got = sections.newer_section_types(name)
        if got is not None:
            assert want == got


def test_reader_and_auto_attach_share_the_table():
    """Every section whose hook the reader records (attach_to) is one the
    auto-attacher knows, and no section without a hook is auto-attached."""
    examples = {
        sections.Hook.TRACEPOINT: "g/n", sections.Hook.RAW_TRACEPOINT: "n", sections.Hook.TRACING: "f",
        sections.Hook.ITER: "task", sections.Hook.KPROBE: "f", sections.Hook.KRETPROBE: "f",
        sections.Hook.KSYSCALL: "getpid", sections.Hook.KRETSYSCALL: "getpid",
        sections.Hook.KPROBE_MULTI: "f", sections.Hook.KRETPROBE_MULTI: "f",
        sections.Hook.UPROBE: "/bin/true:main", sections.Hook.URETPROBE: "/bin/true:main",
        sections.Hook.USDT: "/bin/true:p:n",
    }
    for row in sections.SECTIONS:
        if not row.name.endswith("/"):
            assert section_hook(row.name) is None
            continue
        if row.hook in examples:
            section = row.name + examples[row.hook]
            assert sections.attach_to(section) == examples[row.hook]
            assert callable(section_hook(section)), section
        else:  # a target the caller provides: another program, a cgroup, an ops table
            assert section_hook(row.name + "x") is None, row
    assert section_hook("socket/x") is None and sections.attach_to("socket/x") == ""


# --------------------------------------------------------------------------
# The reader


def _objects():
    paths = sorted(FIXTURES.glob("*.o"))
    if CILIUM_TESTDATA.exists():
        paths += sorted((CILIUM_TESTDATA / "testdata").glob("*-el.elf"))
    out = []
    for p in paths:
        try:
            out.append((p.name, ebpf.load_collection_spec(p)))
        except ebpf.EBPFError:
            continue  # other byte order, or refused (tested elsewhere)
    return out


def test_references_match_the_decoded_instructions():
    """The reader learns which maps a program uses from the relocations
    alone; decoding the linked instructions must agree."""
    checked = 0
    for name, spec in _objects():
        for pname, ps in spec.programs.items():
            want = tuple(sorted(ps.instructions.map_references()))
            assert spec._origin.references[pname] == want, (name, pname)
            checked += 1
    assert checked > 50


def test_instructions_decode_on_first_use_only():
    spec = ebpf.load_collection_spec(fixture_path("subprog.o"))
    ps = spec.programs["uses_subprogs"]
    copy = ps.copy()
    assert not _decoded(ps) and not _decoded(copy)
    insns = ps.instructions
    assert _decoded(ps) and not _decoded(copy)
    assert ps.instructions is insns  # decoded once
    assert copy.instructions == insns and copy.instructions is not insns
    insns.insert(0, ebpf.asm.mov_imm(ebpf.asm.R0, 0))
    assert len(copy.instructions) == len(insns) - 1  # copies stay apart
    assert ps != copy


def test_reading_again_gives_an_equal_independent_spec():
    """The reader hands out copies of what it read before: edits to one
    spec never show in the next read, which equals a fresh parse."""
    from ebpf import elf_reader

    path = fixture_path("subprog.o")
    first = ebpf.load_collection_spec(path)
    first.variables["factor"].set(9)
    first.maps["results"].max_entries = 99
    first.programs["uses_loop"].instructions.insert(0, ebpf.asm.mov_imm(ebpf.asm.R0, 0))
    again = ebpf.load_collection_spec(path)
    assert again.variables["factor"].get() == 3 and again.maps["results"].max_entries == 4
    assert again != first
    # Types belong to one read (classes bind to type objects), equal across reads.
    assert again.types is not first.types
    k1, k2 = first.maps["results"].key, again.maps["results"].key
    assert k1 is not k2 and (k1.name, k1.id) == (k2.name, k2.id)
    assert again.variables["factor"].type is not first.variables["factor"].type
    assert again.types.type_by_id(k2.id) is k2
    elf_reader._templates.clear()
    fresh = ebpf.load_collection_spec(path)
    assert fresh == again and fresh.types is not None
    core = ebpf.load_collection_spec(fixture_path("core_read.o"))
    assert core.programs["read_tgid"]._origin.collection is core  # not the reader's template


@kernel
def test_loading_unchanged_programs_decodes_nothing():
    spec = ebpf.load_collection_spec(fixture_path("subprog.o"))
    with ebpf.Collection(spec) as coll:
        assert coll.programs["uses_subprogs"].run(bytes(20)).retval == 6 * 3 + 5
    assert not any(_decoded(p) for p in spec.programs.values())


@kernel
def test_loaded_maps_are_what_the_kernel_has():
    """The loader reuses libbpf's definitions as read where nothing changed;
    every map's recorded spec must still be what the kernel created."""
    for fixture in ("core.o", "subprog.o", "ringbuf.o", "perfbuf.o", "btf_values.o"):
        spec = ebpf.load_collection_spec(fixture_path(fixture))
        spec.maps.pop("pinned_map", None)
        spec.programs.pop("tp_getpid", None)  # needs pinned_map
        with ebpf.Collection(spec) as coll:
            for key, m in coll.maps.items():
                info = m.info()
                assert (m.type, m.key_size, m.value_size, m.max_entries) == (
                    info.type, info.key_size, info.value_size, info.max_entries), (fixture, key)


# --------------------------------------------------------------------------
# The loader


@kernel
def test_core_program_alone_builds_no_collection(monkeypatch):
    """A CO-RE program loaded alone goes through libbpf, not through a
    whole Collection."""
    import ebpf.collection

    def no_collection(*args, **kwargs):
        raise AssertionError("a Collection was built")

    monkeypatch.setattr(ebpf.collection.Collection, "__init__", no_collection)
    spec = ebpf.load_collection_spec(fixture_path("core_read.o"))
    assert spec.programs["read_tgid"]._origin.collection is spec
    bss = ebpf.Map(spec.maps[".bss"])
    try:
        with ebpf.Program(spec.programs["read_tgid"], maps={".bss": bss}) as prog:
            assert prog.run().retval == 0
        assert bss.lookup(0).seen_tgid == os.getpid()
    finally:
        bss.close()


@kernel
def test_program_kernel_types():
    """Program(kernel_types=...) relocates against the BTF given."""
    spec = ebpf.load_collection_spec(fixture_path("core_read.o"))
    bss = ebpf.Map(spec.maps[".bss"])
    try:
        with ebpf.Program(spec.programs["read_tgid"], maps={".bss": bss},
                          kernel_types="/sys/kernel/btf/vmlinux") as prog:
            assert prog.run().retval == 0
        assert bss.lookup(0).seen_pid == os.getpid()
    finally:
        bss.close()
    with pytest.raises(TypeError):
        ebpf.Program(spec.programs["read_tgid"], kernel_types=3.5)


@kernel
def test_one_decoder_for_both_paths():
    """The same verifier rejection reads the same through a Collection
    (libbpf) and through Program (bpf_prog_load)."""
    spec = ebpf.load_collection_spec(fixture_path("verifier.o"))
    with pytest.raises(ebpf.VerifierError) as via_object:
        ebpf.Collection(spec)
    bad = via_object.value.program
    assert bad is not None and via_object.value.log
    maps = {n: ebpf.Map(spec.maps[n]) for n in spec._origin.references[bad]}
    try:
        with pytest.raises(ebpf.VerifierError) as alone:
            ebpf.Program(spec.programs[bad], maps=maps)
    finally:
        for m in maps.values():
            m.close()
    assert alone.value.program == bad
    assert str(alone.value).splitlines()[0] == str(via_object.value).splitlines()[0]
