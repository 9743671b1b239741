"""Write, read and print eBPF instructions (pure Python, no kernel needed).

* :class:`Instruction` -- one instruction (``lddw`` included, as one);
  ``str()`` disassembles in the syntax of ``llvm-objdump``.
* :class:`Instructions` -- a program: a list with labels (``symbol``) and
  symbolic references to labels, BPF functions and maps (``reference``);
  :meth:`~Instructions.encode` / :meth:`~Instructions.decode` convert to and
  from the kernel's 8-byte format in either byte order;
  :meth:`~Instructions.resolve_maps` patches map fds in.
* Registers ``R0``..``R10`` (``RFP`` is ``R10``) and builders for the whole
  instruction set: ``mov_imm``, ``add32_reg``, ``load_mem``, ``atomic_add``,
  ``jeq_imm``, ``call``, ``load_map_ptr``, ``exit`` ... (see
  :mod:`ebpf.asm.builders`).
* Kernel helpers: :class:`Helper` (``Helper.map_lookup_elem``) and
  ``FN_MAP_LOOKUP_ELEM``-style constants, loaded on first use.

Example::

    from ebpf import asm
    prog = asm.Instructions([
        asm.mov_imm(asm.R0, 0),
        asm.jeq_imm(asm.R1, 0, "out"),
        asm.mov_imm(asm.R0, 1),
        asm.exit().with_symbol("out"),
    ])
    prog.encode()  # bytes for the kernel
"""

from __future__ import annotations

import importlib
import types
from typing import TYPE_CHECKING, Any, List

from . import builders as _builders
from .builders import *  # noqa: F403 - the builders are this package's API
from .errors import (
    AsmError,
    DuplicateSymbolError,
    InvalidInstructionError,
    InvalidOpcodeError,
    JumpOutOfRangeError,
    MissingMapError,
    TruncatedInstructionError,
    UnresolvedReferenceError,
)
from .instruction import INSTRUCTION_SIZE, Instruction
from .instructions import Instructions
from .opcodes import ALUOp, AtomicOp, Class, JumpOp, Mode, Pseudo, Size, Source
from .registers import R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10, RFP, Register

if TYPE_CHECKING:
    # Loaded on first use at run time (see __getattr__).
    from .helpers import Helper, helper_by_name

__all__: List[str] = [
    "Instruction",
    "Instructions",
    "INSTRUCTION_SIZE",
    "Register",
    "R0",
    "R1",
    "R2",
    "R3",
    "R4",
    "R5",
    "R6",
    "R7",
    "R8",
    "R9",
    "R10",
    "RFP",
    "Class",
    "Size",
    "Mode",
    "Source",
    "ALUOp",
    "JumpOp",
    "AtomicOp",
    "Pseudo",
    "Helper",
    "helper_by_name",
    "AsmError",
    "InvalidOpcodeError",
    "InvalidInstructionError",
    "TruncatedInstructionError",
    "UnresolvedReferenceError",
    "DuplicateSymbolError",
    "JumpOutOfRangeError",
    "MissingMapError",
]
__all__ += _builders.__all__


if TYPE_CHECKING:
    # What checkers see of the lazily made FN_* constants: each one is a Helper.
    def __getattr__(name: str) -> Helper: ...

else:

    def __getattr__(name: str) -> Any:
        # The helper enum is built on first use: it has ~200 members and creating
        # it would dominate the import time of this package.
        if name in ("Helper", "helper_by_name") or name.startswith("FN_"):
            helpers = importlib.import_module(".helpers", __name__)
            try:
                value = getattr(helpers, name)
            except AttributeError:
                raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
            globals()[name] = value
            return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> List[str]:
    from .helper_names import HELPER_NAMES

    # The API and its submodules, not this module's own imports (typing's
    # Any, importlib...), for shells and editors to complete.
    own = {n for n, v in globals().items()
           if n.startswith("__") or (isinstance(v, types.ModuleType) and v.__name__ == f"{__name__}.{n}")}
    return sorted(own | set(__all__) | {"FN_" + n.upper() for n in HELPER_NAMES})
