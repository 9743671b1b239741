"""BTF loaded into the kernel: :class:`Handle` (cilium's ``btf.Handle``).

>>> b = Builder()
>>> key, value = b.add(Int("u32", 4)), b.add(value_struct)
>>> with Handle(b) as h:                    # BPF_BTF_LOAD
...     create_map(btf_fd=h.fd, btf_key_type_id=key, btf_value_type_id=value)

A map or program created with ``btf_fd=h.fd`` and type ids of that BTF
keeps its own reference to the BTF object: the handle may be closed once
they exist.  :meth:`Handle.type_id` gives the id of a type in the loaded
BTF when the handle was made from a :class:`Builder` or a
:class:`~ebpf.btf.Spec`.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional
from typing import Union as _U

from .. import _libbpf
from .._fd import FDOwner
from ..errors import EBPFError, KeyNotExistError, NotSupportedError
from ..ids import BTFInfo
from . import types as T
from .builder import Builder
from .parse import BTFError
from .spec import Spec

__all__ = ["Handle"]

BTFSource = _U[Spec, Builder, bytes, bytearray, memoryview]


class Handle(FDOwner):
    """A BTF object in the kernel, owning its file descriptor.

    ``btf`` is a :class:`Builder` (marshalled in host byte order), a
    :class:`~ebpf.btf.Spec` (its raw bytes, as parsed: type ids stay the
    same) or raw BTF bytes.  The kernel checks the BTF itself; a refusal is a
    :class:`~ebpf.errors.VerifierError` carrying the kernel's BTF log.
    ``log_size`` is the first log buffer's size (grown when too small).

    Close it with :meth:`close` or a ``with`` block; the finalizer closes it
    too, also at interpreter shutdown.
    """

    _kind = "BTF handle"

    def __init__(self, btf: BTFSource, *, log_size: Optional[int] = None) -> None:
        self._source: Any = None
        if isinstance(btf, Builder):
            data = btf.marshal()
            self._source = btf
        elif isinstance(btf, Spec):
            if btf.base is not None:
                raise ValueError("a split BTF spec cannot be loaded on its own: "
                                 "add its types to a btf.Builder, which copies what they need from the base")
            data = btf.raw
            self._source = btf
        elif isinstance(btf, (bytes, bytearray, memoryview)):
            data = bytes(btf)
        else:
            raise TypeError(f"Handle takes a btf.Builder, a btf.Spec or bytes, not {type(btf).__name__}")
        _check_byte_order(data)
        super().__init__(_libbpf.btf_load(data, log_size))

    @classmethod
    def from_id(cls, btf_id: int) -> "Handle":
        """A new handle on the loaded BTF object with this id (``BPF_BTF_GET_FD_BY_ID``);
        :class:`~ebpf.errors.KeyNotExistError` when there is none."""
        try:
            fd = int(_libbpf.lib.bpf_btf_get_fd_by_id(btf_id))
        except EBPFError as exc:
            if exc.errno == 2:
                raise KeyNotExistError(f"no BTF object with id {btf_id}") from None
            raise
        h = cls.__new__(cls)
        h._source = None
        FDOwner.__init__(h, fd)
        return h

    def __repr__(self) -> str:
        if self.closed:
            return "<btf.Handle closed>"
        return f"<btf.Handle fd={self._fd}>"

    @property
    def id(self) -> int:
        """The kernel's id of this BTF object (see ``bpftool btf list``)."""
        return self.info().id

    def info(self) -> BTFInfo:
        """What the kernel says about it (as :func:`ebpf.ids.btf_info_from_id`)."""
        btf_id, name, kernel, size, _ = _libbpf.btf_object_info(self.fd)
        return BTFInfo(id=btf_id, name=name, size=size, kernel=kernel)

    def spec(self, base: Optional[Spec] = None) -> Spec:
        """The loaded BTF read back from the kernel and parsed (a module's
        BTF needs its ``base``, the kernel's: :func:`ebpf.btf.load_kernel_spec`)."""
        return Spec.from_raw(self._raw(), base, validate=base is None)

    def _raw(self) -> bytes:
        return _libbpf.btf_object_info(self.fd, with_data=True)[4]

    def type_id(self, t: T.Type) -> int:
        """The id of ``t`` in this BTF: as the :class:`Builder` assigned it, or
        its id in the :class:`~ebpf.btf.Spec` the handle was made from."""
        src = self._source
        if isinstance(src, Builder):
            return src.type_id(t)
        if isinstance(src, Spec):
            return src.type_id(t)
        raise KeyError("type ids are known for handles made from a btf.Builder or a btf.Spec")

    def pin(self, path: "os.PathLike[str] | str") -> None:
        """BTF objects cannot be pinned (the kernel pins maps, programs and links)."""
        raise NotSupportedError("pinning BTF objects", detail="the kernel pins maps, programs and links only")


def _check_byte_order(data: bytes) -> None:
    if len(data) < 2:
        raise BTFError(f"BTF blob too short ({len(data)} bytes)")
    native = b"\x9f\xeb" if sys.byteorder == "little" else b"\xeb\x9f"
    if data[:2] != native:
        other = "big" if sys.byteorder == "little" else "little"
        if data[:2] == native[::-1]:
            raise BTFError(f"BTF is {other}-endian; the kernel takes {sys.byteorder}-endian BTF "
                           f"(Builder.marshal() writes host byte order)")
        raise BTFError(f"bad BTF magic {data[:2].hex()}")
