"""Fuzzing ebpf.asm's decoder: arbitrary bytes either decode to instructions
that re-encode to the same bytes, or raise an ``AsmError`` -- never anything
else."""

from __future__ import annotations

import struct

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ebpf import asm  # noqa: E402
from ebpf.asm.opcodes import VALID_OPCODES  # noqa: E402
from ebpf.errors import EBPFError  # noqa: E402

BYTEORDERS = st.sampled_from(["little", "big"])


def check(data: bytes, byteorder: str) -> None:
    try:
        program = asm.Instructions.decode(data, byteorder)
    except asm.AsmError as err:
        assert isinstance(err, EBPFError) and isinstance(err, ValueError)
        return
    assert program.encode(byteorder) == data
    for ins in program:
        str(ins)  # every decodable instruction can be printed
    labelled = asm.Instructions.decode(data, byteorder, labels=True)
    assert labelled.encode(byteorder) == data


@settings(max_examples=1500, deadline=None)
@given(st.binary(min_size=8, max_size=8), BYTEORDERS)
def test_random_word(data: bytes, byteorder: str) -> None:
    check(data, byteorder)


# Random words are mostly invalid opcodes; bias towards valid ones so the
# field handling of each instruction kind is exercised too.
valid_word = st.builds(
    lambda op, regs, off, imm: struct.pack("<BBhi", op, regs, off, imm),
    st.sampled_from(sorted(VALID_OPCODES)),
    st.integers(0, 255),
    st.integers(-(1 << 15), (1 << 15) - 1),
    st.one_of(st.sampled_from([0, 1, 16, 32, 64, 0x40, 0x41, 0xE1, 0xF1]), st.integers(-(1 << 31), (1 << 31) - 1)),
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.one_of(valid_word, st.binary(min_size=8, max_size=8)), min_size=1, max_size=12), BYTEORDERS)
def test_random_programs(words: list, byteorder: str) -> None:
    check(b"".join(words), byteorder)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40), BYTEORDERS)
def test_random_lengths(data: bytes, byteorder: str) -> None:
    check(data, byteorder)


@settings(max_examples=500, deadline=None)
@given(valid_word, st.binary(min_size=8, max_size=8), BYTEORDERS)
def test_single_instruction(first: bytes, second: bytes, byteorder: str) -> None:
    for data in (first, first + second):
        try:
            ins = asm.Instruction.decode(data, byteorder)
        except asm.AsmError:
            continue
        assert ins.encode(byteorder) == data
