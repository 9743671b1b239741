"""The Link base class: one attachment of a program to a hook.

Most hooks give a ``bpf_link`` file descriptor (``FDLink``): closing the fd
detaches the program, the link can be pinned on bpffs (then it outlives the
process), updated to a new program where the kernel allows it, and queried
for info.  Older attach styles (legacy cgroup attach, perf-event ioctl, tc
filters, socket filters) have no such fd; their ``Link`` subclasses detach in
``close()`` and raise :class:`NotSupportedError` for what they cannot do,
as cilium/ebpf does.
"""

from __future__ import annotations

import ctypes
import enum
import os
from ctypes import c_uint32, c_uint64
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from .. import _libbpf
from .._fd import FDOwner, open_pinned
from ..errors import ClosedError, EBPFError, NotSupportedError
from ..info import _enum
from ..types import AttachType

__all__ = ["Link", "FDLink", "LinkType", "LinkInfo", "load_pinned_link", "link_from_id", "program_fd"]


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


class _bpf_link_info(ctypes.Structure):
    # type, id, prog_id, then a union whose largest member we never exceed;
    # the union starts 8-aligned at offset 16.
    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("prog_id", c_uint32),
        ("_pad", c_uint32),
        ("u", c_uint64 * 8),
    ]


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


def _u32s(raw: bytes, n: int) -> list:
    return list(memoryview(raw).cast("I")[:n])


def _read_str(fd: int, info: _bpf_link_info, ptr_word: int, len_word_u32: int) -> str:
    """Second info call that hands the kernel a buffer for a name field."""
    size = int(_u32s(bytes(info.u), 16)[len_word_u32])
    if not size:
        return ""
    buf = ctypes.create_string_buffer(size)
    again = _bpf_link_info()
    again.u[ptr_word] = ctypes.addressof(buf)
    words = (c_uint32 * 16).from_buffer(again.u)
    words[len_word_u32] = size
    _get(fd, again)
    return buf.value.decode(errors="replace")


def _get(fd: int, info: Any) -> Any:
    size = c_uint32(ctypes.sizeof(info))
    _libbpf.lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size))
    return info


def link_info(fd: int) -> LinkInfo:
    """Query the kernel for the link behind ``fd``."""
    i = _get(fd, _bpf_link_info())
    raw = bytes(i.u)
    w = _u32s(raw, 16)
    q = list(memoryview(raw).cast("Q")[:8])
    t = _enum(LinkType, i.type)
    extra: Dict[str, Any] = {}
    if t == LinkType.RAW_TRACEPOINT:
        # tp_name, tp_name_len, then the cookie (reported since 6.10; else 0)
        extra.update(tp_name=_read_str(fd, i, 0, 2), cookie=q[2])
    elif t == LinkType.TRACING:
        extra.update(attach_type=_enum(AttachType, w[0]), target_obj_id=w[1], target_btf_id=w[2])
    elif t == LinkType.CGROUP:
        extra.update(cgroup_id=q[0], attach_type=_enum(AttachType, w[2]))
    elif t == LinkType.ITER:
        extra["target_name"] = _read_str(fd, i, 0, 2)
        if extra["target_name"] == "bpf_map_elem":
            extra["map_id"] = w[3]
    elif t == LinkType.NETNS:
        extra.update(netns_ino=w[0], attach_type=_enum(AttachType, w[1]))
    elif t == LinkType.XDP:
        extra["ifindex"] = w[0]
    elif t == LinkType.STRUCT_OPS:
        extra["map_id"] = w[0]
    elif t == LinkType.NETFILTER:
        extra.update(pf=w[0], hooknum=w[1], priority=int(ctypes.c_int32(w[2]).value), flags=w[3])
    elif t == LinkType.TCX:
        extra.update(ifindex=w[0], attach_type=_enum(AttachType, w[1]))
    elif t == LinkType.KPROBE_MULTI:
        extra.update(count=w[2], flags=w[3])
    elif t == LinkType.PERF_EVENT:
        extra.update(_perf_event_extra(fd, i, w, q))
    return LinkInfo(type=t, id=i.id, program_id=i.prog_id, extra=extra)


class PerfEventType(enum.IntEnum):
    """``enum bpf_perf_event_type``: what a perf-event link is attached to."""

    UNSPEC = 0
    UPROBE = 1
    URETPROBE = 2
    KPROBE = 3
    KRETPROBE = 4
    TRACEPOINT = 5
    EVENT = 6


