"""The Link base class: one attachment of a program to a hook.

Most hooks give a ``bpf_link`` file descriptor (``FDLink``): closing the fd
detaches the program, the link can be pinned on bpffs (then it outlives the
process), updated to a new program where the kernel allows it, and queried
for info.  Older attach styles (legacy cgroup attach, perf-event ioctl, tc
filters, socket filters) have no such fd; their ``Link`` subclasses write
only their detach (``_release``: ``close()``, the context manager and the
finalizer are :class:`ebpf._handle.Handle`'s) and raise
:class:`NotSupportedError` for what they cannot do, as cilium/ebpf does.

Every hook refuses a program of the wrong type the same way, before any
syscall: :func:`check_program_type`.
"""

from __future__ import annotations

import enum
import errno
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable

from .. import _libbpf, _syscall
from .._fd import FDOwner, in_flight, open_pinned
from .._handle import Handle
from ..errors import ENOTSUPP, ClosedError, EBPFError, InvalidObjectError, KeyNotExistError, NotSupportedError
from ..types import AttachType, ProgramType, to_enum

__all__ = ["Link", "FDLink", "LinkType", "LinkInfo", "load_pinned_link", "link_from_id", "program_fd",
           "check_program_type"]


class LinkType(enum.IntEnum):
    """``enum bpf_link_type``."""

    UNSPEC = 0
    RAW_TRACEPOINT = 1
    TRACING = 2
    CGROUP = 3
    ITER = 4
    NETNS = 5
    XDP = 6
    PERF_EVENT = 7
    KPROBE_MULTI = 8
    STRUCT_OPS = 9
    NETFILTER = 10
    TCX = 11
    UPROBE_MULTI = 12
    NETKIT = 13
    SOCKMAP = 14


@dataclass(frozen=True)
class LinkInfo:
    """Kernel view of a link (``BPF_OBJ_GET_INFO_BY_FD``).

    ``extra`` holds the kind-specific fields, e.g. ``{"ifindex": 1}`` for XDP
    or ``{"cgroup_id": ..., "attach_type": AttachType.CGROUP_INET_INGRESS}``.
    """

    type: Any
    id: int
    program_id: int
    extra: Dict[str, Any] = field(default_factory=dict)


def _name(fd: int, member: str, name: str, length: str, size: int) -> str:
    return _syscall.link_info_string(fd, member, name, length, size)


def link_info(fd: int) -> LinkInfo:
    """Query the kernel for the link behind ``fd``."""
    i = _syscall.link_info(fd)
    t = to_enum(LinkType, i.type)
    extra: Dict[str, Any] = {}
    if t == LinkType.RAW_TRACEPOINT:
        rt = i.raw_tracepoint  # the cookie is reported since 6.10 (else 0)
        extra.update(tp_name=_name(fd, "raw_tracepoint", "tp_name", "tp_name_len", rt.tp_name_len), cookie=rt.cookie)
    elif t == LinkType.TRACING:
        tr = i.tracing
        extra.update(attach_type=to_enum(AttachType, tr.attach_type), target_obj_id=tr.target_obj_id,
                     target_btf_id=tr.target_btf_id)
    elif t == LinkType.CGROUP:
        extra.update(cgroup_id=i.cgroup.cgroup_id, attach_type=to_enum(AttachType, i.cgroup.attach_type))
    elif t == LinkType.ITER:
        extra["target_name"] = _name(fd, "iter", "target_name", "target_name_len", i.iter.target_name_len)
        if extra["target_name"] == "bpf_map_elem":
            extra["map_id"] = i.iter.map.map_id
    elif t == LinkType.NETNS:
        extra.update(netns_ino=i.netns.netns_ino, attach_type=to_enum(AttachType, i.netns.attach_type))
    elif t == LinkType.XDP:
        extra["ifindex"] = i.xdp.ifindex
    elif t == LinkType.STRUCT_OPS:
        extra["map_id"] = i.struct_ops.map_id
    elif t == LinkType.NETFILTER:
        nf = i.netfilter
        extra.update(pf=nf.pf, hooknum=nf.hooknum, priority=nf.priority, flags=nf.flags)
    elif t in (LinkType.TCX, LinkType.NETKIT):
        part = i.tcx if t == LinkType.TCX else i.netkit
        extra.update(ifindex=part.ifindex, attach_type=to_enum(AttachType, part.attach_type))
    elif t == LinkType.UPROBE_MULTI:
        extra.update(_uprobe_multi_extra(fd, i.uprobe_multi))
    elif t == LinkType.KPROBE_MULTI:
        extra.update(count=i.kprobe_multi.count, flags=i.kprobe_multi.flags)
    elif t == LinkType.PERF_EVENT:
        extra.update(_perf_event_extra(fd, i.perf_event))
    return LinkInfo(type=t, id=i.id, program_id=i.prog_id, extra=extra)


