"""A single eBPF instruction and its 8-byte wire format.

On the wire an instruction is ``opcode:u8, regs:u8, offset:s16, imm:s32`` in
the program's byte order.  The register byte holds ``dst`` in the low nibble
and ``src`` in the high one on little-endian targets, the other way round on
big-endian ones.  ``lddw`` (``BPF_LD | BPF_IMM | BPF_DW``) takes two slots:
the second holds only the upper 32 bits of the constant, so it is one
:class:`Instruction` here with a 64-bit ``constant``.
"""

from __future__ import annotations

import struct
from typing import Any, Optional, Tuple

from .errors import InvalidInstructionError, InvalidOpcodeError, TruncatedInstructionError
from .opcodes import (
    CLASS_MASK,
    LDDW,
    MODE_MASK,
    OP_MASK,
    SIZE_BYTES,
    SIZE_MASK,
    SOURCE_MASK,
    VALID_ATOMIC_OPS,
    VALID_OPCODES,
    ALUOp,
    Class,
    JumpOp,
    Mode,
    Pseudo,
)
from .registers import Register

__all__ = ["Instruction", "INSTRUCTION_SIZE"]

INSTRUCTION_SIZE = 8  # bytes per slot

_STRUCTS = {"little": struct.Struct("<BBhi"), "big": struct.Struct(">BBhi")}
_REGISTERS = tuple(Register)


def word_struct(byteorder: str) -> struct.Struct:
    """The ``struct.Struct`` of one 8-byte slot in ``byteorder``."""
    try:
        return _STRUCTS[byteorder]
    except KeyError:
        raise ValueError(f"byteorder must be 'little' or 'big', not {byteorder!r}") from None


def _register(value: Any, field: str) -> Register:
    if isinstance(value, Register):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10:
        return _REGISTERS[value]
    raise InvalidInstructionError(f"{field} register must be 0..10, not {value!r}")


