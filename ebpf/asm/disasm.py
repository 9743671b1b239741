"""Disassembly of single instructions in the syntax of ``llvm-objdump -d``.

The text is what LLVM's BPF disassembler prints (as of LLVM 14, the version
Debian ships): decimal numbers, ``r``/``w`` register names, C-like operators.
Where LLVM 14 has no syntax (ISA v4 instructions, 32-bit atomics other than
``add``, ``may_goto``) the syntax of newer LLVM versions is used, still with
decimal numbers.  A symbolic ``reference`` is appended as `` <name>``, the way
objdump annotates jump targets.
"""

from __future__ import annotations

from .instruction import Instruction
from .opcodes import (
    CLASS_MASK,
    LDDW,
    MODE_MASK,
    OP_MASK,
    SIZE_BYTES,
    SIZE_MASK,
    SOURCE_MASK,
    ALUOp,
    AtomicOp,
    Class,
    JumpOp,
    Mode,
)

__all__ = ["format_instruction"]

_ALU_OPERATORS = {
    ALUOp.ADD: "+=",
    ALUOp.SUB: "-=",
    ALUOp.MUL: "*=",
    ALUOp.DIV: "/=",
    ALUOp.OR: "|=",
    ALUOp.AND: "&=",
    ALUOp.LSH: "<<=",
    ALUOp.RSH: ">>=",
    ALUOp.MOD: "%=",
    ALUOp.XOR: "^=",
    ALUOp.MOV: "=",
    ALUOp.ARSH: "s>>=",
}

_JUMP_OPERATORS = {
    JumpOp.JEQ: "==",
    JumpOp.JGT: ">",
    JumpOp.JGE: ">=",
    JumpOp.JSET: "&",
    JumpOp.JNE: "!=",
    JumpOp.JSGT: "s>",
    JumpOp.JSGE: "s>=",
    JumpOp.JLT: "<",
    JumpOp.JLE: "<=",
    JumpOp.JSLT: "s<",
    JumpOp.JSLE: "s<=",
}

_ATOMIC_OPERATORS = {AtomicOp.ADD: "+=", AtomicOp.OR: "|=", AtomicOp.AND: "&=", AtomicOp.XOR: "^="}
_ATOMIC_NAMES = {AtomicOp.ADD: "add", AtomicOp.OR: "or", AtomicOp.AND: "and", AtomicOp.XOR: "xor"}


def _mem(reg: int, offset: int) -> str:
    """``r1 + 4`` / ``r1 - 4``, the address part of a memory operand."""
    return f"r{reg:d} - {-offset}" if offset < 0 else f"r{reg:d} + {offset}"


def _rel(offset: int) -> str:
    """A relative jump offset, always signed as objdump prints it."""
    return f"-{-offset}" if offset < 0 else f"+{offset}"


def format_instruction(ins: Instruction) -> str:
    """Disassemble ``ins`` to one line of llvm-objdump syntax."""
    text = _format(ins)
    if ins.reference is not None:
        text += f" <{ins.reference}>"
    return text


def _format(ins: Instruction) -> str:
    cls = ins.opcode & CLASS_MASK
    if cls in (Class.ALU, Class.ALU64):
        return _format_alu(ins, cls)
    if cls in (Class.JMP, Class.JMP32):
        return _format_jump(ins, cls)
    return _format_load_store(ins, cls)


def _format_alu(ins: Instruction, cls: int) -> str:
    op = ins.opcode & OP_MASK
    prefix = "w" if cls == Class.ALU else "r"
    dst = f"{prefix}{ins.dst:d}"
    if op == ALUOp.END:
        if cls == Class.ALU64:
            kind = "bswap"
        else:
            kind = "be" if ins.opcode & SOURCE_MASK else "le"
        # LLVM names the 64-bit register even for the ALU-class encodings.
        return f"r{ins.dst:d} = {kind}{ins.constant} r{ins.dst:d}"
    if op == ALUOp.NEG:
        return f"{dst} = -{dst}"
    register_source = bool(ins.opcode & SOURCE_MASK)
    source = f"{prefix}{ins.src:d}" if register_source else str(ins.constant)
    operator = _ALU_OPERATORS[op]
    if op in (ALUOp.DIV, ALUOp.MOD) and ins.offset == 1:
        operator = "s" + operator
    if op == ALUOp.MOV and register_source and ins.offset:
        if cls == Class.ALU64 and ins.offset == 1:
            # Arena pointer cast (kernel 6.9): imm packs dst/src address spaces.
            spaces = f"{(ins.constant >> 16) & 0xFFFF}, {ins.constant & 0xFFFF}"
            return f"{dst} = addr_space_cast({prefix}{ins.src:d}, {spaces})"
        return f"{dst} = (s{ins.offset}){source}"
    return f"{dst} {operator} {source}"


