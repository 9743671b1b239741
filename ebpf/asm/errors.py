"""Errors raised by :mod:`ebpf.asm`.

All derive from :class:`AsmError`, itself an
:class:`ebpf.errors.InvalidObjectError` (so both an ``EBPFError`` and a
``ValueError``): bad instructions are bad input, and callers that already catch
``ValueError`` keep working.
"""

from __future__ import annotations

from typing import Optional

from ..errors import InvalidObjectError

__all__ = [
    "AsmError",
    "InvalidOpcodeError",
    "InvalidInstructionError",
    "TruncatedInstructionError",
    "UnresolvedReferenceError",
    "DuplicateSymbolError",
    "JumpOutOfRangeError",
    "MissingMapError",
]


class AsmError(InvalidObjectError):
    """Base class of the errors of :mod:`ebpf.asm`.

    ``index`` is the position of the offending instruction in its program
    (counted in :class:`~ebpf.asm.Instruction` objects, not 8-byte slots),
    where known.
    """

    def __init__(self, message: str, *, index: Optional[int] = None) -> None:
        if index is not None:
            message = f"instruction {index}: {message}"
        super().__init__(message)
        self.index = index


class InvalidOpcodeError(AsmError):
    """An opcode byte the kernel's instruction set does not define."""

    def __init__(self, opcode: int, *, index: Optional[int] = None) -> None:
        super().__init__(f"unknown opcode {opcode:#04x}", index=index)
        self.opcode = opcode


class InvalidInstructionError(AsmError):
    """A known opcode whose other fields are out of range or inconsistent."""


class TruncatedInstructionError(AsmError):
    """The byte stream ends inside an instruction: its length is not a multiple
    of 8, or a 16-byte ``lddw`` lacks its second half."""


class UnresolvedReferenceError(AsmError):
    """A jump or call refers to a label or function that is not defined."""

    def __init__(self, reference: str, *, index: Optional[int] = None) -> None:
        super().__init__(f"reference to undefined symbol {reference!r}", index=index)
        self.reference = reference


class DuplicateSymbolError(AsmError):
    """The same label is defined on two instructions."""


class JumpOutOfRangeError(AsmError):
    """A jump target is too far away for the instruction's offset field."""


class MissingMapError(AsmError):
    """An instruction refers to a map absent from the mapping used to resolve it."""

    def __init__(self, name: str, *, index: Optional[int] = None) -> None:
        super().__init__(f"reference to missing map {name!r}", index=index)
        self.name = name
