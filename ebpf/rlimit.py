"""Lift the locked-memory limit that bpf objects were charged to before 5.11.

Kernels since 5.11 account bpf memory to the memory cgroup instead, so
:func:`remove_memlock` only raises RLIMIT_MEMLOCK where that is still needed
(like cilium/ebpf's ``rlimit.RemoveMemlock``).
"""

from __future__ import annotations

import errno
import functools
import resource

from .errors import PermissionDeniedError

__all__ = ["remove_memlock"]


@functools.lru_cache(maxsize=None)
def _memcg_accounting() -> bool:
    """True when the kernel charges bpf memory to memcg (5.11+)."""
    import os

    release = os.uname().release.split("-")[0].split(".")
    try:
        major, minor = int(release[0]), int(release[1])
    except (IndexError, ValueError):
        return False
    return (major, minor) >= (5, 11)


def remove_memlock() -> None:
    """Set RLIMIT_MEMLOCK to infinity when the kernel still uses it for bpf.

    Raises :class:`PermissionDeniedError` if the limit cannot be raised.
    """
    if _memcg_accounting():
        return
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError) as exc:
        raise PermissionDeniedError(
            f"cannot raise RLIMIT_MEMLOCK: {exc} (needs CAP_SYS_RESOURCE)", errno.EPERM
        ) from None
