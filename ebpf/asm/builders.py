"""Functions that build instructions, one per kind of operation.

Naming: ``<op>_imm`` takes an immediate, ``<op>_reg`` a source register; a
``32`` after the operation name selects the 32-bit form (``ALU``/``JMP32``
class, ``w`` registers), e.g. ``add_imm(R1, 4)`` is ``r1 += 4`` and
``add32_reg(R1, R2)`` is ``w1 += w2``.  Jump targets are either a label name
(``str``, resolved by :meth:`Instructions.encode`) or a raw relative offset
(``int``).  Access sizes are byte counts (1, 2, 4, 8).

Example::

    from ebpf import asm
    prog = asm.Instructions([
        asm.mov_imm(asm.R0, 0),
        asm.jeq_imm(asm.R1, 0, "out"),
        asm.mov_imm(asm.R0, 1),
        asm.exit().with_symbol("out"),
    ])
"""

from __future__ import annotations

from typing import Any, Optional, Tuple, Union

from .errors import InvalidInstructionError
from .helper_names import HELPER_IDS
from .instruction import Instruction
from .opcodes import (
    LDDW,
    ALUOp,
    AtomicOp,
    Class,
    JumpOp,
    Mode,
    Pseudo,
    Source,
    size_from_bytes,
)
from .registers import R0, Register

__all__ = [
    "ja", "gotol", "may_goto", "call", "call_func", "call_kfunc",
    "callx", "exit", "neg", "neg32", "movsx_reg", "movsx32_reg",
    "to_le", "to_be", "bswap", "load_imm64", "load_map_ptr", "load_map_value",
    "load_func_ptr", "load_mem", "load_mem_sx", "store_mem", "store_imm", "load_abs",
    "load_ind", "atomic_add", "atomic_or", "atomic_and", "atomic_xor", "atomic_xchg",
    "atomic_cmpxchg",
    # ALU: <op>_imm, <op>_reg (64 bits), <op>32_imm, <op>32_reg (32 bits)
    "add_imm", "add_reg", "add32_imm", "add32_reg",
    "sub_imm", "sub_reg", "sub32_imm", "sub32_reg",
    "mul_imm", "mul_reg", "mul32_imm", "mul32_reg",
    "div_imm", "div_reg", "div32_imm", "div32_reg",
    "sdiv_imm", "sdiv_reg", "sdiv32_imm", "sdiv32_reg",
    "or_imm", "or_reg", "or32_imm", "or32_reg",
    "and_imm", "and_reg", "and32_imm", "and32_reg",
    "lsh_imm", "lsh_reg", "lsh32_imm", "lsh32_reg",
    "rsh_imm", "rsh_reg", "rsh32_imm", "rsh32_reg",
    "mod_imm", "mod_reg", "mod32_imm", "mod32_reg",
    "smod_imm", "smod_reg", "smod32_imm", "smod32_reg",
    "xor_imm", "xor_reg", "xor32_imm", "xor32_reg",
    "mov_imm", "mov_reg", "mov32_imm", "mov32_reg",
    "arsh_imm", "arsh_reg", "arsh32_imm", "arsh32_reg",
    # conditional jumps, the same four forms each
    "jeq_imm", "jeq_reg", "jeq32_imm", "jeq32_reg",
    "jgt_imm", "jgt_reg", "jgt32_imm", "jgt32_reg",
    "jge_imm", "jge_reg", "jge32_imm", "jge32_reg",
    "jset_imm", "jset_reg", "jset32_imm", "jset32_reg",
    "jne_imm", "jne_reg", "jne32_imm", "jne32_reg",
    "jsgt_imm", "jsgt_reg", "jsgt32_imm", "jsgt32_reg",
    "jsge_imm", "jsge_reg", "jsge32_imm", "jsge32_reg",
    "jlt_imm", "jlt_reg", "jlt32_imm", "jlt32_reg",
    "jle_imm", "jle_reg", "jle32_imm", "jle32_reg",
    "jslt_imm", "jslt_reg", "jslt32_imm", "jslt32_reg",
    "jsle_imm", "jsle_reg", "jsle32_imm", "jsle32_reg",
]

