"""Netfilter links (kernel 6.4+): a BPF program as a netfilter hook.

libbpf 1.1.2 predates netfilter links, so the ``BPF_LINK_CREATE`` attribute
block (``union bpf_attr``'s ``link_create.netfilter``) is issued with
:func:`ebpf._syscall.link_create`.  Like cilium/ebpf's
``link.AttachNetfilter``.

The hook is registered in the calling thread's network namespace.
"""

from __future__ import annotations

import enum
import errno
from typing import Any

from .. import _syscall, features
from ..errors import ENOTSUPP, EBPFError
from ..types import AttachType, ProgramType
from ._link import FDLink, check_program_type, program_fd

__all__ = [
    "attach_netfilter",
    "NetfilterFlags",
    "NFPROTO_IPV4",
    "NFPROTO_IPV6",
    "NF_INET_PRE_ROUTING",
    "NF_INET_LOCAL_IN",
    "NF_INET_FORWARD",
    "NF_INET_LOCAL_OUT",
    "NF_INET_POST_ROUTING",
]

NFPROTO_IPV4 = 2
NFPROTO_IPV6 = 10

NF_INET_PRE_ROUTING = 0
NF_INET_LOCAL_IN = 1
NF_INET_FORWARD = 2
NF_INET_LOCAL_OUT = 3
NF_INET_POST_ROUTING = 4

# The kernel reserves the extreme priorities (NF_IP_PRI_FIRST/LAST).
_PRI_MIN = -(2**31) + 1
_PRI_MAX = 2**31 - 2


class NetfilterFlags(enum.IntFlag):
    NONE = 0
    IP_DEFRAG = 1 << 0  # BPF_F_NETFILTER_IP_DEFRAG (6.6+): see reassembled packets


def attach_netfilter(prog: Any, pf: int, hooknum: int, priority: int, flags: int = 0) -> FDLink:
    """Run a ``NETFILTER`` program at netfilter hook ``hooknum`` of family ``pf``.

    ``pf`` is ``NFPROTO_IPV4`` or ``NFPROTO_IPV6``; ``hooknum`` one of the
    ``NF_INET_*`` hooks; lower ``priority`` runs earlier (iptables' filter
    table sits at 0).  The program returns ``NF_DROP`` (0) or ``NF_ACCEPT``
    (1).  The program must be loaded with attach type ``NETFILTER``.
    """
    prog_fd = program_fd(prog)
    check_program_type(prog, (ProgramType.NETFILTER,), "attach_netfilter")
    at = getattr(prog, "attach_type", None)
    if at is not None and not isinstance(prog, int) and int(at) != int(AttachType.NETFILTER):
        raise EBPFError(f"attach_netfilter: program {getattr(prog, 'name', '?')!r} was loaded with attach type "
                        f"{getattr(at, 'name', at)}; load it with attach_type=AttachType.NETFILTER", errno.EINVAL)
    if not _PRI_MIN <= int(priority) <= _PRI_MAX:
        raise EBPFError(f"attach_netfilter: priority {priority} is outside [{_PRI_MIN}, {_PRI_MAX}]", errno.EINVAL)
    attr = _syscall.link_create_attr(prog_fd=prog_fd, attach_type=int(AttachType.NETFILTER))
    nf = attr.netfilter
    nf.pf, nf.hooknum, nf.priority, nf.flags = int(pf), int(hooknum), int(priority), int(flags)
    where = f"pf {int(pf)} hook {int(hooknum)} priority {int(priority)}"
    try:
        fd = _syscall.link_create(attr, f"netfilter link at {where}")
    except EBPFError as exc:
        if exc.errno in (errno.EOPNOTSUPP, ENOTSUPP, errno.EINVAL):
            features.have_link_type(10)  # LinkType.NETFILTER: raises NotSupportedError if absent
        if exc.errno == errno.EPROTO:
            raise EBPFError(f"attach_netfilter: unknown netfilter hook {int(hooknum)} ({where})", exc.errno) from None
        if exc.errno == errno.EAFNOSUPPORT:
            raise EBPFError(f"attach_netfilter: unsupported protocol family {int(pf)} ({where})", exc.errno) from None
        if exc.errno == errno.EINVAL:
            raise EBPFError(f"attach_netfilter: the kernel refused {where} flags {int(flags)} "
                            "(unknown family or hook, or IP_DEFRAG with a priority at or before defragmentation)",
                            exc.errno) from None
        if exc.errno == errno.EBUSY:
            raise EBPFError(f"attach_netfilter: {where} is taken by another hook", exc.errno) from None
        raise
    return FDLink(fd, f"netfilter {where}")