def _signed(value: Any, bits: int, field: str, *, allow_unsigned: bool) -> int:
    """Check ``value`` fits a ``bits``-wide field and return it as signed.

    Immediates accept their unsigned spelling too (``0xffffffff`` is ``-1`` in a
    32-bit field) because that is how constants are usually written.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInstructionError(f"{field} must be an int, not {type(value).__name__}")
    low = -(1 << (bits - 1))
    high = (1 << bits) if allow_unsigned else (1 << (bits - 1))
    if not low <= value < high:
        raise InvalidInstructionError(f"{field} {value} does not fit in {bits} bits")
    if value >= 1 << (bits - 1):
        value -= 1 << bits
    return int(value)


class Instruction:
    """One eBPF instruction; immutable (use :meth:`replace` and friends).

    ``opcode`` is the opcode byte, ``dst``/``src`` registers (``src`` doubles as
    the pseudo-source selector of ``lddw`` and ``call``), ``offset`` the signed
    16-bit offset and ``constant`` the immediate: signed 32-bit, or signed
    64-bit for ``lddw``.  Unsigned spellings are accepted and normalised.

    Two fields carry symbolic information that does not exist on the wire:

    * ``symbol``: a label defined at this instruction (a jump target or a
      function name);
    * ``reference``: a name this instruction refers to -- the label a jump
      goes to, the BPF function a ``call``/function-pointer ``lddw`` targets,
      the map a map-loading ``lddw`` loads, or the kfunc a kfunc call calls.
      Jumps and BPF-to-BPF calls with a reference get their offset computed
      by :meth:`Instructions.encode <ebpf.asm.Instructions.encode>`.

    ``str()`` disassembles in the syntax of ``llvm-objdump -d``.
    """

    __slots__ = ("opcode", "dst", "src", "offset", "constant", "symbol", "reference")

    opcode: int
    dst: Register
    src: Register
    offset: int
    constant: int
    symbol: Optional[str]
    reference: Optional[str]

    def __init__(
        self,
        opcode: int,
        dst: int = 0,
        src: int = 0,
        offset: int = 0,
        constant: int = 0,
        *,
        symbol: Optional[str] = None,
        reference: Optional[str] = None,
    ) -> None:
        if not isinstance(opcode, int) or opcode not in VALID_OPCODES:
            if isinstance(opcode, int) and 0 <= opcode <= 0xFF:
                raise InvalidOpcodeError(opcode)
            raise InvalidInstructionError(f"opcode must be a byte, not {opcode!r}")
        dst = _register(dst, "destination")
        src = _register(src, "source")
        offset = _signed(offset, 16, "offset", allow_unsigned=False)
        constant = _signed(constant, 64 if opcode == LDDW else 32, "constant", allow_unsigned=True)
        cls = opcode & CLASS_MASK
        if cls == Class.STX and opcode & MODE_MASK == Mode.ATOMIC and constant not in VALID_ATOMIC_OPS:
            raise InvalidInstructionError(f"unknown atomic operation {constant:#x}")
        if cls in (Class.ALU, Class.ALU64) and opcode & OP_MASK == ALUOp.END and constant not in (16, 32, 64):
            raise InvalidInstructionError(f"byte swap width must be 16, 32 or 64, not {constant}")
        for name in ("symbol", "reference"):
            value = symbol if name == "symbol" else reference
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidInstructionError(f"{name} must be a non-empty str or None, not {value!r}")
        set_ = object.__setattr__
        set_(self, "opcode", int(opcode))
        set_(self, "dst", dst)
        set_(self, "src", src)
        set_(self, "offset", offset)
        set_(self, "constant", constant)
        set_(self, "symbol", symbol)
        set_(self, "reference", reference)

    # -- immutability --------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Instruction is immutable; use .replace({name}=...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Instruction is immutable")

    def __reduce__(self) -> Tuple[Any, ...]:
        return (_rebuild, (self.opcode, self.dst, self.src, self.offset, self.constant, self.symbol, self.reference))

    def __copy__(self) -> "Instruction":
        return self

    def __deepcopy__(self, memo: Any) -> "Instruction":
        return self

    def replace(self, **changes: Any) -> "Instruction":
        """A copy with the given fields changed (validated like the constructor)."""
        fields = {name: getattr(self, name) for name in self.__slots__}
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"unknown Instruction fields: {', '.join(sorted(unknown))}")
        fields.update(changes)
        opcode = fields.pop("opcode")
        return Instruction(opcode, **fields)

    def with_symbol(self, symbol: Optional[str]) -> "Instruction":
        """A copy that defines the label ``symbol`` (``None`` removes it)."""
        return self.replace(symbol=symbol)

    def with_reference(self, reference: Optional[str]) -> "Instruction":
        """A copy that refers to ``reference`` (``None`` removes it)."""
        return self.replace(reference=reference)

    # -- comparison ------------------------------------------------------------

    def _key(self) -> Tuple[Any, ...]:
        return (self.opcode, self.dst, self.src, self.offset, self.constant, self.symbol, self.reference)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Instruction):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        parts = [
            f"opcode={self.opcode:#04x}",
            f"dst={self.dst.name}",
            f"src={self.src.name}",
            f"offset={self.offset}",
            f"constant={self.constant}",
        ]
        if self.symbol is not None:
            parts.append(f"symbol={self.symbol!r}")
        if self.reference is not None:
            parts.append(f"reference={self.reference!r}")
        return f"Instruction({', '.join(parts)})  # {self}"

    def __str__(self) -> str:
        from .disasm import format_instruction

        return format_instruction(self)

    # -- opcode fields -----------------------------------------------------------

    @property
    def cls(self) -> int:
        """The instruction class (a :class:`~ebpf.asm.opcodes.Class` value)."""
        return self.opcode & CLASS_MASK

    @property
    def mode(self) -> Optional[int]:
        """Addressing mode of a load/store, else ``None``."""
        return self.opcode & MODE_MASK if self.cls <= Class.STX else None

    @property
    def access_size(self) -> Optional[int]:
        """Bytes accessed by a load/store (1, 2, 4, 8), else ``None``."""
        return SIZE_BYTES[self.opcode & SIZE_MASK] if self.cls <= Class.STX else None

    @property
    def operation(self) -> Optional[int]:
        """The ALU or jump operation (``ALUOp``/``JumpOp`` value), else ``None``."""
        return self.opcode & OP_MASK if self.cls >= Class.ALU else None

    @property
    def uses_register_source(self) -> bool:
        """True for ALU/jump instructions whose operand is ``src`` (``BPF_X``)."""
        return self.cls >= Class.ALU and bool(self.opcode & SOURCE_MASK)

    @property
    def slots(self) -> int:
        """Number of 8-byte slots this instruction takes on the wire (1 or 2)."""
        return 2 if self.opcode == LDDW else 1

    # -- kinds -------------------------------------------------------------------

    @property
    def is_load_imm64(self) -> bool:
        """``lddw``: the 16-byte 64-bit constant load."""
        return self.opcode == LDDW

    @property
    def is_jump(self) -> bool:
        """A branch: ``goto``/``gotol``/``may_goto`` or a conditional jump (not call or exit)."""
        return self.cls in (Class.JMP, Class.JMP32) and self.opcode & OP_MASK not in (JumpOp.CALL, JumpOp.EXIT)

    @property
    def is_call(self) -> bool:
        """Any ``call`` (helper, BPF function, kfunc) or ``callx``."""
        return self.cls == Class.JMP and self.opcode & OP_MASK == JumpOp.CALL

    @property
    def is_helper_call(self) -> bool:
        """A call of a kernel helper by id."""
        return self.opcode == Class.JMP | JumpOp.CALL and self.src == 0

    @property
    def is_function_call(self) -> bool:
        """A BPF-to-BPF call (``src == BPF_PSEUDO_CALL``)."""
        return self.opcode == Class.JMP | JumpOp.CALL and self.src == Pseudo.CALL

    @property
    def is_kfunc_call(self) -> bool:
        """A call of a kernel function by BTF id (``src == BPF_PSEUDO_KFUNC_CALL``)."""
        return self.opcode == Class.JMP | JumpOp.CALL and self.src == Pseudo.KFUNC_CALL

    @property
    def is_exit(self) -> bool:
        """``exit``."""
        return self.opcode == Class.JMP | JumpOp.EXIT

    @property
    def is_map_load(self) -> bool:
        """An ``lddw`` of a map pointer or map value address (fd or fd_array index)."""
        return self.opcode == LDDW and self.src in (
            Pseudo.MAP_FD,
            Pseudo.MAP_VALUE,
            Pseudo.MAP_IDX,
            Pseudo.MAP_IDX_VALUE,
        )

    @property
    def is_function_pointer_load(self) -> bool:
        """An ``lddw`` of a BPF function's address (``src == BPF_PSEUDO_FUNC``)."""
        return self.opcode == LDDW and self.src == Pseudo.FUNC

    @property
    def map_fd(self) -> Optional[int]:
        """The map fd (or fd_array index) of a map load: the low 32 bits, else ``None``."""
        if not self.is_map_load:
            return None
        return self.constant & 0xFFFFFFFF

    @property
    def map_value_offset(self) -> Optional[int]:
        """Offset into the value of a ``MAP_VALUE`` load (the upper 32 bits), else ``None``."""
        if self.opcode != LDDW or self.src not in (Pseudo.MAP_VALUE, Pseudo.MAP_IDX_VALUE):
            return None
        return (self.constant >> 32) & 0xFFFFFFFF

    @property
    def helper(self) -> Any:
        """The :class:`~ebpf.asm.Helper` a helper call calls (``None`` otherwise,
        or the plain int for an id the table does not know)."""
        if not self.is_helper_call:
            return None
        from .helpers import Helper

        try:
            return Helper(self.constant)
        except ValueError:
            return self.constant

    # -- wire format -------------------------------------------------------------

    def encode(self, byteorder: str = "little") -> bytes:
        """The 8 (or, for ``lddw``, 16) bytes of this instruction.

        Symbolic references are not resolved here; see
        :meth:`Instructions.encode <ebpf.asm.Instructions.encode>`.
        """
        word = word_struct(byteorder)
        if byteorder == "little":
            regs = (self.src << 4) | self.dst
        else:
            regs = (self.dst << 4) | self.src
        if self.opcode != LDDW:
            return word.pack(self.opcode, regs, self.offset, self.constant)
        low = _signed(self.constant & 0xFFFFFFFF, 32, "constant", allow_unsigned=True)
        high = _signed((self.constant >> 32) & 0xFFFFFFFF, 32, "constant", allow_unsigned=True)
        return word.pack(self.opcode, regs, self.offset, low) + word.pack(0, 0, 0, high)

    @classmethod
    def decode(cls, data: bytes, byteorder: str = "little") -> "Instruction":
        """Decode exactly one instruction (8 bytes, or 16 for ``lddw``)."""
        word = word_struct(byteorder)
        if len(data) < INSTRUCTION_SIZE:
            raise TruncatedInstructionError(f"need 8 bytes, got {len(data)}")
        first = word.unpack_from(data, 0)
        second = None
        if first[0] == LDDW:
            if len(data) < 2 * INSTRUCTION_SIZE:
                raise TruncatedInstructionError("lddw lacks its second 8 bytes")
            second = word.unpack_from(data, INSTRUCTION_SIZE)
        expected = INSTRUCTION_SIZE * (2 if second is not None else 1)
        if len(data) != expected:
            raise InvalidInstructionError(f"expected {expected} bytes, got {len(data)}; use Instructions.decode")
        return from_words(first, second, byteorder == "little")


