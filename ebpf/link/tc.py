"""Traffic control: tcx links (kernel 6.6+) and legacy tc (cls_bpf) filters.

:func:`attach_tcx` is cilium/ebpf's ``link.AttachTCX``: a ``bpf_link`` on
an interface's ingress or egress, which can be pinned and updated, and
coexists with other tcx programs (ordered with anchors, :mod:`ebpf.link.anchor`).
libbpf 1.1.2's ``bpf_link_create`` cannot pass tcx anchors, so the attach
issues ``BPF_LINK_CREATE`` itself.

:func:`attach_tc` is the pre-6.6 way: a ``direct-action`` cls_bpf filter
on the interface's ``clsact`` qdisc, through libbpf's netlink helpers.  It
has no kernel link: the returned :class:`TCLink` detaches the filter in
``close()``.  If the attach created the ``clsact`` qdisc, closing the last
filter on it removes the qdisc again, but only when no other filter (ours
or anyone's) remains on either hook; a qdisc that existed before is left
alone.  Filters live in a network namespace: a :class:`TCLink` remembers the
namespace it was made in and detaches there, whichever thread closes it.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
from typing import Any, Callable, List, Optional, Union

from .. import _libbpf, _syscall
from ..errors import ENOTSUPP, EBPFError, NotSupportedError
from ..types import AttachType, ProgramType
from ._link import FDLink, Link, LinkInfo, LinkType, check_program_type, program_fd
from .anchor import Anchor, check_revision, legacy_anchor, parse_attach_type
from .anchor import link_create as mprog_link_create
from .xdp import interface_name, resolve_ifindex

__all__ = ["attach_tcx", "attach_tc", "TCLink"]

_TCX = {"ingress": AttachType.TCX_INGRESS, "egress": AttachType.TCX_EGRESS}
_LINK_TYPE_TCX = 11  # LinkType.TCX


def attach_tcx(
    ifname_or_index: Union[str, int],
    prog: Any,
    attach_type: Union[AttachType, str],
    *,
    anchor: Optional[Anchor] = None,
    before: Any = None,
    after: Any = None,
    expected_revision: int = 0,
) -> FDLink:
    """Attach a ``SCHED_CLS`` program to an interface with a tcx link.

    ``attach_type`` is ``AttachType.TCX_INGRESS`` or ``TCX_EGRESS`` (or
    ``"ingress"``/``"egress"``).  The program returns ``TCX_NEXT`` (-1: run
    the next program), ``TCX_PASS`` (0), ``TCX_DROP`` (2) or ``TCX_REDIRECT``
    (7).  New links go last; ``anchor`` places it elsewhere
    (:func:`~ebpf.link.head`, :func:`~ebpf.link.before_link`,
    :func:`~ebpf.link.after_program_by_id`, ...: see :mod:`ebpf.link.anchor`).
    ``before=``/``after=`` a Program or a tcx link are short for
    ``before_program``/``before_link`` and ``after_...``.
    ``expected_revision`` (from :func:`~ebpf.link.query_programs`) makes the
    attach fail with ESTALE if the hook changed since it was read.
    """
    prog_fd = program_fd(prog)
    check_program_type(prog, (ProgramType.SCHED_CLS,), "attach_tcx")
    at = parse_attach_type(attach_type, _TCX, "attach_tcx")
    legacy = legacy_anchor(before, after, "attach_tcx")
    if legacy is not None and anchor is not None:
        raise EBPFError("attach_tcx: give anchor= or before=/after=, not both", errno.EINVAL)
    anchor = anchor if anchor is not None else legacy
    revision = check_revision(expected_revision, "attach_tcx")
    ifindex = resolve_ifindex(ifname_or_index, "attach_tcx")
    where = f"tcx {interface_name(ifindex)} {at.name[4:].lower()}"
    fd = mprog_link_create("attach_tcx", prog_fd, ifindex, at, anchor, revision, where, _LINK_TYPE_TCX)
    return FDLink(fd, where)


# --------------------------------------------------------------------------
# legacy tc

BPF_TC_INGRESS = 1 << 0
BPF_TC_EGRESS = 1 << 1
BPF_TC_F_REPLACE = 1 << 0
_DIRECTIONS = {"ingress": BPF_TC_INGRESS, "egress": BPF_TC_EGRESS}


def attach_tc(
    ifname_or_index: Union[str, int],
    prog: Any,
    direction: str = "ingress",
    priority: int = 1,
    handle: int = 1,
    *,
    replace: bool = False,
) -> "TCLink":
    """Attach a ``SCHED_CLS`` program as a direct-action cls_bpf filter.

    Creates the interface's ``clsact`` qdisc if it has none.  ``priority``
    (1-65535) and ``handle`` identify the filter; an existing filter with
    both raises EBPFError (EEXIST) unless ``replace=True``.  The program
    returns a ``TC_ACT_*`` verdict (``TC_ACT_OK`` 0, ``TC_ACT_SHOT`` 2).
    """
    prog_fd = program_fd(prog)
    check_program_type(prog, (ProgramType.SCHED_CLS,), "attach_tc")
    point = _DIRECTIONS.get(direction)
    if point is None:
        raise EBPFError(f"attach_tc: direction must be 'ingress' or 'egress', not {direction!r}", errno.EINVAL)
    if not 0 < int(priority) <= 0xFFFF:
        raise EBPFError(f"attach_tc: priority {priority} is outside 1..65535", errno.EINVAL)
    if not 0 < int(handle) <= 0xFFFFFFFF:
        raise EBPFError(f"attach_tc: handle {handle} must be a nonzero u32", errno.EINVAL)
    ifindex = resolve_ifindex(ifname_or_index, "attach_tc")
    ifname = interface_name(ifindex)
    where = f"tc {ifname} {direction} handle {int(handle)} priority {int(priority)}"
    created = False
    try:
        _libbpf.tc_hook_create(ifindex, point)
        created = True
    except EBPFError as exc:
        if exc.errno != errno.EEXIST:
            raise _tc_error(exc, f"creating the clsact qdisc on {ifname}") from None
    try:
        got_handle, got_priority, prog_id = _libbpf.tc_attach(ifindex, point, prog_fd, int(handle), int(priority),
                                                              BPF_TC_F_REPLACE if replace else 0)
    except EBPFError as exc:
        if created:
            _destroy_qdisc_if_empty(ifindex)
        if exc.errno == errno.EEXIST:
            raise EBPFError(f"attach_tc: a filter already exists at {where} (pass replace=True to replace it)",
                            exc.errno) from None
        if exc.errno == errno.EINVAL:
            raise EBPFError(f"attach_tc: the kernel refused {where} ({exc})", exc.errno) from None
        raise _tc_error(exc, where) from None
    ns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    return TCLink(ns_fd, ifindex, ifname, direction, got_handle, got_priority, prog_id, created)


def _tc_error(exc: EBPFError, what: str) -> EBPFError:
    if exc.errno in (errno.EOPNOTSUPP, ENOTSUPP):
        return NotSupportedError(f"tc on {what}", errno=exc.errno, detail=str(exc))
    return EBPFError(f"attach_tc: {what}: {os.strerror(exc.errno or errno.EINVAL)}", exc.errno)


class TCLink(Link):
    """A legacy tc filter made by :func:`attach_tc`.

    ``close()`` deletes the filter (in the network namespace it was made
    in); ``update()`` replaces its program in place; ``info()`` reports the
    interface, direction, handle, priority and program id (``id`` 0: there
    is no kernel link).  It cannot be pinned.
    """

    _kind = "tc filter"
    # Set below the helpers' definitions (see the end of the module).
    _in_netns: Callable[..., Any]
    _detach_filter: Callable[..., Any]

    def __init__(self, ns_fd: int, ifindex: int, ifname: str, direction: str, handle: int, priority: int,
                 prog_id: int, created_qdisc: bool) -> None:
        self._ns_fd = ns_fd
        self.ifindex = ifindex
        self.ifname = ifname
        self.direction = direction
        self.handle = handle
        self.priority = priority
        self._prog_id = prog_id
        self._created_qdisc = created_qdisc
        self._attach_point = _DIRECTIONS[direction]
        Link.__init__(self)

    def _release(self, _close: Any = os.close) -> None:
        ns_fd, self._ns_fd = self._ns_fd, -1
        try:
            self._in_netns(ns_fd, lambda: self._detach_filter(self))
        finally:
            _close(ns_fd)

    def update(self, prog: Any) -> None:
        """Replace the filter's program (``BPF_TC_F_REPLACE``, atomic)."""
        prog_fd = program_fd(prog)
        check_program_type(prog, (ProgramType.SCHED_CLS,), "TCLink.update")

        def replace() -> int:
            return _libbpf.tc_attach(self.ifindex, self._attach_point, prog_fd, self.handle, self.priority,
                                     BPF_TC_F_REPLACE)[2]

        with self._handle_lock:
            self._check_open()
            self._prog_id = in_netns(self._ns_fd, replace)

    def info(self) -> LinkInfo:
        """What is attached now (``bpf_tc_query``); no kernel link: ``id`` 0."""
        def query() -> int:
            return _libbpf.tc_query(self.ifindex, self._attach_point, self.handle, self.priority)

        with self._handle_lock:
            self._check_open()
            prog_id = in_netns(self._ns_fd, query)
        return LinkInfo(
            type=LinkType.UNSPEC,
            id=0,
            program_id=prog_id,
            extra={"ifindex": self.ifindex, "direction": self.direction, "handle": self.handle,
                   "priority": self.priority},
        )

    def pin(self, path: Any) -> None:
        raise NotSupportedError("pinning a tc filter", detail="legacy tc filters have no bpf_link; use attach_tcx")

    def unpin(self) -> None:
        raise NotSupportedError("unpinning a tc filter", detail="legacy tc filters have no bpf_link")

    def __repr__(self) -> str:
        if self.closed:
            return "<TCLink closed>"
        return f"<TCLink {self.ifname} {self.direction} handle {self.handle} priority {self.priority}>"


