"""The one BTF validator: ebpf.btf.validate, load_spec and the ELF pre-flight
check (ebpf._validate.check_btf) give the same verdict, accept every real
object, and refuse what crashes or hangs libbpf 1.1.2 or our own walkers."""

from __future__ import annotations

import gzip
import random
import struct
import sys
from pathlib import Path
from typing import Callable, Dict

import pytest
from btftest import CONST, FWD, TYPEDEF, VOLATILE, RawBuilder

import ebpf.btf as btf
from ebpf import _elf
from ebpf._validate import check_btf
from ebpf.errors import InvalidObjectError

from conftest import CILIUM_TESTDATA, ROOT, fixture_path

sys.path.insert(0, str(ROOT / "scripts"))
import fuzz


def _both_reject(blob: bytes, match: str = "") -> None:
    with pytest.raises(btf.BTFError, match=match):
        btf.validate(blob)
    with pytest.raises(btf.BTFError):
        btf.load_spec(blob)
    with pytest.raises(InvalidObjectError):
        check_btf(blob)


def _both_accept(blob: bytes) -> btf.Spec:
    btf.validate(blob)
    check_btf(blob)
    return btf.load_spec(blob)


# -- reference loops -----------------------------------------------------------


def _self_pointer() -> bytes:
    b = RawBuilder()
    p = b.ptr(0)
    b.patch(p, type=p)
    b.var("x", p)
    return b.blob()


def _pointer_ring() -> bytes:
    b = RawBuilder()
    p1 = b.ptr(0)
    p2 = b.ptr(p1)
    c = b.ref(CONST, p2)
    b.patch(p1, type=c)
    return b.blob()


def _typedef_self() -> bytes:
    b = RawBuilder()
    t = b.ref(TYPEDEF, 0, "t")
    b.patch(t, type=t)
    return b.blob()


def _qualifier_ring() -> bytes:
    b = RawBuilder()
    c = b.ref(CONST, 0)
    v = b.ref(VOLATILE, c)
    b.patch(c, type=v)
    return b.blob()


def _function_pointer_returning_itself() -> bytes:
    b = RawBuilder()
    p = b.ptr(0)
    proto = b.proto(p, [])
    b.patch(p, type=proto)
    return b.blob()


def _struct_holding_itself() -> bytes:
    b = RawBuilder()
    i = b.int("int", 4, signed=True)
    arr = b.array(0, i, 1)
    s = b.struct("s", 4, [("a", arr, 0)])
    b.records[arr - 1][3] = s  # the array's element: [name, info, 0, elem, index, n]
    return b.blob()


def _two_structs_holding_each_other() -> bytes:
    b = RawBuilder()
    a = b.struct("a", 4, [("b", 0, 0)])
    bb = b.struct("b", 4, [("a", a, 0)])
    b.records[a - 1][4] = bb  # member 0's type
    return b.blob()


def _anonymous_struct_pointing_to_itself() -> bytes:
    b = RawBuilder()
    s = b.struct("", 8, [("next", 0, 0)])
    b.records[s - 1][4] = b.ptr(s)
    return b.blob()


LOOPS: Dict[str, Callable[[], bytes]] = {
    "anonymous struct pointing to itself": _anonymous_struct_pointing_to_itself,
    "pointer to itself": _self_pointer,
    "pointer ring": _pointer_ring,
    "typedef of itself": _typedef_self,
    "qualifier ring": _qualifier_ring,
    "function pointer returning itself": _function_pointer_returning_itself,
    "struct holding itself": _struct_holding_itself,
    "structs holding each other": _two_structs_holding_each_other,
}


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_loops_without_a_struct_are_refused_by_every_entry_point(name: str) -> None:
    # The pointer to itself used to pass btf.validate and fail check_btf.
    _both_reject(LOOPS[name](), "loop|itself")


