"""Cgroup attachments: programs that see the sockets, packets, devices and
sysctls of the processes in a cgroup v2.

Like cilium/ebpf's ``link.AttachCgroup``, :func:`attach_cgroup` prefers a
``bpf_link`` (kernel 5.7+): it can be pinned, updated and queried, and
closing it detaches exactly this program.  With explicit ``flags``
(``BPF_F_ALLOW_OVERRIDE``/``BPF_F_ALLOW_MULTI``), or when the kernel has no
cgroup links, it falls back to the legacy ``BPF_PROG_ATTACH``: that
attachment cannot be pinned, and ``close()`` detaches it with
``BPF_PROG_DETACH``.
"""

from __future__ import annotations

import enum
import errno
import os
from typing import Any, Optional, Union

from .. import _libbpf, _syscall
from ..errors import EBPFError, NotSupportedError
from ..info import program_info
from ..types import AttachType, ProgramType
from ._link import FDLink, Link, LinkInfo, LinkType, check_program_type, program_fd
from .xdp import attach_type_value

__all__ = ["attach_cgroup", "CgroupFlags", "ProgAttachCgroup"]


class CgroupFlags(enum.IntFlag):
    """Flags of the legacy ``BPF_PROG_ATTACH`` to a cgroup."""

    NONE = 0
    ALLOW_OVERRIDE = 1 << 0  # BPF_F_ALLOW_OVERRIDE: a sub-cgroup may replace the program
    ALLOW_MULTI = 1 << 1  # BPF_F_ALLOW_MULTI: programs of sub-cgroups run too
    REPLACE = 1 << 2  # BPF_F_REPLACE: used by update() in multi mode


# Which program type each cgroup attach type takes (kernel's
# attach_type_to_prog_type), so a mismatch gets a clear error.
_PROG_TYPE = {
    AttachType.CGROUP_INET_INGRESS: ProgramType.CGROUP_SKB,
    AttachType.CGROUP_INET_EGRESS: ProgramType.CGROUP_SKB,
    AttachType.CGROUP_INET_SOCK_CREATE: ProgramType.CGROUP_SOCK,
    AttachType.CGROUP_INET_SOCK_RELEASE: ProgramType.CGROUP_SOCK,
    AttachType.CGROUP_INET4_POST_BIND: ProgramType.CGROUP_SOCK,
    AttachType.CGROUP_INET6_POST_BIND: ProgramType.CGROUP_SOCK,
    AttachType.CGROUP_SOCK_OPS: ProgramType.SOCK_OPS,
    AttachType.CGROUP_DEVICE: ProgramType.CGROUP_DEVICE,
    AttachType.CGROUP_SYSCTL: ProgramType.CGROUP_SYSCTL,
    AttachType.CGROUP_GETSOCKOPT: ProgramType.CGROUP_SOCKOPT,
    AttachType.CGROUP_SETSOCKOPT: ProgramType.CGROUP_SOCKOPT,
    AttachType.LSM_CGROUP: ProgramType.LSM,
}
for _name in (
    "CGROUP_INET4_BIND CGROUP_INET6_BIND CGROUP_INET4_CONNECT CGROUP_INET6_CONNECT "
    "CGROUP_UDP4_SENDMSG CGROUP_UDP6_SENDMSG CGROUP_UDP4_RECVMSG CGROUP_UDP6_RECVMSG "
    "CGROUP_INET4_GETPEERNAME CGROUP_INET6_GETPEERNAME CGROUP_INET4_GETSOCKNAME "
    "CGROUP_INET6_GETSOCKNAME CGROUP_UNIX_CONNECT CGROUP_UNIX_SENDMSG CGROUP_UNIX_RECVMSG "
    "CGROUP_UNIX_GETPEERNAME CGROUP_UNIX_GETSOCKNAME"
).split():
    if hasattr(AttachType, _name):
        _PROG_TYPE[getattr(AttachType, _name)] = ProgramType.CGROUP_SOCK_ADDR


