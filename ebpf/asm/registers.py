"""eBPF registers."""

from __future__ import annotations

import enum

__all__ = ["Register", "R0", "R1", "R2", "R3", "R4", "R5", "R6", "R7", "R8", "R9", "R10", "RFP"]


class Register(enum.IntEnum):
    """One of the eleven 64-bit registers.

    R0 holds return values, R1-R5 arguments (clobbered by calls), R6-R9 are
    callee saved, R10 is the read-only frame pointer (alias ``RFP``).
    """

    R0 = 0
    R1 = 1
    R2 = 2
    R3 = 3
    R4 = 4
    R5 = 5
    R6 = 6
    R7 = 7
    R8 = 8
    R9 = 9
    R10 = 10

    def __str__(self) -> str:
        return f"r{self.value}"

    def __format__(self, spec: str) -> str:
        # Before 3.12 an IntEnum with its own __str__ formats through str(),
        # so f"{reg:d}" raised; format as the number, as 3.12+ does.
        return format(self.value, spec) if spec else str(self)


R0 = Register.R0
R1 = Register.R1
R2 = Register.R2
R3 = Register.R3
R4 = Register.R4
R5 = Register.R5
R6 = Register.R6
R7 = Register.R7
R8 = Register.R8
R9 = Register.R9
R10 = Register.R10
RFP = Register.R10
