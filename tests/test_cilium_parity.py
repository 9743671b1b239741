"""Parity with cilium/ebpf 0.9.1 on its own test objects.

cilium's testdata/ and btf/testdata/ objects (installed by Debian's
golang-github-cilium-ebpf-dev) are read with ``ebpf.load_collection_spec``
and compared with what cilium's Go tests expect (see tests/cilium_expect.py
for the translated expectations and every documented libbpf-vs-cilium
difference).

1. objects libbpf 1.1.2 opens read to cilium's spec (libbpf's answer where it
   legitimately differs);
2. those that load, load and run as cilium's tests assert (kernel tests);
3. objects libbpf 1.1.2 cannot open fail with a typed, informative error.

Cases marked ``xfail(strict=True)`` are library bugs, reported to the lead.
"""

from __future__ import annotations

import errno
import re
import struct
import typing

import pytest

import ebpf
import ebpf.btf as btf
from ebpf import MapType, ProgramType
from ebpf.errors import EBPFError, InvalidObjectError, KeyNotExistError, NotSupportedError, VerifierError

from cilium_expect import (
    BIG_ENDIAN_OBJECTS,
    CILIUM,
    CILIUM_ATTACH_TO,
    LIBBPF_DIFFERENCES,
    LIBBPF_OPENS_CILIUM_REFUSES,
    LIBBPF_REJECTS,
    LITTLE_ENDIAN_OBJECTS,
    LOADER,
    LOADER_VARIANTS,
    path,
)

kernel = pytest.mark.kernel

_SPECS: dict = {}


def spec_of(obj: str) -> ebpf.CollectionSpec:
    """A fresh copy of the (cached) spec of ``obj``."""
    if obj not in _SPECS:
        _SPECS[obj] = ebpf.load_collection_spec(path(obj))
    return _SPECS[obj].copy()


def bug(reason: str):
    return pytest.mark.xfail(strict=True, reason="library bug: " + reason)


def load_one(spec: ebpf.CollectionSpec, prog: str, **options) -> ebpf.Program:
    """cilium's ``LoadAndAssign(&struct{ P *Program `ebpf:"prog"` })``."""
    objs = type("Objs", (), {"__annotations__": {"p": typing.Annotated[ebpf.Program, prog]}})
    return spec.load_and_assign(objs, **options).p


def _possible_cpus() -> int:
    n = 0
    with open("/sys/devices/system/cpu/possible") as f:
        for part in f.read().strip().split(","):
            lo, _, hi = part.partition("-")
            n += int(hi or lo) - int(lo) + 1
    return n


def _actual_map(ms: ebpf.MapSpec) -> dict:
    inner = None
    if ms.inner_map is not None:
        inner = (ms.inner_map.name, _actual_map(ms.inner_map))
    return {
        "type": ms.type,
        "key_size": ms.key_size,
        "value_size": ms.value_size,
        "max_entries": ms.max_entries,
        "flags": ms.flags,
        "pinning": ms.pinning,
        "inner_map": inner,
        "contents": list(ms.contents),
    }


def _actual_prog(ps: ebpf.ProgramSpec) -> dict:
    return {"type": ps.type, "attach_type": ps.attach_type, "section_name": ps.section_name, "license": ps.license}


def _expected(obj: str, kind: str, name: str) -> dict:
    want = dict(CILIUM[obj][kind][name])
    for (o, k, n, fld), (value, _reason) in LIBBPF_DIFFERENCES.items():
        if (o, k, n) == (obj, kind, name):
            want[fld] = value
    return want


def _diff(want: dict, have: dict) -> str:
    return "; ".join(f"{k}: want {want[k]!r}, got {have.get(k)!r}" for k in want if want[k] != have.get(k))


def _entities():
    for obj, exp in sorted(CILIUM.items()):
        for kind in ("maps", "programs"):
            for name in sorted(exp[kind]):
                yield pytest.param(obj, kind, name, id=f"{obj}-{name}")


# --------------------------------------------------------------------------
# Coverage of the expectation tables