def _format_jump(ins: Instruction, cls: int) -> str:
    op = ins.opcode & OP_MASK
    if cls == Class.JMP:
        if op == JumpOp.EXIT:
            return "exit"
        if op == JumpOp.CALL:
            if ins.opcode & SOURCE_MASK:
                return f"callx r{ins.dst:d}"
            return f"call {ins.constant}"
        if op == JumpOp.JA:
            return f"goto {_rel(ins.offset)}"
        if op == JumpOp.JCOND:
            return f"may_goto {_rel(ins.offset)}"
    elif op == JumpOp.JA:
        return f"gotol {_rel(ins.constant)}"
    prefix = "w" if cls == Class.JMP32 else "r"
    source = f"{prefix}{ins.src:d}" if ins.opcode & SOURCE_MASK else str(ins.constant)
    return f"if {prefix}{ins.dst:d} {_JUMP_OPERATORS[op]} {source} goto {_rel(ins.offset)}"


def _format_load_store(ins: Instruction, cls: int) -> str:
    mode = ins.opcode & MODE_MASK
    nbytes = SIZE_BYTES[ins.opcode & SIZE_MASK]
    bits = nbytes * 8
    if ins.opcode == LDDW:
        if ins.src == 0:
            return f"r{ins.dst:d} = {ins.constant} ll"
        text = f"ld_pseudo r{ins.dst:d}, {ins.src:d}, {ins.constant & 0xFFFFFFFF}"
        high = (ins.constant >> 32) & 0xFFFFFFFF
        # LLVM drops the upper word of a pseudo load; show it when it matters
        # (the value offset of a MAP_VALUE load).
        return f"{text}, {high}" if high else text
    if cls == Class.LD:
        if mode == Mode.ABS:
            return f"r0 = *(u{bits} *)skb[{ins.constant}]"
        # IND: LLVM prints only the register; the kernel also adds imm.
        index = f"r{ins.src:d}" if ins.constant == 0 else f"r{ins.src:d} + {ins.constant}"
        return f"r0 = *(u{bits} *)skb[{index}]"
    if cls == Class.LDX:
        kind = "s" if mode == Mode.MEMSX else "u"
        return f"r{ins.dst:d} = *({kind}{bits} *)({_mem(ins.src, ins.offset)})"
    if cls == Class.ST:
        return f"*(u{bits} *)({_mem(ins.dst, ins.offset)}) = {ins.constant}"
    if mode == Mode.MEM:
        return f"*(u{bits} *)({_mem(ins.dst, ins.offset)}) = r{ins.src:d}"
    return _format_atomic(ins, bits)


def _format_atomic(ins: Instruction, bits: int) -> str:
    address = _mem(ins.dst, ins.offset)
    op = ins.constant
    # LLVM's default (non-alu32) disassembler shows the 32-bit atomic add with
    # an r register; every other 32-bit atomic only exists in its alu32 syntax.
    w = "w" if bits == 32 else "r"
    if op == AtomicOp.ADD:
        return f"lock *(u{bits} *)({address}) += r{ins.src:d}"
    if op in _ATOMIC_OPERATORS:
        return f"lock *(u{bits} *)({address}) {_ATOMIC_OPERATORS[op]} {w}{ins.src:d}"
    if op == AtomicOp.XCHG:
        name = "xchg32_32" if bits == 32 else "xchg_64"
        return f"{w}{ins.src:d} = {name}({address}, {w}{ins.src:d})"
    if op == AtomicOp.CMPXCHG:
        name = "cmpxchg32_32" if bits == 32 else "cmpxchg_64"
        return f"{w}0 = {name}({address}, {w}0, {w}{ins.src:d})"
    base = op & ~AtomicOp.FETCH
    return f"{w}{ins.src:d} = atomic_fetch_{_ATOMIC_NAMES[base]}((u{bits} *)({address}), {w}{ins.src:d})"
