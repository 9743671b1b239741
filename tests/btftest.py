"""Helpers for the BTF tests: raw BTF written record by record (for BTF no
Builder would make), and a CPU-time budget that turns a hang into a failure.

>>> b = RawBuilder()
>>> i = b.int("int", 4, signed=True)
>>> p = b.ptr(0)
>>> b.patch(p, type=p)           # a pointer to itself
>>> blob = b.blob()
"""

from __future__ import annotations

import signal
import struct
from contextlib import contextmanager
from typing import Dict, Iterator, List, Sequence, Tuple

INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, DATASEC = 9, 10, 11, 12, 13, 14, 15
FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = 16, 17, 18, 19


class RawBuilder:
    def __init__(self, byte_order: str = "<") -> None:
        self.e = byte_order
        self.records: List[List[int]] = []
        self.strings = bytearray(b"\0")
        self._offsets: Dict[str, int] = {"": 0}

    def name(self, s: str) -> int:
        if s not in self._offsets:
            self._offsets[s] = len(self.strings)
            self.strings += s.encode() + b"\0"
        return self._offsets[s]

    def add(self, kind: int, name: str = "", a: int = 0, extra: Sequence[int] = (), vlen: int = 0,
            kflag: bool = False) -> int:
        self.records.append([self.name(name), (int(kflag) << 31) | (kind << 24) | vlen, a, *extra])
        return len(self.records)

    # Shorthands; each returns the new type id.
    def int(self, name: str, size: int, signed: bool = False) -> int:
        return self.add(INT, name, size, [((1 if signed else 0) << 24) | size * 8])

    def ptr(self, target: int) -> int:
        return self.add(PTR, "", target)

    def ref(self, kind: int, target: int, name: str = "") -> int:
        return self.add(kind, name, target)

    def array(self, elem: int, index: int, n: int) -> int:
        return self.add(ARRAY, "", 0, [elem, index, n])

    def struct(self, name: str, size: int, members: Sequence[Tuple[str, int, int]], kind: int = STRUCT) -> int:
        words: List[int] = []
        for mname, mtype, off in members:
            words += [self.name(mname), mtype, off]
        return self.add(kind, name, size, words, vlen=len(members))

    def proto(self, ret: int, params: Sequence[Tuple[str, int]]) -> int:
        words: List[int] = []
        for pname, ptype in params:
            words += [self.name(pname), ptype]
        return self.add(FUNC_PROTO, "", ret, words, vlen=len(params))

    def func(self, name: str, proto: int, linkage: int = 1) -> int:
        return self.add(FUNC, name, proto, vlen=linkage)

    def var(self, name: str, type_id: int, linkage: int = 1) -> int:
        return self.add(VAR, name, type_id, [linkage])

    def datasec(self, name: str, size: int, entries: Sequence[Tuple[int, int, int]]) -> int:
        words: List[int] = []
        for e in entries:
            words += list(e)
        return self.add(DATASEC, name, size, words, vlen=len(entries))

    def decl_tag(self, name: str, target: int, component: int = -1) -> int:
        return self.add(DECL_TAG, name, target, [component & 0xFFFFFFFF])

    def patch(self, type_id: int, *, type: int) -> None:
        """Point word 2 (type/size) of ``type_id`` at ``type``."""
        self.records[type_id - 1][2] = type

    def blob(self) -> bytes:
        body = b"".join(struct.pack(f"{self.e}{len(r)}I", *r) for r in self.records)
        strings = bytes(self.strings)
        hdr = struct.pack(self.e + "HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body), len(strings))
        return hdr + body + strings


@contextmanager
def cpu_budget(seconds: float, what: str = "it") -> Iterator[None]:
    """Fail instead of hanging.  The budget is this process's CPU time
    (ITIMER_PROF), not wall time, so a busy machine does not trip it; a hang
    is unbounded, so any budget catches it."""
    def boom(*_: object) -> None:
        raise AssertionError(f"{what} used over {seconds:.0f} s of CPU: it hangs")
    old = signal.signal(signal.SIGPROF, boom)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)
