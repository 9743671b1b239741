"""A program: a list of instructions with labels and symbolic references."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, SupportsIndex, overload

from .errors import (
    AsmError,
    DuplicateSymbolError,
    InvalidInstructionError,
    JumpOutOfRangeError,
    MissingMapError,
    TruncatedInstructionError,
    UnresolvedReferenceError,
)
from .instruction import INSTRUCTION_SIZE, Instruction, from_words, word_struct
from .opcodes import LDDW, Class, JumpOp, Pseudo

__all__ = ["Instructions"]

_INT16 = (-(1 << 15), (1 << 15) - 1)
_INT32 = (-(1 << 31), (1 << 31) - 1)
_JA32 = Class.JMP32 | JumpOp.JA  # gotol: its offset lives in the immediate


def _uses_constant_as_offset(ins: Instruction) -> bool:
    """Whether a relative target of ``ins`` is encoded in ``constant`` (else ``offset``)."""
    return ins.opcode == _JA32 or ins.is_function_call or ins.is_function_pointer_load


def _is_local_reference(ins: Instruction) -> bool:
    """Whether ``ins`` refers to another instruction of the same program."""
    return ins.is_jump or ins.is_function_call or ins.is_function_pointer_load


class Instructions(List[Instruction]):
    """A program: a ``list`` of :class:`Instruction` with labels.

    An instruction's ``symbol`` defines a label there; jumps, BPF-to-BPF calls
    and function-pointer loads whose ``reference`` names a label get their
    relative offset filled in by :meth:`encode`.  Map loads refer to maps by
    name until :meth:`resolve_maps` patches in file descriptors.

    Indices are positions in this list; ``lddw`` counts as one instruction
    here but two 8-byte slots on the wire (see :meth:`raw_offsets`).
    """

    # -- list behaviour that should keep the type --------------------------------

    @overload
    def __getitem__(self, index: SupportsIndex) -> Instruction: ...

    @overload
    def __getitem__(self, index: slice) -> "Instructions": ...

    def __getitem__(self, index: Any) -> Any:
        result = super().__getitem__(index)
        return Instructions(result) if isinstance(index, slice) else result

    def __add__(self, other: Iterable[Instruction]) -> "Instructions":  # type: ignore[override]
        return Instructions(list(self) + list(other))

    def copy(self) -> "Instructions":
        """A shallow copy (instructions are immutable, so this is enough)."""
        return Instructions(self)

    def __repr__(self) -> str:
        return f"Instructions({list.__repr__(self)})"

    # -- wire format ---------------------------------------------------------------

    @classmethod
    def decode(cls, data: bytes, byteorder: str = "little", *, labels: bool = False) -> "Instructions":
        """Decode a program from the kernel's 8-byte instruction format.

        Jumps and calls keep their raw offsets.  With ``labels=True`` every
        local jump, BPF-to-BPF call and function-pointer load whose target
        lies inside ``data`` also gets a ``reference`` to a label defined on
        the target (named ``L<slot>``), so the program can be edited without
        breaking its branches.

        Raises :class:`~ebpf.asm.errors.TruncatedInstructionError` if ``data``
        is not a whole number of instructions, and other
        :class:`~ebpf.asm.errors.AsmError` subclasses for invalid instructions.
        """
        word = word_struct(byteorder)
        data = bytes(data)
        if len(data) % INSTRUCTION_SIZE:
            raise TruncatedInstructionError(f"program length {len(data)} is not a multiple of {INSTRUCTION_SIZE}")
        words = list(word.iter_unpack(data))
        little = byteorder == "little"
        program = cls()
        i = 0
        while i < len(words):
            first = words[i]
            second = None
            if first[0] == LDDW:
                if i + 1 >= len(words):
                    raise TruncatedInstructionError("lddw lacks its second 8 bytes", index=len(program))
                second = words[i + 1]
            try:
                program.append(from_words(first, second, little))
            except AsmError as err:
                # Say where: the instruction constructor cannot know.
                err.index = len(program)
                err.args = (f"instruction {len(program)} (byte offset {i * INSTRUCTION_SIZE}): {err}",)
                raise
            i += 2 if second is not None else 1
        if labels:
            program._synthesize_labels()
        return program

    def encode(self, byteorder: str = "little") -> bytes:
        """Encode to the kernel's format, resolving local references.

        Jumps, calls and function-pointer loads with a ``reference`` get the
        relative offset of the instruction carrying that ``symbol``.  Raises
        :class:`~ebpf.asm.errors.UnresolvedReferenceError` for a missing
        label, :class:`~ebpf.asm.errors.DuplicateSymbolError` for a label
        defined twice and :class:`~ebpf.asm.errors.JumpOutOfRangeError` when a
        jump does not fit its 16-bit offset (``gotol`` has 32 bits).
        Map references are left as they are; see :meth:`resolve_maps`.
        """
        word_struct(byteorder)  # validate early, even for an empty program
        return b"".join(ins.encode(byteorder) for ins in self._resolved())

    # -- symbols and references -------------------------------------------------------

    def raw_offsets(self) -> List[int]:
        """The 8-byte slot at which each instruction starts."""
        offsets = []
        slot = 0
        for ins in self:
            offsets.append(slot)
            slot += ins.slots
        return offsets

    def symbols(self) -> Dict[str, int]:
        """Label name -> index of the instruction defining it.

        Raises :class:`~ebpf.asm.errors.DuplicateSymbolError` if a label is defined twice.
        """
        found: Dict[str, int] = {}
        for index, ins in enumerate(self):
            if ins.symbol is None:
                continue
            if ins.symbol in found:
                raise DuplicateSymbolError(f"symbol {ins.symbol!r} defined twice", index=index)
            found[ins.symbol] = index
        return found

    def references(self) -> Dict[str, List[int]]:
        """Referenced name -> indices of the instructions referring to it."""
        found: Dict[str, List[int]] = {}
        for index, ins in enumerate(self):
            if ins.reference is not None:
                found.setdefault(ins.reference, []).append(index)
        return found

    def find_reference(self, name: str) -> List[int]:
        """Indices of the instructions that refer to ``name`` (empty if none)."""
        return [index for index, ins in enumerate(self) if ins.reference == name]

    def map_references(self) -> Dict[str, List[int]]:
        """Map name -> indices of the ``lddw`` instructions loading that map."""
        found: Dict[str, List[int]] = {}
        for index, ins in enumerate(self):
            if ins.reference is not None and ins.is_map_load:
                found.setdefault(ins.reference, []).append(index)
        return found

    def function_references(self) -> List[str]:
        """Names of BPF functions called (or whose address is taken) that are
        not defined in this program, in order of first use.

        A loader links those functions in before :meth:`encode`.
        """
        defined = {ins.symbol for ins in self if ins.symbol is not None}
        names: List[str] = []
        for ins in self:
            if (ins.is_function_call or ins.is_function_pointer_load) and ins.reference is not None:
                if ins.reference not in defined and ins.reference not in names:
                    names.append(ins.reference)
        return names

    def resolve_maps(self, maps: Mapping[str, Any], *, strict: bool = True) -> None:
        """Patch map file descriptors into map-loading ``lddw`` instructions.

        ``maps`` maps a map name to an ``int`` fd or to an object with an
        ``fd`` attribute (e.g. :class:`ebpf.Map`).  Every ``lddw`` with
        ``src`` ``BPF_PSEUDO_MAP_FD`` or ``BPF_PSEUDO_MAP_VALUE`` whose
        ``reference`` names a map gets that fd in its lower 32 bits; a
        ``MAP_VALUE`` load keeps its value offset in the upper 32 bits.
        Instructions are replaced in place (they are immutable) and keep
        their reference.

        Raises :class:`~ebpf.asm.errors.MissingMapError` for a referenced
        map absent from ``maps`` (unless ``strict`` is false, which skips it).
        """
        for index, ins in enumerate(self):
            if ins.reference is None or ins.opcode != LDDW or ins.src not in (Pseudo.MAP_FD, Pseudo.MAP_VALUE):
                continue
            if ins.reference not in maps:
                if strict:
                    raise MissingMapError(ins.reference, index=index)
                continue
            target = maps[ins.reference]
            fd = target if isinstance(target, int) else getattr(target, "fd", None)
            if not isinstance(fd, int) or isinstance(fd, bool) or not 0 <= fd < (1 << 31):
                raise InvalidInstructionError(
                    f"map {ins.reference!r}: fd must be a non-negative int, not {fd!r}", index=index
                )
            self[index] = ins.replace(constant=(ins.constant & ~0xFFFFFFFF) | fd)

    # -- disassembly ------------------------------------------------------------------

    def __str__(self) -> str:
        """One line per instruction, ``<slot>: <disassembly>``, labels on their own line.

        Local references are resolved first when possible so that the printed
        offsets are the ones :meth:`encode` would produce.
        """
        try:
            program: List[Instruction] = self._resolved()
        except AsmError:
            program = list(self)
        lines = []
        for slot, ins in zip(self.raw_offsets(), program):
            if ins.symbol is not None:
                lines.append(f"{ins.symbol}:")
            lines.append(f"{slot:>8}:\t{ins}")
        return "\n".join(lines)

    # -- internals ----------------------------------------------------------------------

    def _resolved(self) -> List[Instruction]:
        """A copy with relative offsets of local references filled in."""
        symbols = self.symbols()
        offsets = self.raw_offsets()
        out: List[Instruction] = []
        for index, ins in enumerate(self):
            if ins.reference is None or not _is_local_reference(ins):
                out.append(ins)
                continue
            target = symbols.get(ins.reference)
            if target is None:
                raise UnresolvedReferenceError(ins.reference, index=index)
            delta = offsets[target] - offsets[index] - 1
            if _uses_constant_as_offset(ins):
                if not _INT32[0] <= delta <= _INT32[1]:
                    raise JumpOutOfRangeError(f"target {ins.reference!r} is {delta} slots away", index=index)
                out.append(ins if ins.constant == delta else ins.replace(constant=delta))
            else:
                if not _INT16[0] <= delta <= _INT16[1]:
                    raise JumpOutOfRangeError(
                        f"target {ins.reference!r} is {delta} slots away, beyond a 16-bit offset (use gotol)",
                        index=index,
                    )
                out.append(ins if ins.offset == delta else ins.replace(offset=delta))
        return out

    def _synthesize_labels(self) -> None:
        """Give every in-range local target a label and its sources a reference."""
        offsets = self.raw_offsets()
        index_of_slot = {slot: index for index, slot in enumerate(offsets)}
        targets: Dict[int, int] = {}  # source index -> target index
        for index, ins in enumerate(self):
            if not _is_local_reference(ins) or ins.reference is not None:
                continue
            delta = ins.constant if _uses_constant_as_offset(ins) else ins.offset
            target = index_of_slot.get(offsets[index] + 1 + delta)
            if target is not None:
                targets[index] = target
        names: Dict[int, str] = {}
        for target in sorted(set(targets.values())):
            existing = self[target].symbol
            names[target] = existing if existing is not None else f"L{offsets[target]}"
            if existing is None:
                self[target] = self[target].with_symbol(names[target])
        for index, target in targets.items():
            self[index] = self[index].with_reference(names[target])
