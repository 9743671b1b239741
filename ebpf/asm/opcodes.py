"""Opcode fields of the eBPF instruction set.

An opcode byte packs a 3-bit class (low bits) with class-specific fields:

* load/store classes:  ``mode (3 bits) | size (2 bits) | class``
* ALU and jump classes: ``operation (4 bits) | source (1 bit) | class``

The names are the kernel's (``BPF_ADD``, ``BPF_JEQ``, ...), grouped into plain
namespaces of ``int`` constants rather than enums to keep import cheap; the
values are what goes on the wire.  :data:`VALID_OPCODES` is the set of opcode
bytes the kernel defines; anything else is rejected on decode.
"""

from __future__ import annotations

from typing import FrozenSet

__all__ = [
    "Class",
    "Size",
    "Mode",
    "Source",
    "ALUOp",
    "JumpOp",
    "AtomicOp",
    "Pseudo",
    "VALID_OPCODES",
    "LDDW",
    "SIZE_BYTES",
    "size_from_bytes",
]

CLASS_MASK = 0x07
SIZE_MASK = 0x18
MODE_MASK = 0xE0
SOURCE_MASK = 0x08
OP_MASK = 0xF0


class Class:
    """Instruction classes (``BPF_LD`` ... ``BPF_ALU64``)."""

    LD = 0x00
    LDX = 0x01
    ST = 0x02
    STX = 0x03
    ALU = 0x04
    JMP = 0x05
    JMP32 = 0x06
    ALU64 = 0x07


class Size:
    """Access sizes of load/store opcodes."""

    W = 0x00  # 4 bytes
    H = 0x08  # 2 bytes
    B = 0x10  # 1 byte
    DW = 0x18  # 8 bytes


SIZE_BYTES = {Size.W: 4, Size.H: 2, Size.B: 1, Size.DW: 8}
_SIZE_FROM_BYTES = {4: Size.W, 2: Size.H, 1: Size.B, 8: Size.DW}


def size_from_bytes(nbytes: int) -> int:
    """The opcode size field for an access of ``nbytes`` (1, 2, 4 or 8)."""
    try:
        return _SIZE_FROM_BYTES[nbytes]
    except (KeyError, TypeError):
        raise ValueError(f"access size must be 1, 2, 4 or 8 bytes, not {nbytes!r}") from None


class Mode:
    """Addressing modes of load/store opcodes."""

    IMM = 0x00  # only lddw (with size DW)
    ABS = 0x20  # legacy packet access
    IND = 0x40  # legacy packet access
    MEM = 0x60
    MEMSX = 0x80  # sign-extending load (ISA v4)
    ATOMIC = 0xC0


class Source:
    """Operand source of ALU and jump opcodes (also byte order of ``BPF_END``)."""

    K = 0x00  # 32-bit immediate
    X = 0x08  # source register
    # For BPF_END: target byte order (ALU class); ALU64 | END | K is bswap.
    TO_LE = 0x00
    TO_BE = 0x08


class ALUOp:
    """ALU operations (for both ``ALU`` and ``ALU64`` classes)."""

    ADD = 0x00
    SUB = 0x10
    MUL = 0x20
    DIV = 0x30  # offset 1: signed (ISA v4)
    OR = 0x40
    AND = 0x50
    LSH = 0x60
    RSH = 0x70
    NEG = 0x80
    MOD = 0x90  # offset 1: signed (ISA v4)
    XOR = 0xA0
    MOV = 0xB0  # offset 8/16/32: sign-extending move (ISA v4)
    ARSH = 0xC0
    END = 0xD0  # byte swap


class JumpOp:
    """Jump operations (``JMP`` class; ``JMP32`` has the conditional ones and JA)."""

    JA = 0x00  # in JMP32: "gotol", 32-bit offset in imm (ISA v4)
    JEQ = 0x10
    JGT = 0x20
    JGE = 0x30
    JSET = 0x40
    JNE = 0x50
    JSGT = 0x60
    JSGE = 0x70
    CALL = 0x80
    EXIT = 0x90
    JLT = 0xA0
    JLE = 0xB0
    JSLT = 0xC0
    JSLE = 0xD0
    JCOND = 0xE0  # may_goto