def test_every_object_is_classified():
    """Every -el object is either opened (CILIUM), rejected (LIBBPF_REJECTS) or
    invalid_btf_map_init (see test_invalid_btf_map_init_refused)."""
    classified = set(CILIUM) | set(LIBBPF_REJECTS) | {"invalid_btf_map_init-el.elf"}
    assert set(LITTLE_ENDIAN_OBJECTS) == classified
    assert {f.replace("-eb.elf", "-el.elf") for f in BIG_ENDIAN_OBJECTS} == set(LITTLE_ENDIAN_OBJECTS)


# --------------------------------------------------------------------------
# 1. Specs of the objects libbpf 1.1.2 opens


@pytest.mark.parametrize("obj", sorted(CILIUM))
def test_spec_names(obj):
    """The set of maps and programs; data sections are compared separately
    because cilium's TestLoadCollectionSpec ignores .bss/.data/.rodata*."""
    spec = spec_of(obj)
    maps = {n for n, m in spec.maps.items() if not m.is_data_section}
    assert maps == set(CILIUM[obj]["maps"])
    assert set(spec.programs) == set(CILIUM[obj]["programs"])
    for name, ps in spec.programs.items():
        assert ps.name == name
    for name, ms in spec.maps.items():
        assert ms.name == name


@pytest.mark.parametrize("obj,kind,name", list(_entities()))
def test_spec_matches_cilium(obj, kind, name):
    spec = spec_of(obj)
    if kind == "maps":
        have = _actual_map(spec.maps[name])
    else:
        have = _actual_prog(spec.programs[name])
    want = _expected(obj, kind, name)
    assert have == want, _diff(want, have)


def _attach_to_params():
    for (obj, name), want in sorted(CILIUM_ATTACH_TO.items()):
        yield pytest.param(obj, name, want, id=f"{obj}-{name}")


@pytest.mark.parametrize("obj,name,want", list(_attach_to_params()))
def test_attach_to_matches_cilium(obj, name, want):
    assert spec_of(obj).programs[name].attach_to == want


@pytest.mark.parametrize("obj", ["raw_tracepoint-el.elf", "btf_map_init-el.elf"])
def test_kernel_version_is_zero_without_version_section(obj):
    spec = spec_of(obj)
    assert {p.kernel_version for p in spec.programs.values()} == {0}


def test_spec_reads_equal():
    """Two reads give equal specs (DESIGN: reading the same ELF anywhere yields
    an equal spec)."""
    a = ebpf.load_collection_spec(path("btf_map_init-el.elf"))
    with open(path("btf_map_init-el.elf"), "rb") as f:
        b = ebpf.load_collection_spec(f.read())
    assert a.maps == b.maps
    assert a.programs == b.programs


def test_btf_map_init_contents():
    """TestLoadInitializedBTFMap: one entry each, key 1, value the NAME."""
    spec = spec_of("btf_map_init-el.elf")
    (k, v), = spec.maps["prog_array_init"].contents
    assert (k, v) == (1, "tail_1") and isinstance(v, str)
    (k, v), = spec.maps["outer_map_init"].contents
    assert (k, v) == (1, "inner_map") and isinstance(v, str)


def test_map_key_value_btf():
    """Maps with __type() carry BTF key/value types (cilium ignores Key/Value
    in its comparison, but they must be there for typed values)."""
    ms = spec_of("map_spin_lock-el.elf").maps["spin_lock_map"]
    assert ms.key is not None and ms.value is not None
    assert btf.sizeof(ms.value) == 8
    assert [m.name for m in ms.value.members] == ["cnt", "lock"]


def test_strings_section_opens():
    """TestStringSection: cilium 0.9.1 refuses string sections; libbpf 1.1.2
    turns .rodata.str1.1 into a data map (documented difference)."""
    assert "strings-el.elf" in LIBBPF_OPENS_CILIUM_REFUSES
    spec = spec_of("strings-el.elf")
    ms = spec.maps[".rodata.str1.1"]
    assert ms.type == MapType.ARRAY and ms.max_entries == 1 and ms.is_data_section
    (_, image), = ms.contents
    assert b"This string is allocated in the string section\n\0" in image
    assert b"This one too\n\0" in image


def test_relocs_read_tgt_bss():
    """The CO-RE target object holds only BTF and its .bss (libbpf marks data
    sections BPF_F_MMAPABLE; cilium 0.9.1 ignores them in comparisons)."""
    spec = spec_of("relocs_read_tgt-el.elf")
    bss = spec.maps[".bss"]
    assert (bss.type, bss.key_size, bss.max_entries) == (MapType.ARRAY, 4, 1)
    assert bss.flags & (1 << 10)  # BPF_F_MMAPABLE
    assert set(spec.variables) == {"unused_s", "unused_bits"}


