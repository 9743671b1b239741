"""Raw ``bpf(2)`` and ``perf_event_open(2)`` for what libbpf 1.1.2 lacks.

libbpf 1.1.2's ``bpf_link_create`` cannot express tcx or netfilter links, and
it has no public ``perf_event_open`` wrapper.  This module builds the attribute
blocks itself and calls the syscalls through :func:`ebpf._libbpf.raw_syscall`
(so the C library is still only touched from the shim).  Keep it minimal: each
caller says why it needs the raw call.
"""

from __future__ import annotations

import ctypes
import platform
from typing import Any

from . import _libbpf

# Syscall numbers differ per architecture.
_NR = {
    "x86_64": {"bpf": 321, "perf_event_open": 298},
    "aarch64": {"bpf": 280, "perf_event_open": 241},
    "riscv64": {"bpf": 280, "perf_event_open": 241},
    "ppc64le": {"bpf": 361, "perf_event_open": 319},
    "s390x": {"bpf": 351, "perf_event_open": 331},
}

BPF_LINK_CREATE = 28
BPF_LINK_UPDATE = 29
BPF_LINK_DETACH = 34

# The kernel zero-checks the tail of ``union bpf_attr`` beyond what it knows,
# so a fixed, generously sized zeroed block is always safe to pass.
ATTR_SIZE = 128


def _nr(name: str) -> int:
    arch = platform.machine()
    try:
        return _NR[arch][name]
    except KeyError:
        from .errors import NotSupportedError

        raise NotSupportedError(f"raw {name}() syscall", detail=f"syscall number unknown for {arch}") from None


def bpf(cmd: int, attr: Any, what: str) -> int:
    """``bpf(cmd, &attr, sizeof(attr))``; ``attr`` is a ctypes structure.

    Failures raise the same typed errors as libbpf calls (``what`` names the
    operation in the message).
    """
    size = ctypes.sizeof(attr)
    try:
        return _libbpf.raw_syscall(_nr("bpf"), ctypes.c_long(cmd), ctypes.byref(attr), ctypes.c_long(size))
    except Exception as exc:
        err = getattr(exc, "errno", None)
        if err is not None:
            raise _libbpf.errno_error(err, what) from None
        raise


def perf_event_open(attr: Any, pid: int, cpu: int, group_fd: int = -1, flags: int = 0, what: str = "perf_event_open") -> int:
    """``perf_event_open(2)``; returns the new fd (close-on-exec is the caller's flag)."""
    try:
        return _libbpf.raw_syscall(
            _nr("perf_event_open"), ctypes.byref(attr), ctypes.c_int(pid), ctypes.c_int(cpu),
            ctypes.c_int(group_fd), ctypes.c_ulong(flags),
        )
    except Exception as exc:
        err = getattr(exc, "errno", None)
        if err is not None:
            raise _libbpf.errno_error(err, what) from None
        raise


# setns(2): Python 3.11 has no os.setns.  Network namespaces are per thread,
# so a worker thread can enter one to resolve interface names and talk
# netlink there (legacy tc filters must be detached in the namespace they
# were attached in).
_SETNS_NR = {"x86_64": 308, "aarch64": 268, "riscv64": 268, "ppc64le": 350, "s390x": 339}
CLONE_NEWNET = 0x40000000


def setns(fd: int, nstype: int = 0) -> None:
    """Move the calling thread into the namespace behind ``fd``."""
    import platform as _platform

    nr = _SETNS_NR.get(_platform.machine())
    if nr is None:
        from .errors import NotSupportedError

        raise NotSupportedError("setns()", detail=f"syscall number unknown for {_platform.machine()}")
    _libbpf.raw_syscall(nr, ctypes.c_int(fd), ctypes.c_int(nstype))


# mount(2): tracepoint and kprobe links read ids from tracefs, which a fresh
# system may not have mounted yet; os has no mount().
_MOUNT_NR = {"x86_64": 165, "aarch64": 40, "riscv64": 40, "ppc64le": 21, "s390x": 21}


def mount(source: str, target: str, fstype: str, flags: int = 0) -> None:
    """Mount ``fstype`` on ``target`` (raises the typed errno error)."""
    import platform as _platform

    nr = _MOUNT_NR.get(_platform.machine())
    if nr is None:
        from .errors import NotSupportedError

        raise NotSupportedError("mount()", detail=f"syscall number unknown for {_platform.machine()}")
    _libbpf.raw_syscall(nr, ctypes.c_char_p(source.encode()), ctypes.c_char_p(target.encode()),
                        ctypes.c_char_p(fstype.encode()), ctypes.c_ulong(flags), ctypes.c_void_p(None))


# --------------------------------------------------------------------------
# Kernel structs (uapi layouts), grouped by who uses them.

# -- bpf_*_info (objects by fd/id) --

# -- links --

# -- perf events --

# -- maps and marshalling --

# -- loader --
