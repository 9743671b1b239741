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
    "have_tracing_programs",
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


# Verifier messages meaning "this program type cannot call that helper".
# libbpf 1.1's own helper probe only knows the older wordings, and reports
# e.g. bpf_override_return as usable from socket filters on 6.x kernels.
_NO_HELPER = ("unknown func ", "invalid func ", "cannot use helper", "helper call is not allowed")


@functools.lru_cache(maxsize=None)
def _probe_helper(t: int, helper: int) -> int:
    """1 if programs of type ``t`` may call ``helper``, 0 if not, -errno."""
    import ctypes

    from . import _libbpf

    # call helper; r0 = 0; exit -- argument checks come after the verifier
    # has resolved the helper, so any other complaint means "present".
    insns = bytes([0x85, 0, 0, 0]) + int(helper).to_bytes(4, "little")
    insns += bytes([0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])
    log = ctypes.create_string_buffer(64 * 1024)
    opts = _libbpf.bpf_prog_load_opts(log_level=1, log_size=len(log), log_buf=ctypes.addressof(log))
    fd = _libbpf.lib.bpf_prog_load(t, None, b"GPL", insns, len(insns) // 8, ctypes.byref(opts))
    if fd >= 0:
        os.close(fd)
        return 1
    text = log.value.decode(errors="replace")
    if any(m in text for m in _NO_HELPER):
        return 0
    if not text:
        return fd  # refused before verification (privilege, type): report why
    return 1


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


# Kernel functions a probe fentry program can target; the first is the
# kernel's own fentry test target (present with CONFIG_BPF_SYSCALL and NET).
_FENTRY_PROBE_TARGETS = ("bpf_fentry_test1", "bpf_modify_return_test", "do_nanosleep", "ksys_read", "vfs_read")


# _probe_tracing's answer when root may load other programs but not this one.
_REFUSED_BY_POLICY = -4001


@functools.lru_cache(maxsize=None)
def _probe_tracing() -> tuple:
    """(result, target): 1 loaded, 0 no target found, -errno refused,
    _REFUSED_BY_POLICY for EPERM that is not about privileges."""
    from . import _libbpf

    lib = _libbpf.lib
    btf_id, target = 0, ""
    for name in _FENTRY_PROBE_TARGETS:
        try:
            btf_id = int(lib.libbpf_find_vmlinux_btf_id(name.encode(), 24))  # BPF_TRACE_FENTRY
        except EBPFError:
            continue
        target = name
        break
    if not btf_id:
        return 0, ""
    insns = bytes([0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])  # r0 = 0; exit
    log = ctypes.create_string_buffer(4096)
    opts = _libbpf.bpf_prog_load_opts(expected_attach_type=24, attach_btf_id=btf_id, log_level=1,
                                      log_size=len(log), log_buf=ctypes.addressof(log))
    fd = lib.bpf_prog_load(int(ProgramType.TRACING), None, b"GPL", insns, 2, ctypes.byref(opts))
    if fd >= 0:
        os.close(fd)
        return 1, target
    if fd == -1 and not log.value.strip():
        # EPERM with an empty log: privilege, or a policy refusal of tracing
        # programs in particular.  A socket filter tells the two apart.
        sock = bytes([0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])
        sfd = lib.bpf_prog_load(int(ProgramType.SOCKET_FILTER), None, b"GPL", sock, 2, None)
        if sfd >= 0:
            os.close(sfd)
            return _REFUSED_BY_POLICY, target
    return fd, target


def have_tracing_programs() -> bool:
    """Whether the kernel loads tracing programs (fentry/fexit/fmod_ret/freplace, LSM).

    Probed with a minimal fentry program.  Kernels under lockdown refuse
    them with EPERM even to root, which is a :class:`NotSupportedError`
    here (while tp_btf and iterators, of the same program type, still work).
    """
    result, target = _probe_tracing()
    feature = "tracing programs (fentry/fexit/fmod_ret/freplace/LSM)"
    if result == 1:
        return True
    if result == 0:
        raise NotSupportedError(feature, min_kernel="5.5",
                                detail=f"none of {', '.join(_FENTRY_PROBE_TARGETS)} is in the kernel's BTF")
    if result == _REFUSED_BY_POLICY:
        raise NotSupportedError(feature, errno=1,
                                detail=f"the kernel refuses to load them (a fentry program on {target} got EPERM "
                                "with an empty verifier log while other programs load), most likely kernel lockdown")
    return _verdict(result, feature, "5.5")