def test_a_cycle_through_a_struct_is_fine() -> None:
    b = RawBuilder()
    s = b.struct("list_head", 16, [("next", 0, 0), ("prev", 0, 64)])
    p = b.ptr(s)
    b.records[s - 1][4] = p
    b.records[s - 1][7] = p
    spec = _both_accept(b.blob())
    head = spec.type_by_name("list_head")
    assert isinstance(head, btf.Struct)
    assert head.members[0].type.target is head
    assert str(head) == "struct list_head {\n\tstruct list_head *next;\n\tstruct list_head *prev;\n}"


# -- typeless ksyms -------------------------------------------------------------


def test_var_of_void_and_const_void_are_typeless_ksyms() -> None:
    b = RawBuilder()
    cv = b.ref(CONST, 0)
    v1 = b.var("a", 0, linkage=2)
    v2 = b.var("b", cv, linkage=2)
    b.datasec(".ksyms", 0, [(v1, 0, 1), (v2, 0, 1)])
    spec = _both_accept(b.blob())
    a, bvar = spec.type_by_name("a"), spec.type_by_name("b")
    assert isinstance(a, btf.Var) and isinstance(a.type, btf.Void)
    assert isinstance(bvar, btf.Var) and isinstance(bvar.type, btf.Const)
    assert str(a) == "extern void a" and str(bvar) == "extern const void b"


def test_typeless_ksym_fixture_loads() -> None:
    spec = btf.load_spec(fixture_path("btf_ksym.o"))
    v = spec.type_by_name("__start_ro_after_init", btf.Var)
    assert isinstance(v, btf.Var) and isinstance(v.type, btf.Void)
    c = spec.type_by_name("__start_rodata", btf.Var)
    assert isinstance(c, btf.Var) and isinstance(btf.underlying(c.type), btf.Void)
    for order in ("bpfel", "bpfeb"):
        btf.load_spec(fixture_path(f"btf_ksym.{order}.o"))


def test_var_of_a_function_prototype_is_refused() -> None:
    b = RawBuilder()
    proto = b.proto(0, [])
    b.var("f", proto)
    _both_reject(b.blob(), "non-data")


def test_extern_of_an_incomplete_struct_is_accepted() -> None:
    b = RawBuilder()
    fwd = b.add(FWD, "task_struct")
    b.var("init_task", fwd, linkage=2)
    _both_accept(b.blob())


def test_member_of_a_section_type_is_refused() -> None:
    b = RawBuilder()
    i = b.int("int", 4)
    v = b.var("x", i)
    sec = b.datasec(".data", 4, [(v, 0, 4)])
    b.struct("s", 4, [("d", sec, 0)])
    _both_reject(b.blob(), "non-data")


def test_decl_tag_on_an_int_is_refused() -> None:
    b = RawBuilder()
    i = b.int("int", 4)
    b.decl_tag("tag", i)
    _both_reject(b.blob(), "decl tag")
    b = RawBuilder()
    s = b.struct("s", 4, [("x", 0, 0)])
    i = b.int("int", 4)
    b.records[s - 1][4] = i
    b.decl_tag("tag", s, 0)
    tag = _both_accept(b.blob()).type_by_name("tag")
    assert isinstance(tag, btf.DeclTag) and tag.component_idx == 0


# -- agreement and real objects ---------------------------------------------------


def _verdict(fn: Callable[[bytes], object], blob: bytes) -> bool:
    try:
        fn(blob)
    except InvalidObjectError:
        return False
    return True


def test_validators_agree_on_mutated_btf() -> None:
    """The ELF check and btf.validate are one validator: same verdict on
    every input (a deterministic sample of mutations)."""
    seeds = [btf.load_spec(fixture_path(n)).raw for n in ("btf_types.bpfel.o", "btf_types.bpfeb.o", "core_read.o")]
    rng = random.Random(12)
    accepted = 0
    for _ in range(1500):
        blob = fuzz.mutate(seeds[rng.randrange(len(seeds))], rng)
        a, b = _verdict(btf.validate, blob), _verdict(check_btf, blob)
        assert a == b, blob.hex()
        accepted += a
    assert 0 < accepted < 1500


def _corpus_names():
    return [name for name, _ in fuzz.corpus()]


