"""Feature probes: what the running kernel supports.

Each probe runs once per process and is cached.  Like cilium/ebpf's
``features`` package, a ``have_*`` function returns True when the feature is
there and raises :class:`~ebpf.errors.NotSupportedError` when it is not, so
callers and tests can skip on the exception.
"""

from __future__ import annotations

import copy
import errno
import functools
import os
from typing import Optional, Union

from . import _libbpf
from ._privilege import bpf_privileged, load_refusal
from .errors import EBPFError, KernelPolicyError, NotSupportedError, PermissionDeniedError
from .types import AttachType, MapType, ProgramType

__all__ = [
    "have_map_type",
    "have_program_type",
    "have_program_helper",
    "object_names_supported",
    "have_batch_api",
    "have_tracing_programs",
    "have_iterator",
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


_RET0 = bytes([0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])  # r0 = 0; exit

# Map create attributes a type needs before the kernel looks at anything
# else (as cilium/ebpf's createMapTypeAttr): key size, value size,
# max_entries, flags.  Only for types the installed libbpf cannot probe.
_MAP_ATTRS = {
    MapType.ARENA: (0, 0, 1, 1 << 10),  # one page, BPF_F_MMAPABLE
    MapType.RINGBUF: (0, 0, 4096, 0),
    MapType.USER_RINGBUF: (0, 0, 4096, 0),
    MapType.BLOOM_FILTER: (0, 4, 1, 0),
    MapType.QUEUE: (0, 4, 1, 0),
    MapType.STACK: (0, 4, 1, 0),
}

# Expected attach types a program type needs to load at all.
_PROG_ATTACH = {
    ProgramType.NETFILTER: AttachType.NETFILTER,
    ProgramType.CGROUP_SOCK_ADDR: AttachType.CGROUP_INET4_CONNECT,
    ProgramType.CGROUP_SOCKOPT: AttachType.CGROUP_GETSOCKOPT,
    ProgramType.SK_LOOKUP: AttachType.SK_LOOKUP,
}

# TRACING programs that need neither fentry nor a particular function:
# (attach type, target).
_TRACING_PROBES = (
    (AttachType.TRACE_RAW_TP, "sys_enter"),
    (AttachType.TRACE_RAW_TP, "sched_switch"),
    (AttachType.TRACE_ITER, "task"),
)


def _unprivileged(what: str) -> Optional[EBPFError]:
    if bpf_privileged():
        return None
    return PermissionDeniedError(f"probing {what}: operation not permitted (needs CAP_BPF or CAP_SYS_ADMIN)",
                                 errno.EPERM)


@functools.lru_cache(maxsize=None)
def _probe_map(t: int) -> Optional[EBPFError]:
    """None when maps of type ``t`` can be created, else the error to raise."""
    name = MapType(t).name if t in MapType._value2member_map_ else str(t)
    what = f"map type {name}"
    since = _MAP_SINCE.get(t)  # type: ignore[call-overload]
    result = _libbpf.probe_map_type(t)
    if result == 1:
        return None
    if result != -errno.EOPNOTSUPP:
        return _unprivileged(what) or NotSupportedError(what, min_kernel=since)
    # libbpf does not know the type (newer than the installed release):
    # ask the kernel.  EINVAL/E2BIG mean it does not know it either.
    key, value, entries, flags = _MAP_ATTRS.get(t, (4, 4, 1, 0))  # type: ignore[call-overload]
    try:
        fd = _libbpf.map_create_probe(t, key, value, entries, flags)
    except EBPFError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            return _unprivileged(what) or NotSupportedError(what, min_kernel=since, errno=exc.errno,
                                                            detail="refused with EPERM")
        return NotSupportedError(what, min_kernel=since, errno=exc.errno)
    os.close(fd)
    return None


@functools.lru_cache(maxsize=None)
def _probe_prog(t: int) -> Optional[EBPFError]:
    """None when programs of type ``t`` load, else the error to raise."""
    ptype = ProgramType(t) if t in ProgramType._value2member_map_ else t
    name = getattr(ptype, "name", str(t))
    what = f"program type {name}"
    since = _PROG_SINCE.get(t)  # type: ignore[call-overload]
    result = _libbpf.probe_prog_type(t)
    if result == 1:
        return None
    if t == ProgramType.TRACING:
        # libbpf probes TRACING with an fentry program, which lockdown
        # refuses while tp_btf and iterators (the same type) load.
        for attach, target in _TRACING_PROBES:
            try:
                btf_id = _libbpf.find_vmlinux_btf_id(target, int(attach))
            except EBPFError:
                continue
            fd, _ = _load_traced(int(attach), btf_id)
            if fd >= 0:
                os.close(fd)
                return None
        return NotSupportedError(what, min_kernel=since)
    attach = _PROG_ATTACH.get(t, AttachType.NONE)  # type: ignore[call-overload]
    fd, text = _libbpf.prog_load_probe(t, _RET0, expected_attach_type=int(attach))
    if fd >= 0:
        os.close(fd)
        return None
    refused = load_refusal("probe", ptype, -fd, text, attach_type=attach)
    if refused is not None:
        return refused
    if result == -errno.EOPNOTSUPP and text.strip():
        return None  # a type libbpf does not know, which the verifier did look at
    return NotSupportedError(what, min_kernel=since, errno=-fd)


# Verifier messages meaning "this program type cannot call that helper".
# libbpf 1.1's own helper probe only knows the older wordings, and reports
# e.g. bpf_override_return as usable from socket filters on 6.x kernels.
_NO_HELPER = ("unknown func ", "invalid func ", "cannot use helper", "helper call is not allowed")


@functools.lru_cache(maxsize=None)
def _probe_helper(t: int, helper: int) -> int:
    """1 if programs of type ``t`` may call ``helper``, 0 if not, -errno."""
    # call helper; r0 = 0; exit -- argument checks come after the verifier
    # has resolved the helper, so any other complaint means "present".
    insns = bytes([0x85, 0, 0, 0]) + int(helper).to_bytes(4, "little") + _RET0
    fd, text = _libbpf.prog_load_probe(t, insns, log_size=64 * 1024)
    if fd >= 0:
        os.close(fd)
        return 1
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
    if err in (errno.EPERM, errno.EACCES):
        raise PermissionDeniedError(f"probing {what}: {os.strerror(err)} (needs CAP_BPF/CAP_SYS_ADMIN)", err)
    raise NotSupportedError(what, min_kernel=since, errno=err,
                            detail=os.strerror(err) if err < _libbpf.LIBBPF_ERRNO_START else "")


def _raise(error: Optional[EBPFError]) -> bool:
    # A fresh copy: the cached instance must not collect tracebacks.
    if error is None:
        return True
    raise copy.copy(error)


def have_map_type(t: Union[MapType, int]) -> bool:
    """True if the kernel can create maps of type ``t``; else NotSupportedError.

    Types newer than the installed libbpf are probed with the kernel itself.
    Without CAP_BPF/CAP_SYS_ADMIN this raises PermissionDeniedError: the
    probe cannot tell.
    """
    return _raise(_probe_map(int(t)))


def have_program_type(t: Union[ProgramType, int]) -> bool:
    """True if the kernel can load programs of type ``t``; else NotSupportedError.

    A type the kernel's policy refuses (lockdown, an LSM) raises
    :class:`~ebpf.errors.KernelPolicyError`, a NotSupportedError.  Tracing,
    LSM and extension programs need an attach target; their refusal shows
    only for one, so ask :func:`have_tracing_programs` (fentry/fexit/LSM) or
    :func:`have_iterator` (iterators) about them.
    """
    return _raise(_probe_prog(int(t)))


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
    try:
        fd = _libbpf.map_create_probe(int(MapType.ARRAY), 4, 4, 1, name=b"feature_probe")
    except EBPFError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    os.close(fd)
    return True


@functools.lru_cache(maxsize=None)
def have_batch_api() -> bool:
    """Whether BPF_MAP_LOOKUP_BATCH works (5.6+)."""
    fd = _libbpf.map_create_probe(int(MapType.ARRAY), 4, 4, 1)
    try:
        ret = _libbpf.batch_lookup_probe(fd)
        return ret >= 0 or -ret == errno.ENOENT  # ENOENT: the walk is over, which it is
    finally:
        os.close(fd)


# Kernel functions a probe fentry program can target; the first is the
# kernel's own fentry test target (present with CONFIG_BPF_SYSCALL and NET).
_FENTRY_PROBE_TARGETS = ("bpf_fentry_test1", "bpf_modify_return_test", "do_nanosleep", "ksys_read", "vfs_read")


@functools.lru_cache(maxsize=None)
def _probe_tracing() -> Optional[EBPFError]:
    feature = "tracing programs (fentry/fexit/fmod_ret/freplace/LSM)"
    btf_id, target = 0, ""
    for name in _FENTRY_PROBE_TARGETS:
        try:
            btf_id = _libbpf.find_vmlinux_btf_id(name, int(AttachType.TRACE_FENTRY))
        except EBPFError:
            continue
        target = name
        break
    if not btf_id:
        return NotSupportedError(feature, min_kernel="5.5",
                                 detail=f"none of {', '.join(_FENTRY_PROBE_TARGETS)} is in the kernel's BTF")
    fd, log = _load_traced(int(AttachType.TRACE_FENTRY), btf_id)
    if fd >= 0:
        os.close(fd)
        return None
    refused = load_refusal(f"fentry/{target}", ProgramType.TRACING, -fd, log,
                           attach_type=AttachType.TRACE_FENTRY, target=target)
    if isinstance(refused, KernelPolicyError):
        return KernelPolicyError(feature, program=f"fentry/{target}", detail=(
            f"the kernel refuses to load them by policy (a fentry program on {target} got EPERM before "
            f"the verifier ran, while the caller has CAP_BPF/CAP_SYS_ADMIN), most likely kernel lockdown"))
    if refused is not None:
        return refused
    return NotSupportedError(feature, min_kernel="5.5", errno=-fd, detail=log.strip().splitlines()[-1] if log.strip() else "")


def _load_traced(attach_type: int, btf_id: int) -> "tuple[int, str]":
    """Load ``r0 = 0; exit`` as a TRACING program on ``btf_id``: (fd or
    -errno, verifier log)."""
    return _libbpf.prog_load_probe(int(ProgramType.TRACING), _RET0, expected_attach_type=attach_type,
                                   attach_btf_id=btf_id)


def have_tracing_programs() -> bool:
    """Whether the kernel loads tracing programs (fentry/fexit/fmod_ret/freplace, LSM).

    Probed with a minimal fentry program.  Kernels under lockdown refuse
    them with EPERM even to root: that is a
    :class:`~ebpf.errors.KernelPolicyError` (a NotSupportedError), while
    tp_btf and iterators, of the same program type, may still work.
    """
    return _raise(_probe_tracing())


@functools.lru_cache(maxsize=None)
def _probe_iterator(target: str) -> Optional[EBPFError]:
    feature = f"iterator {target}"
    try:
        btf_id = _libbpf.find_vmlinux_btf_id(target, int(AttachType.TRACE_ITER))
    except EBPFError as exc:
        return NotSupportedError(feature, min_kernel="5.8", errno=exc.errno,
                                 detail=f"the kernel's BTF has no bpf_iter_{target}")
    fd, log = _load_traced(int(AttachType.TRACE_ITER), btf_id)
    if fd >= 0:
        os.close(fd)
        return None
    refused = load_refusal(f"iter/{target}", ProgramType.TRACING, -fd, log,
                           attach_type=AttachType.TRACE_ITER, target=target)
    if refused is not None:
        return refused
    return NotSupportedError(feature, errno=-fd, detail=log.strip().splitlines()[-1] if log.strip() else "")


def have_iterator(target: str) -> bool:
    """Whether iterator programs on ``target`` ("task", "bpf_map",
    "bpf_map_elem", "tcp", ...: the ``SEC("iter/<target>")`` part) load.

    NotSupportedError when the kernel has no such target;
    :class:`~ebpf.errors.KernelPolicyError` when its policy refuses it (some
    kernels refuse ``bpf_map_elem`` iterators while others load);
    PermissionDeniedError without CAP_BPF/CAP_SYS_ADMIN.
    """
    return _raise(_probe_iterator(target))
