"""CO-RE options: ``kernel_types`` for programs alone and in collections, and
``extra_relocation_targets`` (cilium's ``ProgramOptions.ExtraRelocationTargets``):
module BTF searched beside the kernel's types.

This host has no /sys/kernel/btf/<module>, so the module's BTF is made here,
split on the running kernel's as the kernel writes it (the pattern of
tests/test_btf.py).  fixtures/core_module.bpf.c reads the offset of
``mod_thing.t`` (8 in its own definition, 16 in the module's) and whether
the type exists.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import ebpf
from ebpf import btf
from ebpf.btf.parse import RawBTF
from ebpf.errors import InvalidObjectError, VerifierError

from conftest import fixture_path

KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")
T_BITS = 128  # mod_thing.t in the module's BTF: byte 16


def _header(types: bytes, strings: bytes) -> bytes:
    return struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))


def module_btf(base: btf.Spec, name: bytes = b"mod_thing") -> bytes:
    """Split BTF on ``base``: ``struct mod_thing { int x; struct task_struct *t at byte 16; }``."""
    int_id = base.type_id(base.type_by_name("int", "int"))
    task_id = base.type_id(base.type_by_name("task_struct", "struct"))
    str_base, first = base._raw.str_end, base._raw.end_id
    strings = name + b"\0x\0t\0"
    n, x, t = str_base, str_base + len(name) + 1, str_base + len(name) + 3
    types = struct.pack("<III", 0, 2 << 24, task_id)  # [first] PTR -> task_struct
    types += struct.pack("<III", n, (4 << 24) | 2, 24)  # [first+1] STRUCT mod_thing, 24 bytes
    types += struct.pack("<III", x, int_id, 0) + struct.pack("<III", t, first, T_BITS)
    return _header(types, strings) + types + strings


def standalone_btf(name: bytes = b"mod_thing", t_bits: int = T_BITS, member_type: int = 2) -> bytes:
    """``int`` [1], ``int *`` [2] and ``struct <name> { int x; int *t; }`` [3], on nothing."""
    strings = b"\0int\0" + name + b"\0x\0t\0"
    n = 5
    x = n + len(name) + 1
    types = struct.pack("<IIII", 1, 1 << 24, 4, (1 << 24) | 32)  # [1] INT int, signed
    types += struct.pack("<III", 0, 2 << 24, 1)  # [2] PTR -> int
    types += struct.pack("<III", n, (4 << 24) | 2, t_bits // 8 + 8)  # [3] STRUCT
    types += struct.pack("<III", x, 1, 0) + struct.pack("<III", x + 2, member_type, t_bits)
    return _header(types, strings) + types + strings


def spec() -> ebpf.CollectionSpec:
    return ebpf.load_collection_spec(fixture_path("core_module.o"))


@pytest.fixture(scope="module")
def kernel() -> btf.Spec:
    if not KERNEL_BTF.exists():
        pytest.skip("no kernel BTF")
    return btf.load_kernel_spec()


@pytest.fixture(scope="module")
def module(kernel) -> btf.Spec:
    return btf.Spec.from_raw(module_btf(kernel), kernel)


def results(coll: ebpf.Collection) -> tuple:
    assert coll.programs["read_offsets"].run().retval == 0
    return coll.variables["t_offset"].get(), coll.variables["thing_exists"].get()


# --------------------------------------------------------------------------
# Merging (no kernel)


def test_merged_blob_keeps_every_type_and_name():
    from ebpf._relocation_targets import merge

    base = RawBTF(standalone_btf(b"base_thing"))
    one = RawBTF(standalone_btf(b"one_thing", t_bits=64))
    split_types = struct.pack("<III", base.str_end, (4 << 24) | 1, 4) + struct.pack("<III", base.str_end + 8, 1, 0)
    split_strings = b"on_base\0y\0"
    two = RawBTF(_header(split_types, split_strings) + split_types + split_strings, base)
    merged = btf.Spec.from_raw(merge(base, [one, two]))  # validated: every id and offset in range
    assert len(merged) == 3 + 3 + 1
    for name, t_off in (("base_thing", 16), ("one_thing", 8)):
        s = merged.type_by_name(name, "struct")
        assert s.member("x").type.name == "int" and s.member("t").offset == t_off * 8
        assert s.member("t").type.target.name == "int"
    # The standalone target's int is its own (a second int), the split one's is the base's.
    one_int = merged.type_by_name("one_thing", "struct").member("x").type
    assert merged.type_id(one_int) == 4
    on_base = merged.type_by_name("on_base", "struct")
    assert merged.type_id(on_base.member("y").type) == 1


def test_split_target_on_other_types_is_refused():
    from ebpf._relocation_targets import merge

    base, other = RawBTF(standalone_btf(b"a")), RawBTF(standalone_btf(b"b"))
    split = RawBTF(_header(b"", b"") + b"", other)
    with pytest.raises(btf.BTFError, match="split BTF on other types"):
        merge(base, [split])


# --------------------------------------------------------------------------
# On the kernel


@pytest.mark.kernel
def test_module_types_reach_a_collection(module):
    with pytest.raises(VerifierError, match="CO-RE relocation failed.*mod_thing"):
        ebpf.Collection(spec())
    with ebpf.Collection(spec(), extra_relocation_targets=[module]) as coll:
        assert results(coll) == (T_BITS // 8, 1)


@pytest.mark.kernel
def test_module_types_reach_a_program_loaded_alone(module):
    s = spec()
    with pytest.raises(VerifierError, match="CO-RE relocation failed"):
        ebpf.Program(s.programs["read_offsets"])
    with ebpf.Map(s.maps[".bss"]) as bss:
        with ebpf.Program(s.programs["read_offsets"], maps={".bss": bss},
                          extra_relocation_targets=[module]) as prog:
            assert prog.run().retval == 0
        value = bss[0]
        assert (value.t_offset, value.thing_exists) == (T_BITS // 8, 1)


@pytest.mark.kernel
def test_standalone_extra_target_and_kernel_types(kernel):
    target = btf.Spec.from_raw(standalone_btf(t_bits=192))
    with ebpf.Collection(spec(), extra_relocation_targets=[target]) as coll:
        assert results(coll) == (24, 1)
    # With kernel_types the base is those types, not the running kernel's.
    with ebpf.Collection(spec(), kernel_types=str(KERNEL_BTF), extra_relocation_targets=[target]) as coll:
        assert results(coll) == (24, 1)
    tiny = standalone_btf(b"unrelated")
    with ebpf.Collection(spec(), kernel_types=tiny, extra_relocation_targets=[target]) as coll:
        assert results(coll) == (24, 1)
    with pytest.raises(VerifierError, match="mod_thing"):
        ebpf.Collection(spec(), kernel_types=tiny)


@pytest.mark.kernel
def test_kernel_types_alone_and_in_a_collection(tmp_path):
    """kernel_types as a path, bytes or a Spec, for a CO-RE program alone and in a Collection."""
    path = tmp_path / "with_thing.btf"
    path.write_bytes(standalone_btf(t_bits=256))
    for given in (str(path), path.read_bytes(), btf.load_spec(path)):
        with ebpf.Collection(spec(), kernel_types=given) as coll:
            assert results(coll) == (32, 1)
        s = spec()
        with ebpf.Map(s.maps[".bss"]) as bss:
            with ebpf.Program(s.programs["read_offsets"], maps={".bss": bss}, kernel_types=given) as prog:
                prog.run()
            assert bss[0].t_offset == 32


@pytest.mark.kernel
def test_loaded_modules_stay_candidates_beside_extra_targets(kernel, tmp_path, monkeypatch):
    """Without kernel_types the base is vmlinux and every loaded module, as
    when libbpf searches them itself."""
    from ebpf.btf import spec as btf_spec

    (tmp_path / "vmlinux").symlink_to(KERNEL_BTF)
    (tmp_path / "fake_mod").write_bytes(module_btf(kernel))
    monkeypatch.setattr(btf_spec, "KERNEL_BTF_DIR", str(tmp_path))
    btf.flush_kernel_specs()
    try:
        unrelated = btf.Spec.from_raw(standalone_btf(b"unrelated"))
        with ebpf.Collection(spec(), extra_relocation_targets=[unrelated]) as coll:
            assert results(coll) == (T_BITS // 8, 1)
    finally:
        btf.flush_kernel_specs()


@pytest.mark.kernel
def test_split_on_other_kernel_types_is_refused(module):
    with pytest.raises(InvalidObjectError, match=r"extra_relocation_targets\[0\]: .*split BTF on other types"):
        ebpf.Collection(spec(), kernel_types=standalone_btf(b"unrelated"), extra_relocation_targets=[module])


@pytest.mark.kernel
def test_bad_extra_targets_are_typed_errors_not_crashes():
    with pytest.raises(TypeError, match="list of ebpf.btf.Spec"):
        ebpf.Collection(spec(), extra_relocation_targets=str(KERNEL_BTF))
    with pytest.raises(TypeError, match="expected an ebpf.btf.Spec"):
        ebpf.Collection(spec(), extra_relocation_targets=[b"raw"])
    with pytest.raises(TypeError, match="expected an ebpf.btf.Spec"):
        ebpf.Program(spec().programs["read_offsets"], extra_relocation_targets=[3])
    # A member typed with an id past the end: libbpf would crash on it.
    broken = btf.Spec.from_raw(standalone_btf(member_type=99), validate=False)
    with pytest.raises(btf.BTFError, match=r"extra_relocation_targets\[0\]"):
        ebpf.Collection(spec(), extra_relocation_targets=[broken])
