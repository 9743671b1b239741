"""XDP links: a program on a network interface's receive path.

``attach_xdp`` creates a ``bpf_link`` (``BPF_LINK_CREATE`` with
``BPF_XDP``, kernel 5.9+), like cilium/ebpf's ``link.AttachXDP``.  A link
never replaces a program someone else attached: the kernel refuses with
EBUSY.  To swap programs, use :meth:`Link.update`.

Interface names and indexes belong to the calling thread's network
namespace, as they do for the kernel.

This module also holds the small helpers the other network attach modules
share (interface lookup, attach type values).
"""

from __future__ import annotations

import enum
import errno
import os
import socket
from typing import Any, Union

from .. import _libbpf
from ..errors import ENOTSUPP, EBPFError, NotSupportedError
from ..types import AttachType, ProgramType
from ._link import FDLink, check_program_type, program_fd

__all__ = ["XDPFlags", "attach_xdp"]


class XDPFlags(enum.IntFlag):
    """``XDP_FLAGS_*`` from ``linux/if_link.h``.

    With links only one mode flag (or none: the kernel picks native if the
    driver supports it, else generic) is meaningful.  ``UPDATE_IF_NOEXIST``
    is what links always do; ``REPLACE`` is :meth:`Link.update`.
    """

    UPDATE_IF_NOEXIST = 1 << 0
    SKB_MODE = 1 << 1
    DRV_MODE = 1 << 2
    HW_MODE = 1 << 3
    REPLACE = 1 << 4
    # the names users know them by
    GENERIC = SKB_MODE
    NATIVE = DRV_MODE
    OFFLOAD = HW_MODE


_MODES = XDPFlags.SKB_MODE | XDPFlags.DRV_MODE | XDPFlags.HW_MODE


# --------------------------------------------------------------------------
# helpers shared by the network attach modules


def resolve_ifindex(iface: Union[str, int, bytes], what: str) -> int:
    """Interface index of a name or an index, in this thread's netns.

    An unknown interface is an :class:`EBPFError` with errno ENODEV that
    names it, raised before any bpf() call.
    """
    if isinstance(iface, bool) or not isinstance(iface, (str, bytes, int)):
        raise TypeError(f"{what}: interface must be a name or an index, not {type(iface).__name__}")
    if isinstance(iface, int):
        if iface <= 0:
            raise EBPFError(f"{what}: invalid interface index {iface}", errno.EINVAL)
        try:
            socket.if_indextoname(iface)
        except OSError:
            raise EBPFError(f"{what}: no network interface with index {iface} (in this network namespace)",
                            errno.ENODEV) from None
        return iface
    name = os.fsdecode(iface)
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise EBPFError(f"{what}: no network interface named {name!r} (in this network namespace)",
                        errno.ENODEV) from None


def interface_name(ifindex: int) -> str:
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return f"ifindex {ifindex}"


def attach_type_value(attach_type: Any) -> int:
    if isinstance(attach_type, bool) or not isinstance(attach_type, int):
        raise TypeError(f"attach_type must be an ebpf.AttachType, not {type(attach_type).__name__}")
    return int(attach_type)


# --------------------------------------------------------------------------


def attach_xdp(ifname_or_index: Union[str, int], prog: Any, flags: int = 0) -> FDLink:
    """Attach an XDP program to an interface with a ``bpf_link``.

    ``flags`` selects the mode: ``XDPFlags.SKB_MODE`` (generic, any
    interface), ``XDPFlags.DRV_MODE`` (native, needs driver support, else
    :class:`NotSupportedError`) or ``XDPFlags.HW_MODE`` (offload).  An
    interface that already has an XDP program in that mode raises
    :class:`EBPFError` with errno EBUSY.
    """
    prog_fd = program_fd(prog)
    check_program_type(prog, (ProgramType.XDP,), "attach_xdp")
    flags = XDPFlags(int(flags))
    if flags & XDPFlags.REPLACE:
        raise EBPFError("attach_xdp: XDPFlags.REPLACE does not apply to links; use Link.update(prog)", errno.EINVAL)
    modes = flags & _MODES
    if bin(int(modes)).count("1") > 1:
        raise EBPFError(f"attach_xdp: pick one XDP mode, not {modes!r}", errno.EINVAL)
    ifindex = resolve_ifindex(ifname_or_index, "attach_xdp")
    ifname = interface_name(ifindex)
    # Links always refuse to replace a program: UPDATE_IF_NOEXIST is implied
    # and the kernel accepts only mode bits here.
    try:
        fd = _libbpf.link_create(prog_fd, ifindex, int(AttachType.XDP), flags=int(modes))
    except EBPFError as exc:
        raise _xdp_error(exc, ifname, modes) from None
    return FDLink(fd, f"xdp {ifname}")


def _xdp_error(exc: EBPFError, ifname: str, modes: XDPFlags) -> EBPFError:
    mode = {XDPFlags.SKB_MODE: "generic", XDPFlags.DRV_MODE: "native",
            XDPFlags.HW_MODE: "offload"}.get(modes, "default")
    if exc.errno == errno.EBUSY:
        return EBPFError(f"attach_xdp: {ifname} already has an XDP program attached ({mode} mode)", exc.errno)
    if exc.errno == errno.EEXIST:
        return EBPFError(f"attach_xdp: {ifname} already has an XDP program in another mode "
                         f"(generic and native XDP cannot be attached at once)", exc.errno)
    if exc.errno in (errno.EOPNOTSUPP, ENOTSUPP):
        return NotSupportedError(f"{mode} XDP on {ifname}", errno=exc.errno,
                                 detail="the driver cannot run XDP in this mode")
    if exc.errno == errno.EINVAL and modes == XDPFlags.HW_MODE:
        return NotSupportedError(f"offloaded XDP on {ifname}", errno=exc.errno)
    if exc.errno == errno.EINVAL:
        return EBPFError(f"attach_xdp: the kernel refused to attach to {ifname} ({mode} mode): "
                         f"{os.strerror(exc.errno)} (XDP links need kernel 5.9+; the program may use features this "
                         f"mode lacks)", exc.errno)
    return exc
