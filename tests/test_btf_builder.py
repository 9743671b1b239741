"""BTF made and handed to the kernel: btf.Builder (types to bytes) and
btf.Handle (BPF_BTF_LOAD), as cilium's btf.Builder and btf.NewHandle."""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from pathlib import Path
from typing import List

import pytest

import ebpf.btf as btf
from ebpf.btf import (
    Array,
    Builder,
    Const,
    Datasec,
    DeclTag,
    Enum,
    EnumValue,
    Float,
    Func,
    FuncParam,
    FuncProto,
    Fwd,
    Handle,
    Int,
    Member,
    Pointer,
    Struct,
    Typedef,
    TypeTag,
    Union,
    Var,
    VarSecinfo,
    Void,
    Volatile,
)
from ebpf.errors import ClosedError, KeyNotExistError, NotSupportedError, VerifierError
from ebpf.ids import btf_info_from_id

from conftest import fixture_path

U32 = Int("unsigned int", 4)
INT = Int("int", 4, btf.IntEncoding.SIGNED)


def _spin_lock_value() -> Struct:
    lock = Struct("bpf_spin_lock", 4, [Member("val", U32, 0)])
    return Struct("counter", 8, [Member("count", INT, 0), Member("lock", lock, 32)])


def _every_kind() -> List[btf.Type]:
    """One type of every kind, built by hand, with a cycle through a pointer."""
    node = Struct("node", 0, [])
    node.size = 24
    node.members = [Member("next", Pointer(node), 0), Member("value", INT, 64),
                    Member("flags", U32, 96, bitfield_size=3), Member("mode", U32, 99, bitfield_size=5)]
    for m in node.members:
        m._owner = node
    color = Enum("color", 4, [EnumValue("RED", 0), EnumValue("BLUE", -1)], signed=True)
    big = Enum("big", 8, [EnumValue("HUGE", 1 << 40)])
    proto = FuncProto(INT, [FuncParam("n", Pointer(Const(node))), FuncParam("", Void())])
    fn = Func("visit", FuncProto(INT, [FuncParam("ctx", Pointer(Void()))]), btf.FuncLinkage.GLOBAL)
    var = Var("counter", Volatile(U32), btf.VarLinkage.GLOBAL)
    return [
        node, color, big, Typedef("visit_fn", Pointer(proto)), fn, var,
        Datasec(".bss", 4, [VarSecinfo(var, 0, 4)]),
        Union("either", 8, [Member("i", INT, 0), Member("d", Float("double", 8), 0)]),
        Array(Int("char", 1, btf.IntEncoding.SIGNED), 16), Fwd("later", btf.FwdKind.UNION),
        TypeTag("user", Pointer(INT)), DeclTag("kfunc", fn, -1), DeclTag("arg", fn, 0),
    ]


@pytest.mark.parametrize("order", ["little", "big"])
def test_hand_built_types_round_trip(order: str) -> None:
    b = Builder()
    types = _every_kind()
    ids = [b.add(t) for t in types]
    raw = b.marshal(order)
    spec = btf.Spec.from_raw(raw)  # validates
    assert spec.byte_order == order
    for t, tid in zip(types, ids):
        assert spec.type_by_id(tid) == t
    node = spec.type_by_id(ids[0])
    assert isinstance(node, Struct) and node.members[0].type.target is node
    assert [m.bitfield_size for m in node.members] == [0, 0, 3, 5]
    assert spec.type_by_name("big").values[0].value == 1 << 40


@pytest.mark.parametrize("name", ["btf_types.bpfel.o", "btf_types.bpfeb.o", "core_read.o", "btf_ksym.o"])
def test_types_of_a_spec_round_trip_in_both_byte_orders(name: str) -> None:
    spec = btf.load_spec(fixture_path(name))
    b = Builder()
    ids = {t.id: b.add(t) for t in spec}
    assert len(b) <= len(spec)  # nothing added twice
    for order in ("little", "big"):
        back = btf.Spec.from_raw(b.marshal(order))
        for t in spec:
            assert back.type_by_id(ids[t.id]) == t, t