BPF_F_UPROBE_MULTI_RETURN = 1


def _uprobe_multi_extra(fd: int, um: Any) -> Dict[str, Any]:
    count = um.count
    # The kernel reports the path's size only along with the path: PATH_MAX.
    _, path, (offsets, ref_ctr_offsets, cookies) = _syscall.uprobe_multi_link_info(fd, count, 4096)
    return {"path": path, "offsets": offsets, "ref_ctr_offsets": ref_ctr_offsets, "cookies": cookies,
            "count": count, "flags": um.flags, "retprobe": bool(um.flags & BPF_F_UPROBE_MULTI_RETURN),
            "pid": um.pid}


class PerfEventType(enum.IntEnum):
    """``enum bpf_perf_event_type``: what a perf-event link is attached to."""

    UNSPEC = 0
    UPROBE = 1
    URETPROBE = 2
    KPROBE = 3
    KRETPROBE = 4
    TRACEPOINT = 5
    EVENT = 6


def _perf_event_extra(fd: int, pe: Any) -> Dict[str, Any]:
    pt = to_enum(PerfEventType, pe.type)
    extra: Dict[str, Any] = {"perf_event_type": pt}
    member = "perf_event." + {PerfEventType.TRACEPOINT: "tracepoint", PerfEventType.KPROBE: "kprobe",
                              PerfEventType.KRETPROBE: "kprobe", PerfEventType.UPROBE: "uprobe",
                              PerfEventType.URETPROBE: "uprobe"}.get(pt, "")
    if pt == PerfEventType.TRACEPOINT:
        tp = pe.tracepoint
        extra.update(tp_name=_name(fd, member, "tp_name", "name_len", tp.name_len), cookie=tp.cookie)
    elif pt in (PerfEventType.KPROBE, PerfEventType.KRETPROBE):
        kp = pe.kprobe
        extra.update(func_name=_name(fd, member, "func_name", "name_len", kp.name_len), offset=kp.offset,
                     addr=kp.addr, missed=kp.missed, cookie=kp.cookie)
    elif pt in (PerfEventType.UPROBE, PerfEventType.URETPROBE):
        up = pe.uprobe
        extra.update(file_name=_name(fd, member, "file_name", "name_len", up.name_len), offset=up.offset,
                     cookie=up.cookie)
    elif pt == PerfEventType.EVENT:
        ev = pe.event
        extra.update(config=ev.config, type=ev.type, cookie=ev.cookie)
    return extra


def program_fd(prog: Any) -> int:
    """The fd of a :class:`ebpf.Program` (or an int fd), for attach calls.

    A closed program raises :class:`ClosedError` here, before any syscall.
    """
    if isinstance(prog, int):
        return prog
    fd = getattr(prog, "fd", None)
    if fd is None:
        raise TypeError(f"expected an ebpf.Program, got {type(prog).__name__}")
    return int(fd)


def check_program_type(prog: Any, allowed: Iterable[ProgramType], hook: str) -> None:
    """Refuse a program whose type cannot attach to ``hook``, before any
    syscall (the kernel would answer a bare EINVAL).

    Raises :class:`~ebpf.errors.InvalidObjectError` (an ``EBPFError`` and a
    ``ValueError``) with errno EINVAL.  A raw fd, or an object without a
    type, is left for the kernel to judge.
    """
    ptype = getattr(prog, "type", None)
    if ptype is None or isinstance(prog, int):
        return
    allowed = tuple(allowed)
    if int(ptype) in {int(t) for t in allowed}:
        return
    have = ptype.name if isinstance(ptype, ProgramType) else str(ptype)
    want = " or ".join(sorted(t.name for t in allowed))
    name = getattr(prog, "name", "")
    raise InvalidObjectError(f"{hook}: program {name!r} is a {have} program; the hook needs a {want} program",
                             errno.EINVAL)


class Link(Handle):
    """An attachment of a program to a hook.

    ``close()`` detaches it (unless it was pinned: a pinned link stays
    attached until its pin is removed too); it is thread-safe and
    idempotent, and a link dropped without it is detached by its finalizer
    (see :class:`ebpf._handle.Handle`).  Closing the *program* does not
    detach its links.  Links are context managers.

    A hook without a ``bpf_link`` subclasses this and implements
    ``_release()`` (the detach), calling ``Link.__init__(self)`` once
    attached.
    """

    _kind = "link"

    def pin(self, path: "os.PathLike[str] | str") -> None:
        """Pin the link on bpffs so it survives this process."""
        raise NotSupportedError(f"pinning a {type(self).__name__}", detail="this attachment has no bpf_link")

    def unpin(self) -> None:
        """Remove the pin made by :meth:`pin`."""
        raise NotSupportedError(f"unpinning a {type(self).__name__}", detail="this attachment has no bpf_link")

    def update(self, prog: Any) -> None:
        """Atomically replace the attached program with ``prog``."""
        raise NotSupportedError(f"updating a {type(self).__name__}", detail="this attachment cannot swap programs")

    def info(self) -> LinkInfo:
        """What the kernel reports about the link."""
        raise NotSupportedError(f"info of a {type(self).__name__}", detail="this attachment has no bpf_link")

    def detach(self) -> None:
        """Detach now, even if pinned (``BPF_LINK_DETACH`` where available)."""
        self.close()