def _destroy_qdisc_if_empty(ifindex: int) -> None:
    """Remove the clsact qdisc when neither hook holds a filter any more."""
    try:
        if _count_filters(ifindex) == 0:
            _libbpf.tc_hook_destroy(ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS)
    except (EBPFError, OSError):
        pass  # leaving an empty qdisc behind is harmless


def _detach_filter(link: TCLink, _detach: Any = _libbpf.tc_detach, _destroy: Any = _destroy_qdisc_if_empty,
                   _gone: Any = (errno.ENOENT, errno.ENODEV, errno.EINVAL)) -> None:
    try:
        _detach(link.ifindex, link._attach_point, link.handle, link.priority)
    except Exception as exc:
        # ENOENT: someone removed it; ENODEV/EINVAL: the interface is gone.
        if getattr(exc, "errno", None) not in _gone:
            raise
        return
    if link._created_qdisc:
        _destroy(link.ifindex)


# --------------------------------------------------------------------------
# rtnetlink: count the filters on a clsact qdisc (libbpf can only query one
# filter by handle and priority).

_RTM_GETTFILTER = 46
_RTM_NEWTFILTER = 44
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_CLSACT_PARENTS = (0xFFFFFFF2, 0xFFFFFFF3)  # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS/EGRESS)


def _count_filters(ifindex: int) -> int:
    total = 0
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE) as s:
        s.bind((0, 0))
        for seq, parent in enumerate(_CLSACT_PARENTS, start=1):
            tcmsg = struct.pack("=BxHiIII", socket.AF_UNSPEC, 0, ifindex, 0, parent, 0)
            hdr = struct.pack("=IHHII", 16 + len(tcmsg), _RTM_GETTFILTER, _NLM_F_REQUEST | _NLM_F_DUMP, seq, 0)
            s.send(hdr + tcmsg)
            done = False
            while not done:
                data = s.recv(65536)
                off = 0
                while off + 16 <= len(data):
                    length, mtype, _flags, mseq, _pid = struct.unpack_from("=IHHII", data, off)
                    if length < 16:
                        break
                    if mseq == seq:
                        if mtype == _NLMSG_DONE:
                            done = True
                        elif mtype == _NLMSG_ERROR:
                            err = -struct.unpack_from("=i", data, off + 16)[0]
                            if err:
                                raise OSError(err, os.strerror(err))
                            done = True
                        elif mtype == _RTM_NEWTFILTER:
                            total += 1
                    off += (length + 3) & ~3
    return total


