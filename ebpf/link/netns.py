"""Network-namespace links: sk_lookup and flow dissector programs.

Both hook a whole network namespace rather than an interface; the link
(kernel 5.8+ for flow dissector links, 5.9+ for sk_lookup) holds the
namespace alive until it is closed.  Like cilium/ebpf's ``link.AttachNetNs``.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Optional, Union

from .. import _libbpf
from ..errors import ENOTSUPP, EBPFError, NotSupportedError
from ..types import AttachType, ProgramType
from ._link import FDLink, check_program_type, program_fd
from .xdp import attach_type_value

__all__ = ["attach_netns"]

_ATTACH = {
    ProgramType.SK_LOOKUP: AttachType.SK_LOOKUP,
    ProgramType.FLOW_DISSECTOR: AttachType.FLOW_DISSECTOR,
}


def attach_netns(
    netns: Union[str, "os.PathLike[str]", int],
    prog: Any,
    attach_type: Optional[AttachType] = None,
) -> FDLink:
    """Attach ``prog`` to the network namespace ``netns``.

    ``netns`` is a namespace file (``/proc/self/ns/net``,
    ``/run/netns/<name>``, ``/proc/<pid>/ns/net``) or an open fd of one.
    The attach type follows from the program type (``SK_LOOKUP`` or
    ``FLOW_DISSECTOR``) unless given.
    """
    prog_fd = program_fd(prog)
    check_program_type(prog, _ATTACH, "attach_netns")
    if attach_type is None:
        ptype = getattr(prog, "type", None)
        try:
            at = int(_ATTACH[ProgramType(int(ptype))])  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            raise EBPFError(f"attach_netns: program {getattr(prog, 'name', prog)!r} has no known type: "
                            "pass attach_type=", errno.EINVAL) from None
    else:
        at = attach_type_value(attach_type)
    label = "netns"
    if isinstance(netns, bool):
        raise TypeError("netns must be a path or an fd")
    if isinstance(netns, int):
        ns_fd, label = os.dup(netns), f"netns fd {netns}"
    else:
        path = os.fsdecode(os.fspath(netns))
        label = f"netns {path}"
        try:
            ns_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise EBPFError(f"attach_netns: network namespace {path!r} does not exist", errno.ENOENT) from None
        except OSError as exc:
            raise EBPFError(f"attach_netns: cannot open {path!r}: {exc.strerror}", exc.errno) from None
    try:
        fd = _libbpf.link_create(prog_fd, ns_fd, at)
    except EBPFError as exc:
        at_name = AttachType(at).name if at in AttachType._value2member_map_ else str(at)
        if exc.errno == errno.EINVAL:
            raise EBPFError(f"attach_netns: the kernel refused {at_name} on {label} "
                            "(not a network namespace file, or wrong program type)", exc.errno) from None
        if exc.errno == errno.EEXIST:
            raise EBPFError(f"attach_netns: {label} already has a {at_name} program attached", exc.errno) from None
        if exc.errno in (errno.EOPNOTSUPP, ENOTSUPP):
            raise NotSupportedError(f"{at_name} links", min_kernel="5.8", errno=exc.errno) from None
        raise
    finally:
        os.close(ns_fd)
    return FDLink(fd, label)