Target = Union[str, int]
RegisterLike = Union[Register, int]


def _split_target(target: Target) -> Tuple[int, Optional[str]]:
    """(raw offset, label reference) for a jump target."""
    if isinstance(target, str):
        return 0, target
    if isinstance(target, int) and not isinstance(target, bool):
        return target, None
    raise InvalidInstructionError(f"jump target must be a label (str) or an offset (int), not {target!r}")


def _size(nbytes: int) -> int:
    try:
        return size_from_bytes(nbytes)
    except ValueError as err:
        raise InvalidInstructionError(str(err)) from None


# -- ALU ---------------------------------------------------------------------------
# Each operation in both widths and with both operand kinds, written out (not
# generated at import) so that type checkers and editors know every builder.
# ``sdiv``/``smod`` are ``div``/``mod`` with offset 1 (ISA v4).


def add_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst += imm`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.ADD | Source.K, dst, R0, 0, imm)


def add_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst += src`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.ADD | Source.X, dst, src, 0, 0)


def add32_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst += imm`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.ADD | Source.K, dst, R0, 0, imm)


def add32_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst += src`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.ADD | Source.X, dst, src, 0, 0)


def sub_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst -= imm`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.SUB | Source.K, dst, R0, 0, imm)


def sub_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst -= src`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.SUB | Source.X, dst, src, 0, 0)


def sub32_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst -= imm`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.SUB | Source.K, dst, R0, 0, imm)


def sub32_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst -= src`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.SUB | Source.X, dst, src, 0, 0)


def mul_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst *= imm`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.MUL | Source.K, dst, R0, 0, imm)


def mul_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst *= src`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.MUL | Source.X, dst, src, 0, 0)


def mul32_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst *= imm`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.MUL | Source.K, dst, R0, 0, imm)


def mul32_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst *= src`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.MUL | Source.X, dst, src, 0, 0)


def div_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst /= (unsigned) imm`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.DIV | Source.K, dst, R0, 0, imm)


def div_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst /= (unsigned) src`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.DIV | Source.X, dst, src, 0, 0)


def div32_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst /= (unsigned) imm`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.DIV | Source.K, dst, R0, 0, imm)


def div32_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst /= (unsigned) src`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.DIV | Source.X, dst, src, 0, 0)


def sdiv_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst s/= (signed, ISA v4) imm`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.DIV | Source.K, dst, R0, 1, imm)


def sdiv_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst s/= (signed, ISA v4) src`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.DIV | Source.X, dst, src, 1, 0)


def sdiv32_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst s/= (signed, ISA v4) imm`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.DIV | Source.K, dst, R0, 1, imm)


def sdiv32_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst s/= (signed, ISA v4) src`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.DIV | Source.X, dst, src, 1, 0)


def or_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst |= imm`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.OR | Source.K, dst, R0, 0, imm)


def or_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst |= src`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.OR | Source.X, dst, src, 0, 0)


def or32_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst |= imm`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.OR | Source.K, dst, R0, 0, imm)


def or32_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst |= src`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.OR | Source.X, dst, src, 0, 0)


def and_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst &= imm`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.AND | Source.K, dst, R0, 0, imm)


def and_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst &= src`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.AND | Source.X, dst, src, 0, 0)


def and32_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst &= imm`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.AND | Source.K, dst, R0, 0, imm)


def and32_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst &= src`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.AND | Source.X, dst, src, 0, 0)


def lsh_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst <<= imm`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.LSH | Source.K, dst, R0, 0, imm)


def lsh_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst <<= src`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.LSH | Source.X, dst, src, 0, 0)