def test_dependencies_come_along_and_are_deduplicated() -> None:
    b = Builder()
    inner = Struct("inner", 4, [Member("x", Int("int", 4, 1), 0)])
    outer = Struct("outer", 8, [Member("a", inner, 0), Member("b", Int("int", 4, 1), 32)])
    tid = b.add(outer)
    assert len(b) == 3  # int (once, though two objects), inner, outer
    assert b.add(outer) == tid and b.type_id(outer) == tid
    assert b.add(Int("int", 4, 1)) == b.type_id(inner.members[0].type)
    # Arrays made without an index type share the default one.
    a1, a2 = Array(INT, 2), Array(INT, 3)
    b.add(a1)
    b.add(a2)
    spec = b.spec()
    i1, i2 = spec.type_by_id(b.type_id(a1)), spec.type_by_id(b.type_id(a2))
    assert isinstance(i1, Array) and isinstance(i2, Array) and i1.index_type.id == i2.index_type.id
    assert len([t for t in spec if t.name == "__ARRAY_SIZE_TYPE__"]) == 1
    assert b.add(Void()) == 0
    with pytest.raises(KeyError):
        b.type_id(Struct("never", 0))
    with pytest.raises(TypeError):
        b.add("int")  # type: ignore[arg-type]


def test_a_type_holding_itself_by_value_is_refused_and_the_builder_stays_usable() -> None:
    td = Typedef("loop", INT)
    td.type = td
    b = Builder()
    b.add(U32)
    with pytest.raises(btf.BTFError, match="itself"):
        b.add(Struct("s", 4, [Member("x", td, 0)]))
    assert len(b) == 1
    assert b.add(INT) == 2
    btf.Spec.from_raw(b.marshal())


@pytest.mark.parametrize("bad, match", [
    (Struct("huge", 1 << 32, []), "size"),
    (Array(INT, 1 << 32), "element count"),
    (Struct("far", 1 << 30, [Member("x", INT, 1 << 32)]), "offset"),
    (Struct("bits", 1 << 25, [Member("x", U32, 1 << 24, bitfield_size=1)]), "bitfield"),
    (Int("nul\0name", 4), "NUL"),
    (Enum("e", 8, [EnumValue("X", 1 << 64)]), "64-bit"),
    (Enum("e", 3, [EnumValue("X", 1)]), "enum size"),
    (Struct("wide", 4, [Member(f"m{i}", Int("char", 1), 0) for i in range(65536)]), "65535"),
    (Var("v", INT, linkage=-1), "linkage"),
])
def test_values_btf_cannot_hold_are_btf_errors(bad: btf.Type, match: str) -> None:
    with pytest.raises(btf.BTFError, match=match):
        Builder([bad])


def test_marshal_arguments() -> None:
    with pytest.raises(ValueError):
        Builder([INT]).marshal("middle")
    assert Builder().marshal()[:2] == (b"\x9f\xeb" if sys.byteorder == "little" else b"\xeb\x9f")
    assert len(btf.Spec.from_raw(Builder().marshal())) == 0


# -- handed to the kernel ------------------------------------------------------------


@pytest.mark.kernel
def test_builder_output_is_accepted_by_the_kernel() -> None:
    b = Builder(_every_kind())
    with Handle(b) as h:
        assert h.fd >= 0
        info = h.info()
        assert info.id == h.id > 0 and not info.kernel and info.size == len(b.marshal())
        back = h.spec()
        node = _every_kind()[0]
        assert back.type_by_name("node") == node
        again = Handle.from_id(h.id)
        with again:
            assert again.id == h.id and again.fd != h.fd
        assert btf_info_from_id(h.id) == info
    with pytest.raises(KeyNotExistError):
        Handle.from_id(0x7FFFFFFF)
    assert h.closed
    with pytest.raises(ClosedError):
        _ = h.fd


@pytest.mark.kernel
def test_a_spec_and_raw_bytes_load_too() -> None:
    spec = btf.load_spec(fixture_path("btf_types.o"))
    with Handle(spec) as h:
        node = spec.type_by_name("node")
        assert h.type_id(node) == node.id
        assert h.spec().type_by_id(node.id) == node
    with Handle(spec.raw) as h:
        with pytest.raises(KeyError):
            h.type_id(node)


