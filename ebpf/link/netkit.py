"""netkit links (kernel 6.7+ with ``CONFIG_NETKIT``): programs on a netkit pair.

A netkit device pair is a veth-like pair whose datapath is BPF: the
*primary* device (the one created; it usually stays in the host namespace)
runs its programs on every packet it transmits, which the peer then
receives; the *peer* (usually in a container's namespace) runs its own on
what it transmits.  :func:`attach_netkit` is cilium/ebpf's
``link.AttachNetkit``: it always names the *primary* device, and
``NETKIT_PRIMARY``/``NETKIT_PEER`` says which side's list the program joins.
Like tcx hooks, each side holds an ordered list of programs (anchors:
:mod:`ebpf.link.anchor`) returning ``NETKIT_NEXT`` (-1), ``NETKIT_PASS``
(0), ``NETKIT_DROP`` (2) or ``NETKIT_REDIRECT`` (7).

libbpf 1.1.2 predates netkit (``bpf_program__attach_netkit`` is 1.3): the
``BPF_LINK_CREATE`` is issued from ``ebpf._syscall``.
"""

from __future__ import annotations

import errno
from typing import Any, Optional, Union

from ..errors import EBPFError
from ..types import AttachType, ProgramType
from ._link import FDLink, check_program_type, program_fd
from .anchor import Anchor, check_revision, link_create, parse_attach_type
from .xdp import interface_name, resolve_ifindex

__all__ = ["attach_netkit", "NETKIT_NEXT", "NETKIT_PASS", "NETKIT_DROP", "NETKIT_REDIRECT"]

# enum netkit_action (uapi linux/if_link.h)
NETKIT_NEXT = -1
NETKIT_PASS = 0
NETKIT_DROP = 2
NETKIT_REDIRECT = 7

_SIDES = {"primary": AttachType.NETKIT_PRIMARY, "peer": AttachType.NETKIT_PEER}
_LINK_TYPE_NETKIT = 13  # LinkType.NETKIT


def attach_netkit(
    ifname_or_index: Union[str, int],
    prog: Any,
    attach_type: Union[AttachType, str],
    *,
    anchor: Optional[Anchor] = None,
    expected_revision: int = 0,
) -> FDLink:
    """Attach a ``SCHED_CLS`` program to a netkit pair with a link.

    ``ifname_or_index`` is the pair's primary device (in this thread's
    network namespace); ``attach_type`` is ``AttachType.NETKIT_PRIMARY``
    (packets the primary sends) or ``NETKIT_PEER`` (packets the peer sends),
    or ``"primary"``/``"peer"``.  ``anchor`` and ``expected_revision`` work as
    for :func:`~ebpf.link.attach_tcx`.  A kernel without netkit raises
    :class:`~ebpf.errors.NotSupportedError`.
    """
    prog_fd = program_fd(prog)
    check_program_type(prog, (ProgramType.SCHED_CLS,), "attach_netkit")
    at = parse_attach_type(attach_type, _SIDES, "attach_netkit")
    revision = check_revision(expected_revision, "attach_netkit")
    ifindex = resolve_ifindex(ifname_or_index, "attach_netkit")
    ifname = interface_name(ifindex)
    where = f"netkit {ifname} {at.name[7:].lower()}"
    try:
        fd = link_create("attach_netkit", prog_fd, ifindex, at, anchor, revision, where, _LINK_TYPE_NETKIT)
    except EBPFError as exc:
        raise device_error(exc, "attach_netkit", ifname) from None
    return FDLink(fd, where)


def device_error(exc: EBPFError, fn: str, ifname: str) -> EBPFError:
    """What a netkit attach's ENXIO and EACCES mean."""
    if exc.errno == errno.ENXIO:
        return EBPFError(f"{fn}: {ifname} is not a netkit device", exc.errno)
    if exc.errno == errno.EACCES:
        return EBPFError(f"{fn}: {ifname} is the peer of a netkit pair: name the primary device, "
                         f"with attach type NETKIT_PEER for the peer's side", exc.errno)
    return exc