def attach_cgroup(
    cgroup_path_or_fd: Union[str, "os.PathLike[str]", int],
    attach_type: AttachType,
    prog: Any,
    flags: Optional[int] = None,
) -> Link:
    """Attach ``prog`` to a cgroup v2 at ``attach_type``.

    ``cgroup_path_or_fd`` is a directory on the cgroup2 filesystem (e.g.
    ``/sys/fs/cgroup/my.slice``) or an open fd of one.  Without ``flags`` the
    result is an :class:`FDLink`; with ``flags`` (:class:`CgroupFlags`) it is
    a :class:`ProgAttachCgroup`.
    """
    prog_fd = program_fd(prog)
    at = attach_type_value(attach_type)
    at_name = AttachType(at).name if at in AttachType._value2member_map_ else str(at)
    need = _PROG_TYPE.get(at)  # type: ignore[call-overload]
    if need is None:
        raise EBPFError(f"attach_cgroup: {at_name} is not a cgroup attach type", errno.EINVAL)
    check_program_type(prog, (need,), f"attach_cgroup({at_name})")
    cg_fd, label = _open_cgroup(cgroup_path_or_fd)
    try:
        if flags is None:
            try:
                fd = _libbpf.link_create(prog_fd, cg_fd, at)
                return FDLink(fd, f"cgroup {label} {at_name}")
            except EBPFError as exc:
                if not _links_unsupported(exc):
                    raise _cgroup_error(exc, label, at_name) from None
            # Kernels before 5.7 have no cgroup links; cilium falls back to
            # a multi attachment, which coexists with other programs.
            flags = CgroupFlags.ALLOW_MULTI
        return ProgAttachCgroup(cg_fd, label, at, prog_fd, CgroupFlags(int(flags)))
    finally:
        os.close(cg_fd)


def _open_cgroup(cgroup: Any) -> "tuple[int, str]":
    """A new fd on the cgroup directory (the caller closes it) and a label."""
    if isinstance(cgroup, bool):
        raise TypeError("cgroup must be a path or an fd")
    if isinstance(cgroup, int):
        try:
            return os.dup(cgroup), f"fd {cgroup}"
        except OSError as exc:
            raise EBPFError(f"attach_cgroup: bad cgroup fd {cgroup}: {exc.strerror}", exc.errno) from None
    path = os.fspath(cgroup)
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), os.fsdecode(path)
    except FileNotFoundError:
        raise EBPFError(f"attach_cgroup: cgroup {os.fsdecode(path)!r} does not exist", errno.ENOENT) from None
    except NotADirectoryError:
        raise EBPFError(f"attach_cgroup: {os.fsdecode(path)!r} is not a cgroup directory", errno.ENOTDIR) from None
    except OSError as exc:
        raise EBPFError(f"attach_cgroup: cannot open cgroup {os.fsdecode(path)!r}: {exc.strerror}", exc.errno) from None


def _links_unsupported(exc: EBPFError) -> bool:
    """Whether a failed cgroup link_create means the kernel has no such links.

    A kernel without BPF_LINK_CREATE answers EINVAL to the command itself;
    asking with a bad program fd tells the two cases apart (EBADF: the
    command exists)."""
    if exc.errno != errno.EINVAL:
        return False
    try:
        _syscall.link_create(_syscall.link_create_attr(prog_fd=0xFFFFFFFF, target_fd=0xFFFFFFFF),
                             "probe BPF_LINK_CREATE")
    except EBPFError as probe:
        return probe.errno == errno.EINVAL
    return False  # pragma: no cover - cannot succeed with fd -1


def _cgroup_error(exc: EBPFError, label: str, at_name: str) -> EBPFError:
    if exc.errno == errno.EBADF:
        return EBPFError(f"attach_cgroup: {label} is not a cgroup v2 directory", exc.errno)
    if exc.errno == errno.EINVAL:
        return EBPFError(f"attach_cgroup: the kernel refused to attach at {at_name} on {label} "
                         "(program loaded for another attach type?)", exc.errno)
    if exc.errno == errno.EEXIST:
        return EBPFError(f"attach_cgroup: this program is already attached at {at_name} on {label}", exc.errno)
    return exc


def _is_attached(cg_fd: int, attach_type: int, prog_fd: int) -> bool:
    """Whether the program is among those attached at the hook (the kernel
    answers a second legacy attach of the same program with a bare EINVAL)."""
    try:
        want = program_info(prog_fd).id
        ids = _libbpf.prog_query(cg_fd, attach_type)
    except EBPFError:
        return False
    return want in ids