def lsh32_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst <<= imm`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.LSH | Source.K, dst, R0, 0, imm)


def lsh32_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst <<= src`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.LSH | Source.X, dst, src, 0, 0)


def rsh_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst >>= (logical) imm`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.RSH | Source.K, dst, R0, 0, imm)


def rsh_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst >>= (logical) src`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.RSH | Source.X, dst, src, 0, 0)


def rsh32_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst >>= (logical) imm`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.RSH | Source.K, dst, R0, 0, imm)


def rsh32_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst >>= (logical) src`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.RSH | Source.X, dst, src, 0, 0)


def mod_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst %= (unsigned) imm`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.MOD | Source.K, dst, R0, 0, imm)


def mod_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst %= (unsigned) src`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.MOD | Source.X, dst, src, 0, 0)


def mod32_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst %= (unsigned) imm`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.MOD | Source.K, dst, R0, 0, imm)


def mod32_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst %= (unsigned) src`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.MOD | Source.X, dst, src, 0, 0)


def smod_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst s%= (signed, ISA v4) imm`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.MOD | Source.K, dst, R0, 1, imm)


def smod_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst s%= (signed, ISA v4) src`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.MOD | Source.X, dst, src, 1, 0)


def smod32_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst s%= (signed, ISA v4) imm`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.MOD | Source.K, dst, R0, 1, imm)


def smod32_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst s%= (signed, ISA v4) src`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.MOD | Source.X, dst, src, 1, 0)


def xor_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst ^= imm`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.XOR | Source.K, dst, R0, 0, imm)


def xor_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst ^= src`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.XOR | Source.X, dst, src, 0, 0)


def xor32_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst ^= imm`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.XOR | Source.K, dst, R0, 0, imm)


def xor32_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst ^= src`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.XOR | Source.X, dst, src, 0, 0)


def mov_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst = imm`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.MOV | Source.K, dst, R0, 0, imm)


def mov_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst = src`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.MOV | Source.X, dst, src, 0, 0)


def mov32_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst = imm`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.MOV | Source.K, dst, R0, 0, imm)


def mov32_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst = src`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.MOV | Source.X, dst, src, 0, 0)


def arsh_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst s>>= (arithmetic) imm`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.ARSH | Source.K, dst, R0, 0, imm)


def arsh_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst s>>= (arithmetic) src`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.ARSH | Source.X, dst, src, 0, 0)