# Link kinds whose program the kernel never swaps (it answers EINVAL for them,
# as it does for a bad argument).
_NOT_UPDATABLE = (LinkType.PERF_EVENT, LinkType.KPROBE_MULTI, LinkType.UPROBE_MULTI, LinkType.RAW_TRACEPOINT,
                  LinkType.TRACING)


class FDLink(FDOwner, Link):
    """A link backed by a ``bpf_link`` file descriptor."""

    _kind = "link"

    def __init__(self, fd: int, description: str = "") -> None:
        self._description = description
        FDOwner.__init__(self, fd)

    def pin(self, path: "os.PathLike[str] | str") -> None:
        FDOwner.pin(self, path)

    def unpin(self) -> None:
        FDOwner.unpin(self)

    @in_flight
    def update(self, prog: Any, old_prog: Any = None) -> None:
        """Replace the program (``BPF_LINK_UPDATE``).

        ``old_prog`` makes the swap conditional on the current program.  Link
        kinds the kernel cannot update raise :class:`NotSupportedError`.
        """
        old_fd = program_fd(old_prog) if old_prog is not None else None
        new_fd = program_fd(prog)
        try:
            _libbpf.link_update(self.fd, new_fd, old_fd)
        except EBPFError as exc:
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP) and not isinstance(exc, NotSupportedError):
                kind = self.info().type
                if exc.errno != errno.EINVAL or kind in _NOT_UPDATABLE:
                    raise NotSupportedError(f"updating a {getattr(kind, 'name', kind)} link", errno=exc.errno,
                                            detail=str(exc)) from None
            raise

    @in_flight
    def info(self) -> LinkInfo:
        return link_info(self.fd)

    @in_flight
    def detach(self) -> None:
        """Detach the program even if the link is pinned elsewhere."""
        try:
            _libbpf.link_detach(self.fd)
        except EBPFError as exc:
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP):
                raise NotSupportedError("BPF_LINK_DETACH for this link kind", errno=exc.errno,
                                        min_kernel="5.9") from None
            raise

    def __repr__(self) -> str:
        if self.closed:
            return f"<{type(self).__name__} closed>"
        return f"<{type(self).__name__} fd={self._fd} {self._description}>".replace(" >", ">")


def _is_link_fd(fd: int) -> bool:
    """Whether ``fd`` is a bpf_link (the info call alone would also answer
    for a map or program, with their fields read as a link's)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:bpf-link"
    except OSError:
        return True  # no procfs: let the info call decide


def _wrap_link(fd: int, description: str) -> FDLink:
    """The FDLink subclass for the link behind ``fd`` (an Iter for iterators)."""
    try:
        t = link_info(fd).type
    except BaseException:
        os.close(fd)
        raise
    if t == LinkType.ITER:
        from .iter import Iter  # iter imports this module

        return Iter(fd, f"{description} iterator")
    return FDLink(fd, f"{description} {getattr(t, 'name', t)}")


def load_pinned_link(path: "os.PathLike[str] | str") -> FDLink:
    """Open a link pinned at ``path``; closing it does not remove the pin.

    A pinned iterator comes back as an :class:`~ebpf.link.Iter` (readable).
    """
    fd = open_pinned(path)
    if not _is_link_fd(fd):
        os.close(fd)
        raise EBPFError(f"{os.fspath(path)} is not a pinned link", errno.EINVAL)
    try:
        link = _wrap_link(fd, "pinned")
    except EBPFError:
        raise EBPFError(f"{os.fspath(path)} is not a pinned link", errno.EINVAL) from None
    link._pinned_path = os.fspath(path)
    return link


def link_from_id(link_id: int) -> FDLink:
    """Open an existing link by its kernel id (needs CAP_SYS_ADMIN)."""
    try:
        fd = _libbpf.link_get_fd_by_id(link_id)
    except EBPFError as exc:
        if exc.errno == errno.ENOENT:
            raise KeyNotExistError(f"no link with id {link_id}") from None
        raise
    return _wrap_link(fd, f"id {link_id}")


def raise_if_closed(obj: Any, what: str) -> None:
    if getattr(obj, "closed", False):
        raise ClosedError(what)
