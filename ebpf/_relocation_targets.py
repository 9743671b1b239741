"""CO-RE relocation targets beyond the kernel's types, as one BTF blob.

cilium's ``ProgramOptions.ExtraRelocationTargets`` relocates CO-RE accesses
against the kernel's types *and* further BTF, such as a kernel module's.
libbpf 1.1.2 takes one target file (``btf_custom_path``), and once it has
one it no longer looks at module BTF.  So the targets are merged into a
single standalone blob: the base (the ``kernel_types`` given, else the
running kernel's vmlinux plus every loaded module) followed by each extra
target, whose type ids and string offsets are moved past what comes before.
libbpf then finds candidates in all of them, as cilium does.

An extra target is an :class:`ebpf.btf.Spec`: standalone BTF, or split BTF
on the very types it is merged with (a module's, from
:func:`ebpf.btf.load_kernel_module_spec`, on the running kernel's).
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from typing import Any, List, Sequence

from .btf import spec as _btf_spec
from .btf.parse import BTFError, Kind, RawBTF

__all__ = ["merge", "running_kernel_modules"]

_HEADER = struct.Struct("HBBIIIII")

# Kinds whose word 2 is a type id (FUNC_PROTO: its return type).
_TYPE_IN_WORD2 = frozenset({Kind.PTR, Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.FUNC,
                            Kind.VAR, Kind.DECL_TAG, Kind.TYPE_TAG, Kind.FUNC_PROTO})


def running_kernel_modules() -> List[str]:
    """The kernel modules with BTF (``/sys/kernel/btf/<module>``), by name."""
    try:
        names = os.listdir(_btf_spec.KERNEL_BTF_DIR)
    except OSError:
        return []
    return sorted(n for n in names if n != "vmlinux")


class _Merged:
    """The blob being built: the base's sections, then each target's."""

    def __init__(self, base: RawBTF) -> None:
        if base.base is not None:
            raise BTFError("relocation targets merge onto standalone BTF, not split BTF")
        self.base = base
        self.order = "<" if base.byte_order == "little" else ">"
        # The base's type section as it is (a vmlinux one is megabytes: no copy word by word).
        hdr_len, type_off, type_len = _HEADER.unpack_from(base.data)[3:6] if base.byte_order == sys.byteorder else \
            struct.unpack_from(self.order + _HEADER.format, base.data)[3:6]
        self.types: List[bytes] = [base.data[hdr_len + type_off: hdr_len + type_off + type_len]]
        self.strings: List[bytes] = [base.strings]
        self.end_id = base.end_id  # next free type id
        self.str_end = base.str_end  # next free string offset

    def add(self, raw: RawBTF) -> None:
        if raw.byte_order != self.base.byte_order:
            raise BTFError(f"relocation target is {raw.byte_order}-endian, the kernel types "
                           f"{self.base.byte_order}-endian")
        if raw.base is not None:
            # Split on the base: its own ids and strings follow the base's.
            first, str_base = raw.first_id, raw.str_base
            id_shift, str_shift = self.end_id - first, self.str_end - str_base
        else:
            first, str_base = 1, 1  # 0 is void and the empty string in every blob
            id_shift, str_shift = self.end_id - 1, self.str_end
        words = array("I", raw.words)

        def type_id(i: int) -> None:
            if words[i] >= first:
                words[i] += id_shift

        def name(i: int) -> None:
            if words[i] >= str_base:
                words[i] += str_shift

        for r in raw.offsets:
            info = words[r + 1]
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            name(r)
            if kind in _TYPE_IN_WORD2:
                type_id(r + 2)
            items = r + 3
            if kind == Kind.ARRAY:
                type_id(r + 3)
                type_id(r + 4)
            elif kind in (Kind.STRUCT, Kind.UNION):
                for i in range(items, items + 3 * vlen, 3):
                    name(i)
                    type_id(i + 1)
            elif kind in (Kind.ENUM, Kind.FUNC_PROTO):
                for i in range(items, items + 2 * vlen, 2):
                    name(i)
                    if kind == Kind.FUNC_PROTO:
                        type_id(i + 1)
            elif kind == Kind.ENUM64:
                for i in range(items, items + 3 * vlen, 3):
                    name(i)
            elif kind == Kind.DATASEC:
                for i in range(items, items + 3 * vlen, 3):
                    type_id(i)
        self.types.append(_words_bytes(words, raw.byte_order))
        self.strings.append(raw.strings)
        self.end_id += raw.end_id - raw.first_id
        self.str_end += len(raw.strings)

    def blob(self) -> bytes:
        types = b"".join(self.types)
        strings = b"".join(self.strings)
        header = struct.pack(self.order + _HEADER.format, 0xEB9F, 1, 0, _HEADER.size, 0, len(types), len(types),
                             len(strings))
        return header + types + strings


def _words_bytes(words: Any, byte_order: str) -> bytes:
    out = array("I", words)
    if byte_order != sys.byteorder:
        out.byteswap()
    return out.tobytes()


def merge(base: RawBTF, targets: Sequence[RawBTF]) -> bytes:
    """One standalone blob of ``base`` followed by ``targets``, each
    standalone BTF or split BTF on ``base`` itself."""
    merged = _Merged(base)
    for t in targets:
        if t.base is not None and t.base is not base:
            raise BTFError("a relocation target is split BTF on other types than those it is merged with")
        merged.add(t)
    return merged.blob()