class ProgAttachCgroup(Link):
    """A legacy cgroup attachment (``BPF_PROG_ATTACH``).

    It has no kernel link object: it cannot be pinned, and ``info()`` is
    assembled here (``id`` 0).  ``close()`` runs ``BPF_PROG_DETACH`` for the
    attached program.  ``update()`` swaps the program in place:
    with ``ALLOW_MULTI`` through ``BPF_F_REPLACE``, otherwise by attaching
    again, which replaces the cgroup's single program.
    """

    _kind = "cgroup attachment"

    def __init__(self, cg_fd: int, label: str, attach_type: int, prog_fd: int, flags: CgroupFlags) -> None:
        # Own duplicates: the attachment must be detachable after the caller
        # closed the Program or the cgroup fd it passed in.
        cg = os.dup(cg_fd)
        prog = os.dup(prog_fd)
        try:
            _libbpf.prog_attach(prog, cg, attach_type, int(flags))
        except BaseException as exc:
            os.close(cg)
            os.close(prog)
            if isinstance(exc, EBPFError):
                known = attach_type in AttachType._value2member_map_
                at_name = AttachType(attach_type).name if known else str(attach_type)
                if exc.errno == errno.EINVAL and _is_attached(cg_fd, attach_type, prog_fd):
                    raise EBPFError(f"attach_cgroup: this program is already attached at {at_name} on {label}",
                                    exc.errno) from None
                raise _cgroup_error(exc, label, at_name) from None
            raise
        self._cg_fd, self._prog_fd = cg, prog
        self._label = label
        self._attach_type = attach_type
        self._flags = flags
        self._detach = _libbpf.prog_detach  # bound: the finalizer may run at shutdown
        Link.__init__(self)

    @property
    def flags(self) -> CgroupFlags:
        return self._flags

    def _release(self, _close: Any = os.close, _ENOENT: int = errno.ENOENT) -> None:
        cg, prog = self._cg_fd, self._prog_fd
        self._cg_fd = self._prog_fd = -1
        try:
            self._detach(prog, cg, self._attach_type)
        except Exception as exc:
            if getattr(exc, "errno", None) != _ENOENT:  # already gone (e.g. replaced by someone)
                raise
        finally:
            _close(cg)
            _close(prog)

    def update(self, prog: Any) -> None:
        """Replace the attached program with ``prog``."""
        with self._handle_lock:
            self._check_open()
            cg, old = self._cg_fd, self._prog_fd
            new = os.dup(program_fd(prog))
            flags = int(self._flags)
            replace = 0
            if self._flags & CgroupFlags.ALLOW_MULTI:
                flags |= CgroupFlags.REPLACE
                replace = old
            try:
                _libbpf.prog_attach(new, cg, self._attach_type, flags, replace)
            except BaseException:
                os.close(new)
                raise
            self._prog_fd = new
            os.close(old)

    def info(self) -> LinkInfo:
        """Cgroup id, attach type, flags and program id (no kernel link: id 0)."""
        with self._handle_lock:
            self._check_open()
            cg, prog = self._cg_fd, self._prog_fd
            program_id = program_info(prog).id
            cgroup_id = os.fstat(cg).st_ino  # a cgroup2 directory's inode is its id
        return LinkInfo(
            type=LinkType.CGROUP,
            id=0,
            program_id=program_id,
            extra={
                "cgroup_id": cgroup_id,
                "attach_type": AttachType(self._attach_type),
                "flags": self._flags,
            },
        )

    def pin(self, path: Any) -> None:
        raise NotSupportedError("pinning a legacy cgroup attachment",
                                detail="BPF_PROG_ATTACH creates no bpf_link; attach without flags to get one")

    def unpin(self) -> None:
        raise NotSupportedError("unpinning a legacy cgroup attachment", detail="BPF_PROG_ATTACH creates no bpf_link")

    def __repr__(self) -> str:
        if self.closed:
            return "<ProgAttachCgroup closed>"
        return f"<ProgAttachCgroup {self._label} {AttachType(self._attach_type).name} flags={self._flags!r}>"
