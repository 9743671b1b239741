"""The kernel's BPF objects by id: enumerate programs, maps, links and BTF.

>>> for pid in ebpf.program_ids():          # ascending ids, BPF_PROG_GET_NEXT_ID
...     with ebpf.program_from_id(pid) as p:
...         print(p.info().name)

Objects come and go while a walk is under way: an id that vanished before
it could be opened raises :class:`~ebpf.errors.KeyNotExistError` (also a
``KeyError``), so a walk that must survive that catches it and goes on.
Walking and opening need CAP_SYS_ADMIN (else
:class:`~ebpf.errors.PermissionDeniedError`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional

from . import _libbpf
from .errors import EBPFError, KeyNotExistError
from .link._link import link_from_id
from .maps import map_from_id
from .programs import program_from_id

if TYPE_CHECKING:
    from .btf import Spec

__all__ = [
    "program_ids", "map_ids", "link_ids", "btf_ids",
    "program_from_id", "map_from_id", "link_from_id",
    "BTFInfo", "btf_info_from_id", "btf_spec_from_id",
]


def _ids(kind: str) -> Iterator[int]:
    current = 0
    while True:
        current = _libbpf.next_id(kind, current)
        if not current:
            return
        yield current


def program_ids() -> Iterator[int]:
    """Ids of the programs loaded in the kernel, in ascending order."""
    return _ids("prog")


def map_ids() -> Iterator[int]:
    """Ids of the maps in the kernel, in ascending order."""
    return _ids("map")


def link_ids() -> Iterator[int]:
    """Ids of the links in the kernel, in ascending order."""
    return _ids("link")


def btf_ids() -> Iterator[int]:
    """Ids of the BTF objects in the kernel (vmlinux, modules, loaded
    programs' and maps' BTF), in ascending order."""
    return _ids("btf")


@dataclass(frozen=True)
class BTFInfo:
    """Kernel view of a BTF object: ``kernel`` is True for vmlinux and
    modules (``name`` is then the module's), False for BTF that user space
    loaded (with a program or map)."""

    id: int
    name: str
    size: int
    kernel: bool


def _btf_fd(btf_id: int) -> int:
    try:
        return int(_libbpf.lib.bpf_btf_get_fd_by_id(btf_id))
    except EBPFError as exc:
        if exc.errno == 2:
            raise KeyNotExistError(f"no BTF object with id {btf_id}") from None
        raise


def btf_info_from_id(btf_id: int) -> BTFInfo:
    """What the kernel says about the BTF object with id ``btf_id``."""
    fd = _btf_fd(btf_id)
    try:
        got, name, kernel, size, _ = _libbpf.btf_object_info(fd)
    finally:
        os.close(fd)
    return BTFInfo(id=got, name=name, size=size, kernel=kernel)


def btf_spec_from_id(btf_id: int, base: Optional["Spec"] = None) -> "Spec":
    """The types of the BTF object with id ``btf_id``, as a :class:`ebpf.btf.Spec`.

    A kernel module's BTF is split BTF over vmlinux: it is read over
    ``base``, by default the running kernel's
    (:func:`ebpf.btf.load_kernel_spec`).
    """
    from .btf import Spec, load_kernel_spec

    fd = _btf_fd(btf_id)
    try:
        _, name, kernel, _, data = _libbpf.btf_object_info(fd, with_data=True)
    finally:
        os.close(fd)
    if kernel and name == "vmlinux":
        return load_kernel_spec()
    if kernel and base is None:
        base = load_kernel_spec()
    return Spec.from_raw(data, base, validate=not kernel)
