"""Programs on a tcx or netkit hook without a link: ``BPF_PROG_ATTACH``.

:func:`raw_attach_program` is cilium/ebpf's ``link.RawAttachProgram`` for
the multi-program hooks: the program joins the hook's list at an anchor,
and unlike a link it can take another attached program's place atomically
(:func:`~ebpf.link.replace_program`).  Nothing in the kernel holds such an
attachment but the hook itself: it survives this process.  The returned
:class:`RawAttachment` detaches it in ``close()`` (``BPF_PROG_DETACH``), in
the network namespace it was made in, whichever thread closes it.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Optional, Union

from .. import _libbpf, _syscall
from ..errors import EBPFError, NotSupportedError
from ..types import AttachType, ProgramType
from ._link import Link, LinkInfo, LinkType, check_program_type, program_fd
from .anchor import BPF_F_REPLACE, Anchor, attach_error, check_revision
from .netkit import device_error
from .tc import in_netns
from .xdp import interface_name, resolve_ifindex

__all__ = ["raw_attach_program", "RawAttachment"]

_HOOKS = {AttachType.TCX_INGRESS: 11, AttachType.TCX_EGRESS: 11, AttachType.NETKIT_PRIMARY: 13,
          AttachType.NETKIT_PEER: 13}  # attach type: link type whose probe says if the hook exists


def raw_attach_program(
    ifname_or_index: Union[str, int],
    prog: Any,
    attach_type: Union[AttachType, int],
    *,
    anchor: Optional[Anchor] = None,
    expected_revision: int = 0,
) -> "RawAttachment":
    """Attach a ``SCHED_CLS`` program to a tcx or netkit hook with ``BPF_PROG_ATTACH``.

    ``attach_type`` is ``TCX_INGRESS``, ``TCX_EGRESS``, ``NETKIT_PRIMARY`` or
    ``NETKIT_PEER`` (a netkit hook is named by its primary device).
    ``anchor`` is where it goes (default: last), including
    :func:`~ebpf.link.replace_program` to take an attached program's place;
    ``expected_revision`` as for :func:`~ebpf.link.attach_tcx`.
    """
    at = AttachType(int(attach_type))
    if at not in _HOOKS:
        raise EBPFError(f"raw_attach_program: attach type {at.name} is not a tcx or netkit hook (use the hook's "
                        f"attach_* function)", errno.EINVAL)
    prog_fd = program_fd(prog)
    check_program_type(prog, (ProgramType.SCHED_CLS,), "raw_attach_program")
    revision = check_revision(expected_revision, "raw_attach_program")
    ifindex = resolve_ifindex(ifname_or_index, "raw_attach_program")
    ifname = interface_name(ifindex)
    where = f"{'tcx' if at.name.startswith('TCX') else 'netkit'} {ifname} {at.name.split('_', 1)[1].lower()}"
    held = os.dup(prog_fd)  # the detach names the program by fd
    try:
        ns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except BaseException:
        os.close(held)
        raise
    try:
        _attach(ifindex, ifname, prog_fd, at, anchor, revision, where)
    except BaseException:
        os.close(held)
        os.close(ns_fd)
        raise
    return RawAttachment(ns_fd, ifindex, ifname, at, held, _syscall.prog_info(held).id, where)


def _attach(ifindex: int, ifname: str, prog_fd: int, at: AttachType, anchor: Optional[Anchor], revision: int,
            where: str, replace_fd: int = -1) -> None:
    """``BPF_PROG_ATTACH`` at ``anchor`` (or in the place of ``replace_fd``)."""
    attr = _syscall.prog_attach_attr(target_ifindex=ifindex, attach_bpf_fd=prog_fd, attach_type=int(at),
                                     expected_revision=revision)
    opened = -1
    if anchor is not None and anchor.position == "replace":
        # The kernel takes the program to replace by fd only.
        if anchor.by_id:
            opened = replace_fd = _libbpf.prog_get_fd_by_id(int(anchor.target))
        else:
            replace_fd = anchor.resolve()[0]
    elif anchor is not None:
        attr.relative_fd, attr.attach_flags = anchor.resolve()
    if replace_fd >= 0:
        attr.attach_flags, attr.replace_bpf_fd = BPF_F_REPLACE, replace_fd
    try:
        _syscall.prog_attach(attr, f"attaching to {where}")
    except EBPFError as exc:
        error = attach_error(exc, "raw_attach_program", where, anchor, revision, _HOOKS[at])
        raise device_error(error, "raw_attach_program", ifname) from None
    finally:
        if opened >= 0:
            os.close(opened)


class RawAttachment(Link):
    """A program attached to a tcx or netkit hook by :func:`raw_attach_program`.

    ``close()`` detaches it (nothing happens if it was replaced or removed
    meanwhile, or its interface is gone); ``update()`` puts another program
    in its place atomically; ``info()`` says what is attached (``id`` 0:
    there is no kernel link).  It cannot be pinned.
    """

    _kind = "program attachment"
    _in_netns: Any
    _detach: Any

    def __init__(self, ns_fd: int, ifindex: int, ifname: str, attach_type: AttachType, prog_fd: int, prog_id: int,
                 where: str) -> None:
        self._ns_fd = ns_fd
        self.ifindex = ifindex
        self.ifname = ifname
        self.attach_type = attach_type
        self._prog_fd = prog_fd
        self._prog_id = prog_id
        self._where = where
        Link.__init__(self)

    def _release(self, _close: Any = os.close) -> None:
        ns_fd, self._ns_fd = self._ns_fd, -1
        prog_fd, self._prog_fd = self._prog_fd, -1
        try:
            self._in_netns(ns_fd, lambda: self._detach(self.ifindex, prog_fd, int(self.attach_type), self._where))
        finally:
            _close(prog_fd)
            _close(ns_fd)

    def update(self, prog: Any) -> None:
        """Put ``prog`` in this program's place on the hook (atomic)."""
        new_fd = program_fd(prog)
        check_program_type(prog, (ProgramType.SCHED_CLS,), "RawAttachment.update")
        with self._handle_lock:
            self._check_open()
            in_netns(self._ns_fd, lambda: _attach(self.ifindex, self.ifname, new_fd, self.attach_type, None, 0,
                                                  self._where, replace_fd=self._prog_fd))
            old, self._prog_fd = self._prog_fd, os.dup(new_fd)
            os.close(old)
            self._prog_id = _syscall.prog_info(self._prog_fd).id

    def info(self) -> LinkInfo:
        with self._handle_lock:
            self._check_open()
            return LinkInfo(type=LinkType.UNSPEC, id=0, program_id=self._prog_id,
                            extra={"ifindex": self.ifindex, "attach_type": self.attach_type})

    def pin(self, path: Any) -> None:
        raise self._no_link("pinning")

    def unpin(self) -> None:
        raise self._no_link("unpinning")

    def _no_link(self, what: str) -> EBPFError:
        return NotSupportedError(f"{what} a program attachment", detail="it has no bpf_link; use attach_tcx or "
                                 "attach_netkit for a link")

    def __repr__(self) -> str:
        return "<RawAttachment closed>" if self.closed else f"<RawAttachment {self._where} prog id {self._prog_id}>"


def _detach(ifindex: int, prog_fd: int, attach_type: int, where: str, _attr: Any = _syscall.prog_attach_attr,
            _call: Any = _syscall.prog_detach, _gone: Any = (errno.ENOENT, errno.ENODEV)) -> None:
    try:
        _call(_attr(target_ifindex=ifindex, attach_bpf_fd=prog_fd, attach_type=attach_type), f"detaching from {where}")
    except Exception as exc:
        # ENOENT: replaced or detached by someone; ENODEV: the interface is gone.
        if getattr(exc, "errno", None) not in _gone:
            raise


# Kept on the class: its finalizer may run at interpreter shutdown.
RawAttachment._in_netns = staticmethod(in_netns)
RawAttachment._detach = staticmethod(_detach)