def test_invalid_btf_map_init_refused():
    """TestLoadInvalidInitializedBTFMap."""
    with pytest.raises(NotSupportedError, match="initialised"):
        ebpf.load_collection_spec(path("invalid_btf_map_init-el.elf"))


@pytest.mark.parametrize("obj", LOADER_VARIANTS)
def test_loader_spec(obj):
    """TestLoadCollectionSpec.  libbpf 1.1.2 cannot open any loader variant
    (see LIBBPF_REJECTS and test_libbpf_rejects); the cilium expectation is
    kept so the test runs if the library ever reads these objects."""
    try:
        spec = ebpf.load_collection_spec(path(obj))
    except (InvalidObjectError, NotSupportedError) as exc:
        pytest.skip(f"libbpf 1.1.2 cannot open {obj}: {LIBBPF_REJECTS[obj][1]} ({exc})")
    has_btf = spec.types is not None
    want_maps = {n for n in LOADER["maps"] if has_btf or not n.startswith("btf_")}
    assert {n for n, m in spec.maps.items() if not m.is_data_section} == want_maps
    assert set(spec.programs) == set(LOADER["programs"])
    ncpu = _possible_cpus()
    for n in want_maps:
        want = dict(LOADER["maps"][n])
        if want["max_entries"] == "possible_cpus":
            want["max_entries"] = ncpu
        assert _actual_map(spec.maps[n]) == want, n
    for n, want in LOADER["programs"].items():
        assert _actual_prog(spec.programs[n]) == want, n


# --------------------------------------------------------------------------
# BTF of the objects (btf/btf_test.go), read by the pure-Python BTF parser:
# this works for both byte orders and for objects libbpf cannot open.


@pytest.mark.parametrize(
    "obj", ["loader-el.elf", "loader-eb.elf", "loader-clang-14-el.elf", "loader-clang-14-eb.elf"]
)
def test_btf_load_spec_from_elf(obj):
    """TestLoadSpecFromElf (cilium globs loader-e*.elf; clang 14 added as a
    variant.  Not clang 9: it encodes every BTF func with static linkage, and
    clang 7 emits no BTF at all)."""
    spec = btf.load_spec(path(obj))
    assert isinstance(spec.type_by_id(0), btf.Void)
    assert isinstance(spec.type_by_name("bpf_map_def"), btf.Struct)
    fn = spec.type_by_name("global_fn")
    assert isinstance(fn, btf.Func) and fn.linkage == btf.FuncLinkage.GLOBAL
    v = spec.type_by_name("key3")
    assert isinstance(v, btf.Var) and v.linkage == btf.VarLinkage.GLOBAL
    with pytest.raises(btf.TypeNotFoundError):
        spec.type_by_name("totally_bogus_type")
    assert spec.byte_order == ("big" if obj.endswith("-eb.elf") else "little")


def test_btf_clang7_has_no_btf():
    with pytest.raises(InvalidObjectError, match="BTF"):
        btf.load_spec(path("loader-clang-7-el.elf"))


@pytest.mark.parametrize("obj", ["relocs-el.elf", "relocs-eb.elf"])
def test_btf_ambiguous_names(obj):
    """TestAnyTypesByName / TestTypeByNameAmbiguous."""
    spec = btf.load_spec(path(obj))
    for name in ("ambiguous", "ambiguous___flavour"):
        types = spec.types_by_name(name)
        assert len(types) == 1 and types[0].name == name
        assert spec.type_by_name(name).name == name


# --------------------------------------------------------------------------
# 2. Loading and running (cilium's kernel tests)


def _as_socket_filters(spec: ebpf.CollectionSpec) -> ebpf.CollectionSpec:
    # libbpf 1.x leaves SEC("socket/...") and SEC("socket_filter/...") UNSPEC
    # (LIBBPF_DIFFERENCES); cilium reads them as socket filters.  A spec is a
    # blueprint, so set the type cilium would have inferred.
    for p in spec.programs.values():
        if p.type == ProgramType.UNSPEC:
            p.type = ProgramType.SOCKET_FILTER
    return spec