def _perf_event_extra(fd: int, info: _bpf_link_info, w: list, q: list) -> Dict[str, Any]:
    # perf_event: u32 type, pad, then a union at u64 index 1 whose first
    # member is a name pointer (u32 length at word 4) or, for plain events,
    # the config (u32 perf type at word 4).
    pt = _enum(PerfEventType, w[0])
    extra: Dict[str, Any] = {"perf_event_type": pt}
    if pt == PerfEventType.TRACEPOINT:
        extra.update(tp_name=_read_str(fd, info, 1, 4), cookie=q[3])
    elif pt in (PerfEventType.KPROBE, PerfEventType.KRETPROBE):
        extra.update(func_name=_read_str(fd, info, 1, 4), offset=w[5], addr=q[3], missed=q[4], cookie=q[5])
    elif pt in (PerfEventType.UPROBE, PerfEventType.URETPROBE):
        extra.update(file_name=_read_str(fd, info, 1, 4), offset=w[5], cookie=q[3])
    elif pt == PerfEventType.EVENT:
        extra.update(config=q[1], type=w[4], cookie=q[3])
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


class Link:
    """An attachment of a program to a hook.

    ``close()`` detaches it (unless it was pinned: a pinned link stays
    attached until its pin is removed too).  Closing the *program* does not
    detach its links.  Links are context managers.
    """

    _kind = "link"

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def closed(self) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def __enter__(self) -> "Link":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

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


class FDLink(FDOwner, Link):
    """A link backed by a ``bpf_link`` file descriptor."""

    _kind = "link"

    def __init__(self, fd: int, description: str = "") -> None:
        FDOwner.__init__(self, fd)
        self._description = description

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        FDOwner.close(self)

    def pin(self, path: "os.PathLike[str] | str") -> None:
        FDOwner.pin(self, path)

    def unpin(self) -> None:
        FDOwner.unpin(self)

    def update(self, prog: Any, old_prog: Any = None) -> None:
        """Replace the program (``BPF_LINK_UPDATE``).

        ``old_prog`` makes the swap conditional on the current program.  Link
        kinds the kernel cannot update raise :class:`NotSupportedError`.
        """
        from .._libbpf import bpf_link_update_opts

        opts = bpf_link_update_opts()
        if old_prog is not None:
            opts.flags = 1 << 2  # BPF_F_REPLACE
            opts.old_prog_fd = program_fd(old_prog)
        new_fd = program_fd(prog)
        try:
            _libbpf.lib.bpf_link_update(self.fd, new_fd, ctypes.byref(opts))
        except EBPFError as exc:
            if exc.errno in (22, 95, 524) and not isinstance(exc, NotSupportedError):
                kind = self.info().type
                if exc.errno != 22 or kind in (LinkType.PERF_EVENT, LinkType.KPROBE_MULTI, LinkType.UPROBE_MULTI, LinkType.RAW_TRACEPOINT, LinkType.TRACING):
                    raise NotSupportedError(f"updating a {getattr(kind, 'name', kind)} link", errno=exc.errno,
                                            detail=str(exc)) from None
            raise

    def info(self) -> LinkInfo:
        return link_info(self.fd)

    def detach(self) -> None:
        """Detach the program even if the link is pinned elsewhere."""
        try:
            _libbpf.lib.bpf_link_detach(self.fd)
        except EBPFError as exc:
            if exc.errno in (22, 95, 524):
                raise NotSupportedError("BPF_LINK_DETACH for this link kind", errno=exc.errno, min_kernel="5.9") from None
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
        from .iter import Iter

        return Iter(fd, f"{description} iterator")
    return FDLink(fd, f"{description} {getattr(t, 'name', t)}")


def load_pinned_link(path: "os.PathLike[str] | str") -> FDLink:
    """Open a link pinned at ``path``; closing it does not remove the pin.

    A pinned iterator comes back as an :class:`~ebpf.link.Iter` (readable).
    """
    fd = open_pinned(path)
    if not _is_link_fd(fd):
        os.close(fd)
        raise EBPFError(f"{os.fspath(path)} is not a pinned link", 22)
    try:
        link = _wrap_link(fd, "pinned")
    except EBPFError:
        raise EBPFError(f"{os.fspath(path)} is not a pinned link", 22) from None
    link._pinned_path = os.fspath(path)
    return link


def link_from_id(link_id: int) -> FDLink:
    """Open an existing link by its kernel id (needs CAP_SYS_ADMIN)."""
    try:
        fd = int(_libbpf.lib.bpf_link_get_fd_by_id(link_id))
    except EBPFError as exc:
        if exc.errno == 2:
            from ..errors import KeyNotExistError

            raise KeyNotExistError(f"no link with id {link_id}") from None
        raise
    return _wrap_link(fd, f"id {link_id}")


def raise_if_closed(obj: Any, what: str) -> None:
    if getattr(obj, "closed", False):
        raise ClosedError(what)