@pytest.fixture(scope="module")
def corpus() -> Dict[str, bytes]:
    return dict(fuzz.corpus())


@pytest.mark.parametrize("name", _corpus_names())
def test_every_real_object_passes(name: str, corpus: Dict[str, bytes]) -> None:
    """Unfixed (as libbpf reads the section) and fixed up (as load_spec does)."""
    data = corpus[name]
    sec = _elf.ElfFile(data).section_by_name(".BTF")
    if sec is None:
        pytest.skip("no .BTF")
    btf.validate(sec.data)
    check_btf(sec.data)
    btf.validate(btf.load_spec(data).raw)


def test_kernel_btf_passes() -> None:
    path = Path("/sys/kernel/btf/vmlinux")
    if not path.exists():
        pytest.skip("no kernel BTF")
    btf.validate(path.read_bytes())
    btf.validate(gzip.decompress((CILIUM_TESTDATA / "btf" / "testdata" / "vmlinux.btf.gz").read_bytes()))


# -- kernel types handed to libbpf ------------------------------------------------


def _kernel_types_crasher() -> bytes:
    """The CO-RE target of tests/test_core_relo.py with task_struct's member
    typed by an id past the last type: libbpf 1.1.2 gets NULL from
    btf__type_by_id and dereferences it in skip_mods_and_typedefs."""
    b = RawBuilder()
    i = b.int("int", 4, signed=True)
    b.struct("task_struct", 8, [("pid", i, 0), ("tgid", 0xFFFF, 32)])
    return b.blob()


def test_kernel_types_crasher_is_refused(tmp_path: Path) -> None:
    blob = _kernel_types_crasher()
    _both_reject(blob, "out of range")
    path = tmp_path / "kt.btf"
    path.write_bytes(blob)
    with pytest.raises(btf.BTFError):
        btf.load_spec(path)


def test_specs_say_whether_they_were_validated() -> None:
    """What the loader checks before handing a spec's bytes to libbpf."""
    raw = btf.load_spec(fixture_path("core_read.o")).raw
    assert btf.load_spec(raw).validated
    assert btf.Spec.from_raw(raw).copy().validated
    assert not btf.Spec.from_raw(raw, validate=False).validated
    lazy = btf.Spec.from_raw(_self_pointer(), validate=False)  # refused only when checked
    assert not lazy.validated
    with pytest.raises(btf.BTFError):
        btf.validate(lazy.raw)


# -- values BTF cannot hold ---------------------------------------------------------


def _edit_ksym_object(section_size: int = 0, symbol_value: int = 0) -> bytes:
    """btf_ksym.o with its .bss claiming ``section_size`` bytes, or its
    variable ``addrs`` at offset ``symbol_value`` (ELF has 64 bits for both,
    BTF's data sections 32)."""
    data = bytearray(fixture_path("btf_ksym.o").read_bytes())
    elf = _elf.ElfFile(bytes(data))
    bss = elf.section_by_name(".bss")
    assert bss is not None
    if section_size:
        struct.pack_into("<Q", data, elf._shoff + bss.index * 64 + 32, section_size)  # sh_size
    if symbol_value:
        sym = next(s for s in elf.symbols if s.name == "addrs")
        assert elf.symtab is not None
        struct.pack_into("<Q", data, elf.symtab.offset + sym.index * 24 + 8, symbol_value)  # st_value
    return bytes(data)


@pytest.mark.parametrize("edit", [{"section_size": 1 << 32}, {"section_size": (1 << 64) - 8},
                                  {"symbol_value": 1 << 32}, {"symbol_value": (1 << 64) - 8}])
def test_data_sections_and_offsets_beyond_32_bits_are_btf_errors(edit: Dict[str, int]) -> None:
    """They raised a bare struct.error from the data-section fix-up."""
    with pytest.raises(btf.BTFError, match="32-bit"):
        btf.load_spec(_edit_ksym_object(**edit))
    btf.load_spec(_edit_ksym_object(section_size=(1 << 32) - 1))  # the largest that fits