@pytest.mark.kernel
def test_kernel_types_copied_through_a_builder_load() -> None:
    kernel = btf.load_kernel_spec()
    task = kernel.type_by_name("task_struct", btf.Struct)
    b = Builder()
    tid = b.add(task)
    assert btf.Spec.from_raw(b.marshal()).type_by_id(tid) == task
    with Handle(b) as h:
        assert h.spec().type_by_id(tid).name == "task_struct"


@pytest.mark.kernel
def test_refusal_carries_the_kernels_log() -> None:
    b = Builder([Struct("short", 2, [Member("x", INT, 0)])])
    with pytest.raises(VerifierError) as info:
        Handle(b)
    err = info.value
    assert err.errno == 22
    assert any("exceeds struct_size" in line for line in err.log), err.log
    assert "exceeds struct_size" in str(err)


@pytest.mark.kernel
def test_wrong_inputs_are_typed_errors() -> None:
    other = "big" if sys.byteorder == "little" else "little"
    with pytest.raises(btf.BTFError, match="endian"):
        Handle(Builder([INT]).marshal(other))
    with pytest.raises(btf.BTFError):
        Handle(b"\0")
    with pytest.raises(TypeError):
        Handle(42)  # type: ignore[arg-type]
    with pytest.raises(VerifierError):
        Handle(b"\x9f\xeb\x01\x00" + bytes(28))
    with Handle(Builder([INT])) as h:
        with pytest.raises(NotSupportedError):
            h.pin("/sys/fs/bpf/never")


@pytest.mark.kernel
def test_finalizer_closes_the_fd() -> None:
    h = Handle(Builder([INT]))
    fd = h.fd
    del h
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)


@pytest.mark.kernel
def test_spin_lock_value_built_by_hand_loads_and_makes_a_locking_map() -> None:
    """A struct with a struct bpf_spin_lock member: the kernel accepts the
    BTF, and an array map created with it takes BPF_F_LOCK updates (only
    maps whose value has a spin lock do).  This is how maps.py can create a
    standalone map with BTF: btf_fd, btf_key_type_id, btf_value_type_id."""
    from ebpf import _libbpf
    from ebpf.info import map_info

    value = _spin_lock_value()
    b = Builder()
    key_id, value_id = b.add(U32), b.add(value)
    with Handle(b) as h:
        opts = _libbpf.bpf_map_create_opts(btf_fd=h.fd, btf_key_type_id=key_id, btf_value_type_id=value_id)
        fd = _libbpf.lib.bpf_map_create(2, b"spin_lock_test", 4, 8, 1, ctypes.byref(opts))
        btf_id = h.id
    try:  # the map keeps the BTF alive after the handle is closed
        assert map_info(fd).btf_id == btf_id
        key = ctypes.c_uint32(0)
        val = (ctypes.c_uint32 * 2)(41, 0)
        BPF_F_LOCK = 4
        assert _libbpf.lib.bpf_map_update_elem(fd, ctypes.byref(key), val, BPF_F_LOCK) == 0
        out = (ctypes.c_uint32 * 2)()
        assert _libbpf.lib.bpf_map_lookup_elem_flags(fd, ctypes.byref(key), out, BPF_F_LOCK) == 0
        assert out[0] == 41
    finally:
        os.close(fd)
    # Without the lock member, BPF_F_LOCK is refused: the test can fail.
    plain = Struct("plain", 8, [Member("count", INT, 0), Member("pad", U32, 32)])
    b = Builder()
    key_id, value_id = b.add(U32), b.add(plain)
    with Handle(b) as h:
        opts = _libbpf.bpf_map_create_opts(btf_fd=h.fd, btf_key_type_id=key_id, btf_value_type_id=value_id)
        fd = _libbpf.lib.bpf_map_create(2, b"no_lock_test", 4, 8, 1, ctypes.byref(opts))
    try:
        assert _libbpf.lib.bpf_map_update_elem(fd, ctypes.byref(key), val, BPF_F_LOCK) < 0
    finally:
        os.close(fd)


def test_handle_module_is_lazy() -> None:
    import subprocess

    code = ("import sys, ebpf.btf; assert 'ebpf._libbpf' not in sys.modules; "
            "ebpf.btf.Builder; assert 'ebpf._libbpf' not in sys.modules; ebpf.btf.Handle; "
            "assert 'ebpf.btf.handle' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)