_Words = Tuple[int, int, int, int]  # one unpacked slot: (opcode, regs, off, imm)


def from_words(first: _Words, second: Optional[_Words], little: bool) -> Instruction:
    """Build an Instruction from unpacked slot tuples ``(opcode, regs, off, imm)``."""
    opcode, regs, offset, imm = first
    if opcode not in VALID_OPCODES:
        raise InvalidOpcodeError(opcode)
    if little:
        dst, src = regs & 0x0F, regs >> 4
    else:
        dst, src = regs >> 4, regs & 0x0F
    if opcode == LDDW:
        if second is None:
            raise TruncatedInstructionError("lddw lacks its second 8 bytes")
        if second[0] or second[1] or second[2]:
            # The kernel requires the second half to be all zero but for its
            # immediate; anything else cannot be represented (or loaded).
            raise InvalidInstructionError("second half of lddw has non-zero opcode, registers or offset")
        imm = ((second[3] & 0xFFFFFFFF) << 32) | (imm & 0xFFFFFFFF)
    return Instruction(opcode, dst, src, offset, imm)


def _rebuild(
    opcode: int, dst: int, src: int, offset: int, constant: int, symbol: Optional[str], reference: Optional[str]
) -> Instruction:
    return Instruction(opcode, dst, src, offset, constant, symbol=symbol, reference=reference)
