"""Programs that call BPF functions, use globals and callbacks load alone.

``ProgramSpec.instructions`` carries the functions a program reaches (like
cilium's ELF reader), so ``ebpf.Program(spec)`` with the maps it names gives
the same results as loading through a Collection.
"""

from __future__ import annotations

import pytest

import ebpf
from ebpf import asm

from conftest import fixture_path

kernel = pytest.mark.kernel


@pytest.fixture
def spec() -> ebpf.CollectionSpec:
    return ebpf.load_collection_spec(fixture_path("subprog.o"))


def test_functions_are_linked_once(spec):
    insns = spec.programs["uses_subprogs"].instructions
    syms = insns.symbols()
    assert set(syms) == {"middle", "leaf"}  # leaf is reached through middle, appended once
    assert syms["middle"] < syms["leaf"]
    loop = spec.programs["uses_loop"].instructions
    assert set(loop.symbols()) == {"leaf", "add_one"}
    assert [i for i in loop if i.is_function_pointer_load][0].reference == "add_one"


def test_references_follow_linked_code(spec):
    # uses_loop never reaches middle (the only reader of .data).
    assert spec._origin.references["uses_loop"] == (".bss", ".rodata", "results")
    assert spec._origin.references["uses_subprogs"] == (".bss", ".data", ".rodata", "results")


def test_reading_twice_gives_equal_specs(spec):
    again = ebpf.load_collection_spec(fixture_path("subprog.o"))
    assert again == spec
    assert again.programs["uses_loop"].instructions.encode() == spec.programs["uses_loop"].instructions.encode()


def _maps(spec: ebpf.CollectionSpec, names):
    return {n: ebpf.Map(spec.maps[n]) for n in names}


def _close(objs):
    for o in objs.values():
        o.close()


@kernel
# run() hands a socket filter an Ethernet frame: skb->len is 20 - 14 = 6.
@pytest.mark.parametrize("name,expect", [("uses_subprogs", 6 * 3 + 5), ("uses_loop", 45 + 3)])
def test_standalone_matches_collection(spec, name, expect):
    with ebpf.Collection(spec) as coll:
        via_coll = coll.programs[name].run(bytes(20)).retval
        assert coll.variables["calls"].get() == 1  # leaf ran once
    maps = _maps(spec, spec._origin.references[name])
    try:
        with ebpf.Program(spec.programs[name], maps=maps) as prog:
            alone = prog.run(bytes(20)).retval
        key = 0 if name == "uses_subprogs" else 1
        assert maps["results"].lookup(key) == expect
        assert maps[".bss"].lookup(0).calls == 1  # leaf ran once
    finally:
        _close(maps)
    assert via_coll == alone == expect


@kernel
def test_globals_set_before_load_reach_standalone_program(spec):
    spec.variables["factor"].set(7)
    spec.variables["bias"].set(100)
    maps = _maps(spec, spec._origin.references["uses_subprogs"])
    try:
        with ebpf.Program(spec.programs["uses_subprogs"], maps=maps) as prog:
            assert prog.run(bytes(20)).retval == 6 * 7 + 100
    finally:
        _close(maps)


@kernel
@pytest.mark.parametrize("how", ["replace", "insert"])
def test_edited_program_in_collection_keeps_subprograms(spec, how):
    """An edit in place goes through libbpf (its relocations by index stay
    valid); an insertion shifts indexes, so the program is loaded from the
    linked instructions instead.  Both keep the subprogram and the maps."""
    insns = spec.programs["uses_subprogs"].instructions
    end = insns.symbols()["middle"] - 1
    assert insns[end].opcode == asm.exit().opcode
    if how == "replace":
        assert not insns[end - 1].is_load_imm64
        insns[end - 1] = asm.mov_imm(asm.R0, 1)
    else:
        insns.insert(end, asm.mov_imm(asm.R0, 1))
    with ebpf.Collection(spec) as coll:
        assert coll.programs["uses_subprogs"].run(bytes(20)).retval == 1
        assert coll.maps["results"].lookup(0) == 23
        assert coll.variables["calls"].get() == 1
