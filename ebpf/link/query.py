"""What is attached to a hook: ``BPF_PROG_QUERY`` (cilium's ``link.QueryPrograms``).

For the multi-program hooks (tcx, netkit) the answer lists the programs in
the order they run, each with the id of the link that holds it (0 for one
attached with :func:`~ebpf.link.raw_attach_program`), and the hook's
revision, which every attach and detach increments: pass it as
``expected_revision`` to make the next change fail if someone else changed
the hook in between.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import Any, List, Optional, Union

from .. import _syscall, features
from ..errors import EBPFError
from ..types import AttachType
from .xdp import resolve_ifindex

__all__ = ["query_programs", "QueryResult", "AttachedProgram"]

_BY_IFINDEX = frozenset({AttachType.TCX_INGRESS, AttachType.TCX_EGRESS, AttachType.NETKIT_PRIMARY,
                         AttachType.NETKIT_PEER})
_LINK_TYPES = {AttachType.TCX_INGRESS: 11, AttachType.TCX_EGRESS: 11, AttachType.NETKIT_PRIMARY: 13,
               AttachType.NETKIT_PEER: 13}


@dataclass(frozen=True)
class AttachedProgram:
    """One program on a hook: its id and the id of its link (None when it was
    attached without one)."""

    id: int
    link_id: Optional[int] = None


@dataclass(frozen=True)
class QueryResult:
    """The programs on a hook, in the order they run, and its revision (0
    where the hook has none: the older single-list hooks)."""

    programs: List[AttachedProgram] = field(default_factory=list)
    revision: int = 0

    @property
    def program_ids(self) -> List[int]:
        return [p.id for p in self.programs]


def query_programs(target: Union[str, int, "os.PathLike[str]"], attach_type: Union[AttachType, int],
                   *, query_flags: int = 0) -> QueryResult:
    """The programs attached at ``attach_type`` of ``target``.

    For tcx and netkit attach types ``target`` is an interface name or index
    (in this thread's network namespace); for the others (cgroups, network
    namespaces, ...) a path to open or an open fd.  ``query_flags`` is
    passed on (``BPF_F_QUERY_EFFECTIVE`` = 1 for the programs that run in a
    cgroup, inherited ones included).
    """
    at = AttachType(int(attach_type))
    fd: Optional[int] = None
    attr = _syscall.prog_query_attr(attach_type=int(at), query_flags=int(query_flags))
    if at in _BY_IFINDEX:
        attr.target_ifindex = resolve_ifindex(target, "query_programs")  # type: ignore[arg-type]
    elif isinstance(target, int) and not isinstance(target, bool):
        attr.target_fd = target
    else:
        fd = os.open(os.fspath(target), os.O_RDONLY | os.O_CLOEXEC)  # type: ignore[arg-type]
        attr.target_fd = fd
    try:
        capacity = 64
        while True:
            try:
                progs, links = _syscall.prog_query(attr, capacity, f"query of {at.name} programs")
                break
            except EBPFError as exc:
                if exc.errno != errno.ENOSPC or attr.count <= capacity:
                    raise _query_error(exc, at) from None
                capacity = attr.count  # more were attached meanwhile: ask again
    finally:
        if fd is not None:
            os.close(fd)
    return QueryResult([AttachedProgram(p, link or None) for p, link in zip(progs, links)], int(attr.revision))


def _query_error(exc: EBPFError, at: AttachType) -> Any:
    link_type = _LINK_TYPES.get(at)
    if link_type is not None and exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
        features.have_link_type(link_type)  # NotSupportedError if the kernel lacks the hook
    return exc