CONDITIONAL_JUMPS = (
    JumpOp.JEQ,
    JumpOp.JGT,
    JumpOp.JGE,
    JumpOp.JSET,
    JumpOp.JNE,
    JumpOp.JSGT,
    JumpOp.JSGE,
    JumpOp.JLT,
    JumpOp.JLE,
    JumpOp.JSLT,
    JumpOp.JSLE,
)


class AtomicOp:
    """Values of the immediate of ``STX | ATOMIC`` instructions."""

    ADD = 0x00
    OR = 0x40
    AND = 0x50
    XOR = 0xA0
    FETCH = 0x01  # flag: also load the old value into the source register
    XCHG = 0xE0 | 0x01
    CMPXCHG = 0xF0 | 0x01


VALID_ATOMIC_OPS = frozenset(
    {
        AtomicOp.ADD,
        AtomicOp.OR,
        AtomicOp.AND,
        AtomicOp.XOR,
        AtomicOp.ADD | AtomicOp.FETCH,
        AtomicOp.OR | AtomicOp.FETCH,
        AtomicOp.AND | AtomicOp.FETCH,
        AtomicOp.XOR | AtomicOp.FETCH,
        AtomicOp.XCHG,
        AtomicOp.CMPXCHG,
    }
)


class Pseudo:
    """Values of the source register field with special meaning.

    For ``lddw``: what the 64-bit immediate refers to.  For ``call``: what
    kind of function is called (0 is a kernel helper).
    """

    MAP_FD = 1  # lddw: imm is a map fd
    MAP_VALUE = 2  # lddw: imm is a map fd, next imm an offset into its value
    BTF_ID = 3  # lddw: imm is a BTF id of a kernel variable
    FUNC = 4  # lddw: imm is the relative offset of a BPF function
    MAP_IDX = 5  # lddw: imm is an index into the fd_array
    MAP_IDX_VALUE = 6  # lddw: like MAP_VALUE, with an fd_array index
    CALL = 1  # call: imm is the relative offset of a BPF function
    KFUNC_CALL = 2  # call: imm is the BTF id of a kernel function


LDDW = Class.LD | Mode.IMM | Size.DW  # 0x18, the only 16-byte instruction


def _valid_opcodes() -> FrozenSet[int]:
    ops = {LDDW}
    for size in (Size.W, Size.H, Size.B):
        ops.add(Class.LD | Mode.ABS | size)
        ops.add(Class.LD | Mode.IND | size)
        ops.add(Class.LDX | Mode.MEMSX | size)
    for size in (Size.W, Size.H, Size.B, Size.DW):
        ops.add(Class.LDX | Mode.MEM | size)
        ops.add(Class.ST | Mode.MEM | size)
        ops.add(Class.STX | Mode.MEM | size)
    ops.add(Class.STX | Mode.ATOMIC | Size.W)
    ops.add(Class.STX | Mode.ATOMIC | Size.DW)
    for cls in (Class.ALU, Class.ALU64):
        for op in range(ALUOp.ADD, ALUOp.END + 1, 0x10):
            if op in (ALUOp.NEG, ALUOp.END):
                continue
            ops.add(cls | op | Source.K)
            ops.add(cls | op | Source.X)
        ops.add(cls | ALUOp.NEG | Source.K)
    ops.add(Class.ALU | ALUOp.END | Source.TO_LE)
    ops.add(Class.ALU | ALUOp.END | Source.TO_BE)
    ops.add(Class.ALU64 | ALUOp.END | Source.K)  # bswap (ISA v4)
    for op in CONDITIONAL_JUMPS:
        for cls in (Class.JMP, Class.JMP32):
            ops.add(cls | op | Source.K)
            ops.add(cls | op | Source.X)
    ops.add(Class.JMP | JumpOp.JA | Source.K)
    ops.add(Class.JMP32 | JumpOp.JA | Source.K)  # gotol (ISA v4)
    ops.add(Class.JMP | JumpOp.CALL | Source.K)
    ops.add(Class.JMP | JumpOp.CALL | Source.X)  # callx
    ops.add(Class.JMP | JumpOp.EXIT | Source.K)
    ops.add(Class.JMP | JumpOp.JCOND | Source.K)  # may_goto
    return frozenset(ops)


VALID_OPCODES = _valid_opcodes()
