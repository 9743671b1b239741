"""Feature probes: what the running kernel supports.

Each probe runs once per process and is cached.  Like cilium/ebpf's
``features`` package, a ``have_*`` function returns True when the feature is
there and raises :class:`~ebpf.errors.NotSupportedError` when it is not, so
callers and tests can skip on the exception.
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Union

from .errors import EBPFError, NotSupportedError
from .types import MapType, ProgramType

__all__ = [
    "have_map_type",
    "have_program_type",
    "have_program_helper",
    "object_names_supported",
    "have_batch_api",
]

# First kernel version with each type, for the error message.
_MAP_SINCE = {
    MapType.RINGBUF: "5.8", MapType.USER_RINGBUF: "6.1", MapType.BLOOM_FILTER: "5.16",
    MapType.TASK_STORAGE: "5.11", MapType.INODE_STORAGE: "5.10", MapType.CGRP_STORAGE: "6.2",
    MapType.STRUCT_OPS: "5.6", MapType.ARENA: "6.9", MapType.QUEUE: "4.20", MapType.STACK: "4.20",
}
_PROG_SINCE = {
    ProgramType.SYSCALL: "5.14", ProgramType.NETFILTER: "6.4", ProgramType.LSM: "5.7",
    ProgramType.SK_LOOKUP: "5.9", ProgramType.TRACING: "5.5", ProgramType.EXT: "5.6",
    ProgramType.STRUCT_OPS: "5.6",
}


@functools.lru_cache(maxsize=None)
def _probe_map(t: int) -> int:
    from . import _libbpf

    return int(_libbpf.lib.libbpf_probe_bpf_map_type(t, None))


@functools.lru_cache(maxsize=None)
def _probe_prog(t: int) -> int:
    from . import _libbpf

    return int(_libbpf.lib.libbpf_probe_bpf_prog_type(t, None))


@functools.lru_cache(maxsize=None)
def _probe_helper(t: int, helper: int) -> int:
    from . import _libbpf

    return int(_libbpf.lib.libbpf_probe_bpf_helper(t, helper, None))


def _verdict(result: int, what: str, since: Union[str, None]) -> bool:
    if result == 1:
        return True
    if result == 0:
        raise NotSupportedError(what, min_kernel=since)
    err = -result
    if err in (1, 13):
        from .errors import PermissionDeniedError

        raise PermissionDeniedError(f"probing {what}: {os.strerror(err)} (needs CAP_BPF/CAP_SYS_ADMIN)", err)
    raise NotSupportedError(what, min_kernel=since, errno=err, detail=os.strerror(err) if err < 4000 else "")


def have_map_type(t: Union[MapType, int]) -> bool:
    """True if the kernel can create maps of type ``t``; else NotSupportedError."""
    name = t.name if isinstance(t, MapType) else str(t)
    return _verdict(_probe_map(int(t)), f"map type {name}", _MAP_SINCE.get(t))  # type: ignore[call-overload]


def have_program_type(t: Union[ProgramType, int]) -> bool:
    """True if the kernel can load programs of type ``t``; else NotSupportedError.

    Tracing, LSM and extension programs need an attach target; on kernels
    that refuse them for policy reasons (lockdown) this probe still says the
    type exists -- use :func:`have_tracing_programs` for that question.
    """
    name = t.name if isinstance(t, ProgramType) else str(t)
    return _verdict(_probe_prog(int(t)), f"program type {name}", _PROG_SINCE.get(t))  # type: ignore[call-overload]


def have_program_helper(t: Union[ProgramType, int], helper: int) -> bool:
    """True if programs of type ``t`` may call helper number ``helper``."""
    name = t.name if isinstance(t, ProgramType) else str(t)
    return _verdict(_probe_helper(int(t), int(helper)), f"helper {int(helper)} in {name} programs", None)


@functools.lru_cache(maxsize=None)
def object_names_supported() -> bool:
    """Whether the kernel accepts names for maps and programs (4.15+).

    Used for name fallback: on kernels without it names are dropped, never
    the load.
    """
    from . import _libbpf

    opts = _libbpf.bpf_map_create_opts()
    try:
        fd = _libbpf.lib.bpf_map_create(int(MapType.ARRAY), b"feature_probe", 4, 4, 1, ctypes.byref(opts))
    except EBPFError as exc:
        if exc.errno == 22:
            return False
        raise
    os.close(fd)
    return True


@functools.lru_cache(maxsize=None)
def have_batch_api() -> bool:
    """Whether BPF_MAP_LOOKUP_BATCH works (5.6+)."""
    from . import _libbpf

    opts = _libbpf.bpf_map_create_opts()
    fd = _libbpf.lib.bpf_map_create(int(MapType.ARRAY), None, 4, 4, 1, ctypes.byref(opts))
    try:
        keys = ctypes.create_string_buffer(4)
        vals = ctypes.create_string_buffer(4)
        out = ctypes.create_string_buffer(8)
        n = ctypes.c_uint32(1)
        bopts = _libbpf.bpf_map_batch_opts()
        ret = _libbpf.lib.bpf_map_lookup_batch(fd, None, out, keys, vals, ctypes.byref(n), ctypes.byref(bopts))
        return ret >= 0 or -ret == 2
    finally:
        os.close(fd)