def arsh32_imm(dst: RegisterLike, imm: int) -> Instruction:
    """``dst s>>= (arithmetic) imm`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.ARSH | Source.K, dst, R0, 0, imm)


def arsh32_reg(dst: RegisterLike, src: RegisterLike) -> Instruction:
    """``dst s>>= (arithmetic) src`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.ARSH | Source.X, dst, src, 0, 0)


def neg(dst: RegisterLike) -> Instruction:
    """``dst = -dst`` on 64 bits."""
    return Instruction(Class.ALU64 | ALUOp.NEG | Source.K, dst)


def neg32(dst: RegisterLike) -> Instruction:
    """``dst = -dst`` on 32 bits."""
    return Instruction(Class.ALU | ALUOp.NEG | Source.K, dst)


def movsx_reg(dst: RegisterLike, src: RegisterLike, bits: int) -> Instruction:
    """``dst = (s<bits>)src``: sign-extending 64-bit move from 8, 16 or 32 bits (ISA v4)."""
    if bits not in (8, 16, 32):
        raise InvalidInstructionError(f"movsx extends from 8, 16 or 32 bits, not {bits}")
    return Instruction(Class.ALU64 | ALUOp.MOV | Source.X, dst, src, bits, 0)


def movsx32_reg(dst: RegisterLike, src: RegisterLike, bits: int) -> Instruction:
    """``wdst = (s<bits>)wsrc``: sign-extending 32-bit move from 8 or 16 bits (ISA v4)."""
    if bits not in (8, 16):
        raise InvalidInstructionError(f"movsx32 extends from 8 or 16 bits, not {bits}")
    return Instruction(Class.ALU | ALUOp.MOV | Source.X, dst, src, bits, 0)


def _swap_width(bits: int) -> int:
    if bits not in (16, 32, 64):
        raise InvalidInstructionError(f"byte swap width must be 16, 32 or 64, not {bits}")
    return bits


def to_le(dst: RegisterLike, bits: int) -> Instruction:
    """``dst = le<bits> dst``: convert from host to little endian (truncating to ``bits``)."""
    return Instruction(Class.ALU | ALUOp.END | Source.TO_LE, dst, R0, 0, _swap_width(bits))


def to_be(dst: RegisterLike, bits: int) -> Instruction:
    """``dst = be<bits> dst``: convert from host to big endian (truncating to ``bits``)."""
    return Instruction(Class.ALU | ALUOp.END | Source.TO_BE, dst, R0, 0, _swap_width(bits))


def bswap(dst: RegisterLike, bits: int) -> Instruction:
    """``dst = bswap<bits> dst``: unconditional byte swap (ISA v4)."""
    return Instruction(Class.ALU64 | ALUOp.END | Source.K, dst, R0, 0, _swap_width(bits))


# -- jumps -------------------------------------------------------------------------
# Each condition in both widths (``JMP``/``JMP32``) with both operand kinds.


def jeq_imm(dst: RegisterLike, imm: int, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst == imm``, compared on 64 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JEQ | Source.K, dst, R0, offset, imm, reference=reference)


def jeq_reg(dst: RegisterLike, src: RegisterLike, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst == src``, compared on 64 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JEQ | Source.X, dst, src, offset, 0, reference=reference)


def jeq32_imm(dst: RegisterLike, imm: int, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst == imm``, compared on 32 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JEQ | Source.K, dst, R0, offset, imm, reference=reference)


def jeq32_reg(dst: RegisterLike, src: RegisterLike, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst == src``, compared on 32 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JEQ | Source.X, dst, src, offset, 0, reference=reference)


def jgt_imm(dst: RegisterLike, imm: int, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst > (unsigned) imm``, compared on 64 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JGT | Source.K, dst, R0, offset, imm, reference=reference)


def jgt_reg(dst: RegisterLike, src: RegisterLike, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst > (unsigned) src``, compared on 64 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JGT | Source.X, dst, src, offset, 0, reference=reference)


def jgt32_imm(dst: RegisterLike, imm: int, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst > (unsigned) imm``, compared on 32 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JGT | Source.K, dst, R0, offset, imm, reference=reference)


def jgt32_reg(dst: RegisterLike, src: RegisterLike, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst > (unsigned) src``, compared on 32 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JGT | Source.X, dst, src, offset, 0, reference=reference)


def jge_imm(dst: RegisterLike, imm: int, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst >= (unsigned) imm``, compared on 64 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JGE | Source.K, dst, R0, offset, imm, reference=reference)


def jge_reg(dst: RegisterLike, src: RegisterLike, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst >= (unsigned) src``, compared on 64 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JGE | Source.X, dst, src, offset, 0, reference=reference)


def jge32_imm(dst: RegisterLike, imm: int, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst >= (unsigned) imm``, compared on 32 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JGE | Source.K, dst, R0, offset, imm, reference=reference)


def jge32_reg(dst: RegisterLike, src: RegisterLike, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst >= (unsigned) src``, compared on 32 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JGE | Source.X, dst, src, offset, 0, reference=reference)


def jset_imm(dst: RegisterLike, imm: int, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst & (any bit set) imm``, compared on 64 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JSET | Source.K, dst, R0, offset, imm, reference=reference)


def jset_reg(dst: RegisterLike, src: RegisterLike, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst & (any bit set) src``, compared on 64 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JSET | Source.X, dst, src, offset, 0, reference=reference)


def jset32_imm(dst: RegisterLike, imm: int, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst & (any bit set) imm``, compared on 32 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JSET | Source.K, dst, R0, offset, imm, reference=reference)


def jset32_reg(dst: RegisterLike, src: RegisterLike, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst & (any bit set) src``, compared on 32 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JSET | Source.X, dst, src, offset, 0, reference=reference)


def jne_imm(dst: RegisterLike, imm: int, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst != imm``, compared on 64 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JNE | Source.K, dst, R0, offset, imm, reference=reference)


def jne_reg(dst: RegisterLike, src: RegisterLike, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst != src``, compared on 64 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JNE | Source.X, dst, src, offset, 0, reference=reference)


def jne32_imm(dst: RegisterLike, imm: int, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst != imm``, compared on 32 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JNE | Source.K, dst, R0, offset, imm, reference=reference)


def jne32_reg(dst: RegisterLike, src: RegisterLike, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst != src``, compared on 32 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JNE | Source.X, dst, src, offset, 0, reference=reference)


def jsgt_imm(dst: RegisterLike, imm: int, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst > (signed) imm``, compared on 64 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JSGT | Source.K, dst, R0, offset, imm, reference=reference)


def jsgt_reg(dst: RegisterLike, src: RegisterLike, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst > (signed) src``, compared on 64 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JSGT | Source.X, dst, src, offset, 0, reference=reference)


def jsgt32_imm(dst: RegisterLike, imm: int, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst > (signed) imm``, compared on 32 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JSGT | Source.K, dst, R0, offset, imm, reference=reference)


def jsgt32_reg(dst: RegisterLike, src: RegisterLike, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst > (signed) src``, compared on 32 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JSGT | Source.X, dst, src, offset, 0, reference=reference)


def jsge_imm(dst: RegisterLike, imm: int, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst >= (signed) imm``, compared on 64 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JSGE | Source.K, dst, R0, offset, imm, reference=reference)


def jsge_reg(dst: RegisterLike, src: RegisterLike, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst >= (signed) src``, compared on 64 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JSGE | Source.X, dst, src, offset, 0, reference=reference)


def jsge32_imm(dst: RegisterLike, imm: int, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst >= (signed) imm``, compared on 32 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JSGE | Source.K, dst, R0, offset, imm, reference=reference)


def jsge32_reg(dst: RegisterLike, src: RegisterLike, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst >= (signed) src``, compared on 32 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JSGE | Source.X, dst, src, offset, 0, reference=reference)


def jlt_imm(dst: RegisterLike, imm: int, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst < (unsigned) imm``, compared on 64 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JLT | Source.K, dst, R0, offset, imm, reference=reference)


def jlt_reg(dst: RegisterLike, src: RegisterLike, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst < (unsigned) src``, compared on 64 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JLT | Source.X, dst, src, offset, 0, reference=reference)


def jlt32_imm(dst: RegisterLike, imm: int, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst < (unsigned) imm``, compared on 32 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JLT | Source.K, dst, R0, offset, imm, reference=reference)


def jlt32_reg(dst: RegisterLike, src: RegisterLike, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst < (unsigned) src``, compared on 32 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JLT | Source.X, dst, src, offset, 0, reference=reference)


def jle_imm(dst: RegisterLike, imm: int, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst <= (unsigned) imm``, compared on 64 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JLE | Source.K, dst, R0, offset, imm, reference=reference)


def jle_reg(dst: RegisterLike, src: RegisterLike, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst <= (unsigned) src``, compared on 64 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JLE | Source.X, dst, src, offset, 0, reference=reference)


def jle32_imm(dst: RegisterLike, imm: int, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst <= (unsigned) imm``, compared on 32 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JLE | Source.K, dst, R0, offset, imm, reference=reference)


def jle32_reg(dst: RegisterLike, src: RegisterLike, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst <= (unsigned) src``, compared on 32 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JLE | Source.X, dst, src, offset, 0, reference=reference)


def jslt_imm(dst: RegisterLike, imm: int, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst < (signed) imm``, compared on 64 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JSLT | Source.K, dst, R0, offset, imm, reference=reference)


def jslt_reg(dst: RegisterLike, src: RegisterLike, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst < (signed) src``, compared on 64 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JSLT | Source.X, dst, src, offset, 0, reference=reference)


def jslt32_imm(dst: RegisterLike, imm: int, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst < (signed) imm``, compared on 32 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JSLT | Source.K, dst, R0, offset, imm, reference=reference)


def jslt32_reg(dst: RegisterLike, src: RegisterLike, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst < (signed) src``, compared on 32 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JSLT | Source.X, dst, src, offset, 0, reference=reference)


def jsle_imm(dst: RegisterLike, imm: int, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst <= (signed) imm``, compared on 64 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JSLE | Source.K, dst, R0, offset, imm, reference=reference)


def jsle_reg(dst: RegisterLike, src: RegisterLike, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst <= (signed) src``, compared on 64 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JSLE | Source.X, dst, src, offset, 0, reference=reference)


def jsle32_imm(dst: RegisterLike, imm: int, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst <= (signed) imm``, compared on 32 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JSLE | Source.K, dst, R0, offset, imm, reference=reference)


def jsle32_reg(dst: RegisterLike, src: RegisterLike, target: Target) -> Instruction:
    """Jump to ``target`` (label or offset) if ``dst <= (signed) src``, compared on 32 bits."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JSLE | Source.X, dst, src, offset, 0, reference=reference)


def ja(target: Target) -> Instruction:
    """``goto target``: unconditional jump with a 16-bit offset."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JA, R0, R0, offset, 0, reference=reference)


def gotol(target: Target) -> Instruction:
    """``gotol target``: unconditional jump with a 32-bit offset (ISA v4)."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP32 | JumpOp.JA, R0, R0, 0, offset, reference=reference)


def may_goto(target: Target) -> Instruction:
    """``may_goto target``: jump once the kernel's loop budget is exhausted (kernel 6.9)."""
    offset, reference = _split_target(target)
    return Instruction(Class.JMP | JumpOp.JCOND, R0, R0, offset, 0, reference=reference)


# -- calls -------------------------------------------------------------------------


def call(helper: Union[int, str]) -> Instruction:
    """``call helper``: call a kernel helper by id (``Helper``/``FN_*``/int) or by
    name (``"map_lookup_elem"`` or ``"bpf_map_lookup_elem"``).

    BPF functions are called with :func:`call_func`, kfuncs with :func:`call_kfunc`.
    """
    if isinstance(helper, str):
        key = helper[4:] if helper.startswith("bpf_") else helper
        if key not in HELPER_IDS:
            raise InvalidInstructionError(f"unknown helper {helper!r}")
        helper = HELPER_IDS[key]
    if not isinstance(helper, int) or isinstance(helper, bool) or helper < 0:
        raise InvalidInstructionError(f"helper must be a helper id or name, not {helper!r}")
    return Instruction(Class.JMP | JumpOp.CALL, R0, R0, 0, helper)


def call_func(name: str) -> Instruction:
    """``call name``: call the BPF function defined by the label ``name``
    (``src = BPF_PSEUDO_CALL``; the offset is filled in on encode)."""
    if not isinstance(name, str):
        raise InvalidInstructionError(f"function name must be a str, not {name!r}")
    # -1 is what clang emits for a not-yet-relocated call.
    return Instruction(Class.JMP | JumpOp.CALL, R0, Pseudo.CALL, 0, -1, reference=name)


def call_kfunc(kfunc: Union[str, int], *, btf_fd_index: int = 0) -> Instruction:
    """``call kfunc``: call a kernel function (``src = BPF_PSEUDO_KFUNC_CALL``).

    ``kfunc`` is its BTF id, or its name to be resolved to an id by the loader
    (kept as ``reference``).  ``btf_fd_index`` selects a module's BTF from the
    program's fd_array (0 for vmlinux).
    """
    if isinstance(kfunc, str):
        return Instruction(Class.JMP | JumpOp.CALL, R0, Pseudo.KFUNC_CALL, btf_fd_index, 0, reference=kfunc)
    return Instruction(Class.JMP | JumpOp.CALL, R0, Pseudo.KFUNC_CALL, btf_fd_index, kfunc)


def callx(dst: RegisterLike) -> Instruction:
    """``callx dst``: indirect call through a register (emitted by LLVM; not
    accepted by every kernel)."""
    return Instruction(Class.JMP | JumpOp.CALL | Source.X, dst)


def exit() -> Instruction:
    """``exit``: return ``r0`` to the caller."""
    return Instruction(Class.JMP | JumpOp.EXIT)


# -- 64-bit immediates ----------------------------------------------------------------


def load_imm64(dst: RegisterLike, value: int) -> Instruction:
    """``dst = value ll``: load a 64-bit constant (the 16-byte ``lddw``)."""
    return Instruction(LDDW, dst, R0, 0, value)


def _map_source(map_: Any) -> Tuple[int, Optional[str]]:
    """(fd, reference) for a map given by name, fd, or object with ``.fd``."""
    if isinstance(map_, str):
        return 0, map_
    if isinstance(map_, int) and not isinstance(map_, bool):
        return map_, None
    fd = getattr(map_, "fd", None)
    if isinstance(fd, int):
        return fd, getattr(map_, "name", None) or None
    raise InvalidInstructionError(f"map must be a name, an fd or an object with .fd, not {map_!r}")


def load_map_ptr(dst: RegisterLike, map_: Any) -> Instruction:
    """``dst = map``: load a pointer to a map (``src = BPF_PSEUDO_MAP_FD``).

    ``map_`` is a map name (resolved later by
    :meth:`Instructions.resolve_maps`), an fd, or an object with ``fd``.
    """
    fd, reference = _map_source(map_)
    return Instruction(LDDW, dst, Pseudo.MAP_FD, 0, fd, reference=reference)


def load_map_value(dst: RegisterLike, map_: Any, offset: int = 0) -> Instruction:
    """``dst = &map.value[offset]``: load the address of a byte in the value of a
    single-element array map (``src = BPF_PSEUDO_MAP_VALUE``)."""
    fd, reference = _map_source(map_)
    if not isinstance(offset, int) or not 0 <= offset < (1 << 32):
        raise InvalidInstructionError(f"map value offset must be 0..2**32-1, not {offset!r}")
    if not 0 <= fd < (1 << 32):
        raise InvalidInstructionError(f"map fd {fd} out of range")
    return Instruction(LDDW, dst, Pseudo.MAP_VALUE, 0, (offset << 32) | fd, reference=reference)


def load_func_ptr(dst: RegisterLike, name: str) -> Instruction:
    """``dst = &name``: load the address of the BPF function labelled ``name``
    (``src = BPF_PSEUDO_FUNC``), e.g. a ``bpf_loop`` callback."""
    return Instruction(LDDW, dst, Pseudo.FUNC, 0, 0, reference=name)


# -- memory ------------------------------------------------------------------------------


def load_mem(dst: RegisterLike, src: RegisterLike, offset: int, size: int) -> Instruction:
    """``dst = *(u<size*8> *)(src + offset)``, zero-extending."""
    return Instruction(Class.LDX | Mode.MEM | _size(size), dst, src, offset, 0)


def load_mem_sx(dst: RegisterLike, src: RegisterLike, offset: int, size: int) -> Instruction:
    """``dst = *(s<size*8> *)(src + offset)``, sign-extending; size 1, 2 or 4 (ISA v4)."""
    if size == 8:
        raise InvalidInstructionError("a sign-extending load of 8 bytes does not exist; use load_mem")
    return Instruction(Class.LDX | Mode.MEMSX | _size(size), dst, src, offset, 0)


def store_mem(dst: RegisterLike, offset: int, src: RegisterLike, size: int) -> Instruction:
    """``*(u<size*8> *)(dst + offset) = src``."""
    return Instruction(Class.STX | Mode.MEM | _size(size), dst, src, offset, 0)


def store_imm(dst: RegisterLike, offset: int, imm: int, size: int) -> Instruction:
    """``*(u<size*8> *)(dst + offset) = imm``."""
    return Instruction(Class.ST | Mode.MEM | _size(size), dst, R0, offset, imm)


def load_abs(offset: int, size: int) -> Instruction:
    """``r0 = *(u<size*8> *)skb[offset]``: legacy packet load (socket filters); size 1, 2 or 4."""
    if size == 8:
        raise InvalidInstructionError("legacy packet loads are 1, 2 or 4 bytes")
    return Instruction(Class.LD | Mode.ABS | _size(size), R0, R0, 0, offset)


def load_ind(src: RegisterLike, offset: int, size: int) -> Instruction:
    """``r0 = *(u<size*8> *)skb[src + offset]``: legacy packet load; size 1, 2 or 4."""
    if size == 8:
        raise InvalidInstructionError("legacy packet loads are 1, 2 or 4 bytes")
    return Instruction(Class.LD | Mode.IND | _size(size), R0, src, 0, offset)


# -- atomics -------------------------------------------------------------------------------


def _atomic(op: int, dst: RegisterLike, src: RegisterLike, offset: int, size: int) -> Instruction:
    if size not in (4, 8):
        raise InvalidInstructionError(f"atomic operations are 4 or 8 bytes, not {size!r}")
    return Instruction(Class.STX | Mode.ATOMIC | _size(size), dst, src, offset, op)


def atomic_add(
    dst: RegisterLike, src: RegisterLike, offset: int = 0, size: int = 8, *, fetch: bool = False
) -> Instruction:
    """``lock *(dst + offset) += src``; with ``fetch`` the old value lands in ``src``."""
    return _atomic(AtomicOp.ADD | (AtomicOp.FETCH if fetch else 0), dst, src, offset, size)


def atomic_or(
    dst: RegisterLike, src: RegisterLike, offset: int = 0, size: int = 8, *, fetch: bool = False
) -> Instruction:
    """``lock *(dst + offset) |= src``; with ``fetch`` the old value lands in ``src``."""
    return _atomic(AtomicOp.OR | (AtomicOp.FETCH if fetch else 0), dst, src, offset, size)


def atomic_and(
    dst: RegisterLike, src: RegisterLike, offset: int = 0, size: int = 8, *, fetch: bool = False
) -> Instruction:
    """``lock *(dst + offset) &= src``; with ``fetch`` the old value lands in ``src``."""
    return _atomic(AtomicOp.AND | (AtomicOp.FETCH if fetch else 0), dst, src, offset, size)


def atomic_xor(
    dst: RegisterLike, src: RegisterLike, offset: int = 0, size: int = 8, *, fetch: bool = False
) -> Instruction:
    """``lock *(dst + offset) ^= src``; with ``fetch`` the old value lands in ``src``."""
    return _atomic(AtomicOp.XOR | (AtomicOp.FETCH if fetch else 0), dst, src, offset, size)


def atomic_xchg(dst: RegisterLike, src: RegisterLike, offset: int = 0, size: int = 8) -> Instruction:
    """``src = xchg(dst + offset, src)``: atomic exchange."""
    return _atomic(AtomicOp.XCHG, dst, src, offset, size)


def atomic_cmpxchg(dst: RegisterLike, src: RegisterLike, offset: int = 0, size: int = 8) -> Instruction:
    """``r0 = cmpxchg(dst + offset, r0, src)``: store ``src`` if the memory equals
    ``r0``; ``r0`` receives the old value either way."""
    return _atomic(AtomicOp.CMPXCHG, dst, src, offset, size)