# --------------------------------------------------------------------------
# network namespaces: run a call in the namespace behind an fd


def _same_netns(ns_fd: int, _fstat: Any = os.fstat, _stat: Any = os.stat) -> bool:
    a = _fstat(ns_fd)
    b = _stat("/proc/thread-self/ns/net")
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def in_netns(ns_fd: int, fn: Callable[[], Any], _same: Any = _same_netns, _thread: Any = threading.Thread,
             _setns: Any = _syscall.setns, _newnet: int = _syscall.CLONE_NEWNET) -> Any:
    """Call ``fn`` in the network namespace of ``ns_fd`` and return its result.

    The current thread is used when it is already there; otherwise a
    short-lived thread enters the namespace (setns affects only the calling
    thread) and exits afterwards.
    """
    if _same(ns_fd):
        return fn()
    result: List[Any] = []
    failure: List[BaseException] = []

    def run() -> None:
        try:
            _setns(ns_fd, _newnet)
            result.append(fn())
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    t = _thread(target=run, name="ebpf-netns")
    t.start()
    t.join()
    if failure:
        raise failure[0]
    return result[0]


# What TCLink's release calls, kept on the class: its finalizer may run at
# interpreter shutdown, when this module's globals may be gone.
TCLink._in_netns = staticmethod(in_netns)  # type: ignore[assignment]
TCLink._detach_filter = staticmethod(_detach_filter)  # type: ignore[assignment]