@kernel
def test_btf_map_init_unspec_section_refused_clearly():
    """Without the type fix libbpf refuses 'socket/tail'; the error names it."""
    with pytest.raises(EBPFError, match=r"socket/tail|tail_1"):
        ebpf.Collection(spec_of("btf_map_init-el.elf"))


@kernel
def test_tail_call():
    """TestTailCall: tail_main tail-calls tail_1 through prog_array_init → 42."""
    spec = _as_socket_filters(spec_of("btf_map_init-el.elf"))

    class Objs:
        tail_main: ebpf.Program
        prog_array_init: ebpf.Map

    objs = spec.load_and_assign(Objs)
    try:
        assert objs.tail_main.run(bytes(14)).retval == 42
    finally:
        objs.tail_main.close()
        objs.prog_array_init.close()


@kernel
def test_btf_map_init_loaded_contents():
    """The initialised slots are filled at load: [1] = tail_1 / inner_map,
    [0] stays empty."""
    spec = _as_socket_filters(spec_of("btf_map_init-el.elf"))
    with ebpf.Collection(spec) as coll:
        pa = dict(coll.maps["prog_array_init"].items())
        assert len(pa) == 1
        (k, prog), = pa.items()
        assert int.from_bytes(bytes(k), "little") == 1
        assert isinstance(prog, ebpf.Program) and prog.info().id == coll.programs["tail_1"].info().id
        om = dict(coll.maps["outer_map_init"].items())
        assert len(om) == 1
        (k, inner), = om.items()
        assert int.from_bytes(bytes(k), "little") == 1
        assert isinstance(inner, ebpf.Map) and inner.info().id == coll.maps["inner_map"].info().id


@kernel
def test_unassigned_prog_array_refused():
    spec = _as_socket_filters(spec_of("btf_map_init-el.elf"))

    class Objs:
        tail_main: ebpf.Program

    objs = None
    try:
        with pytest.raises(EBPFError):
            objs = spec.load_and_assign(Objs)
    finally:
        if objs is not None:
            objs.tail_main.close()


@kernel
def test_map_with_lock():
    """TestMapWithLock: update/lookup with BPF_F_LOCK on a spin-lock value."""
    with ebpf.Collection(spec_of("map_spin_lock-el.elf")) as coll:
        m = coll.maps["spin_lock_map"]
        m.update(1, struct.pack("<II", 5, 0), flags=ebpf.UpdateFlags.LOCK)
        assert m.lookup(1, flags=ebpf.UpdateFlags.LOCK).cnt == 5
        # cilium uses LookupAndDeleteWithFlags(LookupLock); Map.lookup_and_delete
        # takes no flags, so this is the plain variant.
        assert m.lookup_and_delete(1).cnt == 5
        with pytest.raises(KeyNotExistError):
            m.lookup(1)
        # Natural values encode through BTF too.
        m.update(0, {"cnt": 7, "lock": {"val": 0}}, flags=ebpf.UpdateFlags.LOCK)
        assert m.lookup(0).cnt == 7


@kernel
def test_batch_map_with_lock():
    """TestBatchMapWithLock (cilium passes ElemFlags=LookupLock to the batch
    lookups; batch_lookup here takes no flags)."""
    with ebpf.Collection(spec_of("map_spin_lock-el.elf")) as coll:
        m = coll.maps["spin_lock_map"]
        values = [struct.pack("<II", 42, 0), struct.pack("<II", 4242, 0)]
        assert m.batch_update([0, 1], values, flags=ebpf.UpdateFlags.LOCK) == 2
        items, _ = m.batch_lookup()
        assert sorted((k, v.cnt) for k, v in items) == [(0, 42), (1, 4242)]
        items, _ = m.batch_lookup_and_delete()
        assert len(items) == 2
        assert list(m.keys()) == []


@kernel
def test_load_raw_tracepoint():
    """TestLoadRawTracepoint: the collection loads with LogLevel 1."""
    with ebpf.Collection(spec_of("raw_tracepoint-el.elf"), log_level=1) as coll:
        prog = coll.programs["sched_process_exec"]
        assert prog.type == ProgramType.RAW_TRACEPOINT
        assert prog.verifier_log.strip()


@kernel
def test_strings_verifier_refuses_gpl_helper():
    """strings.c is licensed MIT and calls bpf_trace_printk (GPL only): the
    verifier refuses it, with the reason in the error."""
    with pytest.raises(VerifierError) as ei:
        ebpf.Collection(spec_of("strings-el.elf"))
    assert "GPL" in str(ei.value)
    assert any("GPL" in line for line in ei.value.log)


@kernel
def test_freplace_target_in_collection():
    """The freplace target (it calls a bpf-to-bpf subprogram) loads in a
    collection."""

    class Objs:
        sched_process_exec: ebpf.Program

    objs = spec_of("freplace-el.elf").load_and_assign(Objs)
    try:
        assert objs.sched_process_exec.type == ProgramType.RAW_TRACEPOINT
    finally:
        objs.sched_process_exec.close()


@kernel
def test_freplace_target_standalone():
    """cilium's TestFreplace loads the target with NewProgram: the spec's
    instructions carry the subprogram it calls."""
    ps = spec_of("freplace-el.elf").programs["sched_process_exec"]
    assert "subprog" in ps.instructions.symbols()
    with ebpf.Program(ps) as prog:
        assert prog.type == ProgramType.RAW_TRACEPOINT


@kernel
def test_freplace_without_target_refused():
    """An EXT program needs a target program; without one the load fails with
    an error that names the program.  (With a target, ProgramSpec.attach_target
    as cilium's AttachTarget: tests/test_attach_target.py.)"""
    with pytest.raises(EBPFError, match="replacement"):
        ebpf.Collection(spec_of("freplace-el.elf"))


_RELOCS = sorted(CILIUM["relocs-el.elf"]["programs"])


@kernel
@pytest.mark.parametrize("name", _RELOCS)
def test_core_relocation_load(name):
    """TestCORERelocationLoad: relocate against the object's own BTF; err_*
    programs must fail, the others return 0."""
    spec = _as_socket_filters(spec_of("relocs-el.elf"))
    kt = path("relocs-el.elf")
    if name.startswith("err_"):
        with pytest.raises(EBPFError, match=r"relocat"):
            load_one(spec, name, kernel_types=kt)
        return
    prog = load_one(spec, name, kernel_types=kt)
    try:
        assert prog.run(bytes(14)).retval == 0
    finally:
        prog.close()


@kernel
def test_core_relocation_read():
    """TestCORERelocationRead: relocate against relocs_read_tgt's BTF."""
    prog = load_one(spec_of("relocs_read-el.elf"), "reads", kernel_types=path("relocs_read_tgt-el.elf"))
    try:
        assert prog.run(bytes(14)).retval == 0
    finally:
        prog.close()


# --------------------------------------------------------------------------
# 3. Objects libbpf 1.1.2 cannot open


@pytest.mark.parametrize("obj", BIG_ENDIAN_OBJECTS)
def test_big_endian_not_supported(obj):
    with pytest.raises(NotSupportedError) as ei:
        ebpf.load_collection_spec(path(obj))
    e = ei.value
    assert e.min_libbpf == "1.5"
    assert e.errno == errno.EOPNOTSUPP
    msg = str(e)
    assert "big-endian" in msg and "libbpf 1.5" in msg
    assert re.search(r"installed libbpf is v?1\.1", msg), msg


@pytest.mark.parametrize("obj", sorted(LIBBPF_REJECTS))
def test_libbpf_rejects_typed(obj):
    """A typed error (malformed for libbpf / not supported by it), never a
    bare EBPFError or OSError, carrying libbpf's errno."""
    with pytest.raises(EBPFError) as ei:
        ebpf.load_collection_spec(path(obj))
    assert isinstance(ei.value, (InvalidObjectError, NotSupportedError)), type(ei.value)
    assert ei.value.errno in (errno.EOPNOTSUPP, errno.ENOENT, errno.EINVAL)


def _reject_message_params():
    for obj in sorted(LIBBPF_REJECTS):
        yield pytest.param(obj, id=obj)


@pytest.mark.parametrize("obj", list(_reject_message_params()))
def test_libbpf_rejects_informative(obj):
    """The message says why libbpf refused the object."""
    pattern = LIBBPF_REJECTS[obj][0]
    with pytest.raises(EBPFError) as ei:
        ebpf.load_collection_spec(path(obj))
    assert re.search(pattern, str(ei.value)), str(ei.value)
