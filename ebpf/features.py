"""Feature probes: what the running kernel supports.

Each probe runs once per process and is cached.  Like cilium/ebpf's
``features`` package, a ``have_*`` function returns True when the feature is
there and raises :class:`~ebpf.errors.NotSupportedError` when it is not, so
callers and tests can skip on the exception.
"""

from __future__ import annotations

import copy
import ctypes
import errno
import functools
import os
import struct
from typing import Callable, Dict, Optional, Tuple, Union

from . import _libbpf, _syscall
from ._privilege import bpf_privileged, load_refusal
from .errors import ENOTSUPP, EBPFError, KernelPolicyError, NotSupportedError, PermissionDeniedError
from .types import AttachType, MapFlags, MapType, ProgramType

__all__ = [
    "have_map_type",
    "have_program_type",
    "have_program_helper",
    "object_names_supported",
    "have_batch_api",
    "have_tracing_programs",
    "have_iterator",
    "have_bounded_loops",
    "have_large_instructions",
    "have_v2_isa",
    "have_v3_isa",
    "have_v4_isa",
    "have_map_flag",
    "have_link_type",
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
    return _create_map(t, key, value, entries, flags, what, since)


def _create_map(t: int, key: int, value: int, entries: int, flags: int, what: str,
                since: Optional[str]) -> Optional[EBPFError]:
    """None when the kernel creates this map, else the error ``what`` raises."""
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
    last = log.strip().splitlines()[-1] if log.strip() else ""
    return NotSupportedError(feature, min_kernel="5.5", errno=-fd, detail=last)


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



# --------------------------------------------------------------------------
# Instruction set and verifier limits (cilium's HaveBoundedLoops,
# HaveLargeInstructions, HaveV2ISA/V3ISA/V4ISA): a socket filter that needs
# the feature, loaded.  The verifier refuses what the kernel lacks.


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, dst | src << 4, off, imm)


_EXIT = _insn(0x95)
_MISC: Dict[str, Tuple[str, str, bytes]] = {
    # name: (what, first kernel, program)
    "bounded_loops": ("bounded loops", "5.3",
                      _insn(0xB7, imm=10) + _insn(0x17, imm=1) + _insn(0x55, off=-2) + _EXIT),  # r0 -= 1 until 0
    "large_instructions": ("programs over 4096 instructions", "5.2",
                           _insn(0xB7, imm=1) * 4096 + _EXIT),
    "v2_isa": ("the v2 instruction set (BPF_JLT and friends)", "4.14",
               _insn(0xB7) + _insn(0xA5, off=1) + _insn(0xB7, imm=1) + _EXIT),  # if r0 < 0
    "v3_isa": ("the v3 instruction set (32-bit jumps, BPF_JMP32)", "5.1",
               _insn(0xB7) + _insn(0xA6, off=1) + _insn(0xB7, imm=1) + _EXIT),  # if w0 < 0
    "v4_isa": ("the v4 instruction set (sign extension, gotol, bswap, sdiv)", "6.6",
               _insn(0xB7) + _insn(0x15, off=1, imm=1) + _insn(0x06, imm=1) + _insn(0xB7, imm=1) + _EXIT),  # gotol
}


@functools.lru_cache(maxsize=None)
def _probe_misc(name: str) -> Optional[EBPFError]:
    what, since, insns = _MISC[name]
    # Without a log first: the log of a long program may not fit (ENOSPC).
    fd, log = _libbpf.prog_load_probe(int(ProgramType.SOCKET_FILTER), insns, log_size=0)
    if fd < 0:  # again with the log, to say why
        fd, log = _libbpf.prog_load_probe(int(ProgramType.SOCKET_FILTER), insns, log_size=64 * 1024)
    if fd >= 0:
        os.close(fd)
        return None
    # Without CAP_BPF the verifier is stricter (no back-edges, 4096
    # instructions): its refusal then says nothing about the kernel.
    refused = _unprivileged(what) or load_refusal(f"probe for {what}", ProgramType.SOCKET_FILTER, -fd, log)
    if refused is not None:
        return refused
    last = log.strip().splitlines()[-1] if log.strip() else os.strerror(-fd)
    return NotSupportedError(what, min_kernel=since, errno=-fd, detail=last)


def have_bounded_loops() -> bool:
    """Whether the verifier accepts loops it can prove end (5.3+)."""
    return _raise(_probe_misc("bounded_loops"))


def have_large_instructions() -> bool:
    """Whether programs may be longer than 4096 instructions (the limit is
    a million, and a million verified instructions, since 5.2)."""
    return _raise(_probe_misc("large_instructions"))


def have_v2_isa() -> bool:
    """Whether the kernel knows the v2 instructions (``BPF_JLT``,
    ``BPF_JLE``, ``BPF_JSLT``, ``BPF_JSLE``; 4.14+): clang's ``-mcpu=v2``."""
    return _raise(_probe_misc("v2_isa"))


def have_v3_isa() -> bool:
    """Whether the kernel knows the v3 instructions (``BPF_JMP32``, 32-bit
    atomics; 5.1+): clang's ``-mcpu=v3``."""
    return _raise(_probe_misc("v3_isa"))


def have_v4_isa() -> bool:
    """Whether the kernel knows the v4 instructions (sign-extending loads and
    moves, ``gotol``, unconditional byte swaps, signed division; 6.6+):
    clang's ``-mcpu=v4``."""
    return _raise(_probe_misc("v4_isa"))


# --------------------------------------------------------------------------
# Map flags (cilium's HaveMapFlag): a small map of a type the flag applies
# to, created with it.  The kernel answers EINVAL for a flag it does not know.

_FLAG_PROBES: Dict[int, Tuple[int, int, int, int, int, str]] = {
    # flag: (map type, key size, value size, max entries, flags besides it, first kernel)
    MapFlags.NO_PREALLOC: (MapType.HASH, 4, 4, 1, 0, "4.6"),
    MapFlags.NO_COMMON_LRU: (MapType.LRU_HASH, 4, 4, 1, 0, "4.10"),
    MapFlags.NUMA_NODE: (MapType.HASH, 4, 4, 1, 0, "4.14"),
    MapFlags.RDONLY: (MapType.ARRAY, 4, 4, 1, 0, "4.15"),
    MapFlags.WRONLY: (MapType.ARRAY, 4, 4, 1, 0, "4.15"),
    MapFlags.ZERO_SEED: (MapType.HASH, 4, 4, 1, 0, "5.0"),
    MapFlags.RDONLY_PROG: (MapType.ARRAY, 4, 4, 1, 0, "5.2"),
    MapFlags.WRONLY_PROG: (MapType.ARRAY, 4, 4, 1, 0, "5.2"),
    MapFlags.MMAPABLE: (MapType.ARRAY, 4, 4, 1, 0, "5.5"),
    MapFlags.PRESERVE_ELEMS: (MapType.PERF_EVENT_ARRAY, 4, 4, 1, 0, "5.10"),
    MapFlags.INNER_MAP: (MapType.ARRAY, 4, 4, 1, 0, "5.10"),
    MapFlags.SEGV_ON_FAULT: (MapType.ARENA, 0, 0, 1, MapFlags.MMAPABLE, "6.9"),
    MapFlags.NO_USER_CONV: (MapType.ARENA, 0, 0, 1, MapFlags.MMAPABLE, "6.9"),
}


@functools.lru_cache(maxsize=None)
def _probe_map_flag(flag: int) -> Optional[EBPFError]:
    name = MapFlags(flag).name
    what = f"map flag {name}"
    mtype, key, value, entries, extra, since = _FLAG_PROBES[flag]
    base = _probe_map(int(mtype))  # ARENA flags need arena maps first
    if base is not None:
        return base if isinstance(base, PermissionDeniedError) else NotSupportedError(
            what, min_kernel=since, detail=f"the kernel has no {MapType(mtype).name} maps it applies to")
    return _create_map(int(mtype), key, value, entries, flag | int(extra), what, since)


def have_map_flag(flag: Union[MapFlags, int]) -> bool:
    """Whether maps can be created with ``BPF_F_*`` flag ``flag``
    (cilium's ``HaveMapFlag``); NotSupportedError if not.

    The flag is tried on a map type it applies to (``NO_PREALLOC`` on a
    hash, ``MMAPABLE`` on an array, ``PRESERVE_ELEMS`` on a perf event array,
    ...).  Flags that need more than a map to test (``STACK_BUILD_ID``,
    ``CLONE``, the fd-passing ones) and combinations raise ValueError.
    """
    try:
        key = MapFlags(int(flag))
    except ValueError:
        key = None
    if key is None or int(key) not in _FLAG_PROBES:
        known = ", ".join(str(MapFlags(f).name) for f in _FLAG_PROBES)
        raise ValueError(f"no probe for map flag {flag!r}: one of {known}")
    return _raise(_probe_map_flag(int(key)))


# --------------------------------------------------------------------------
# Link kinds (cilium's HaveBPFLinkKprobeMulti, HaveBPFLinkUprobeMulti and its
# tcx/netkit/netfilter link probes): a minimal program of the right type,
# then BPF_LINK_CREATE with arguments the kernel rejects, if it knows the
# link kind, with an error it gives for nothing else (a bad ifindex, a path
# that is not a file, a hook number out of range).  Only kprobe.multi
# really attaches (to vprintk, as cilium does), and detaches at once.

# enum bpf_link_type values (ebpf.link.LinkType, which lives a layer above).
_KPROBE_MULTI, _NETFILTER, _TCX, _UPROBE_MULTI, _NETKIT = 8, 10, 11, 12, 13


def _link_probe_kprobe_multi(prog_fd: int) -> int:
    return _libbpf.kprobe_multi_link_create(prog_fd, int(AttachType.TRACE_KPROBE_MULTI), symbols=[b"vprintk"])


def _link_probe_uprobe_multi(prog_fd: int) -> int:
    path = ctypes.create_string_buffer(b"/")  # a directory: EBADF where the kind exists
    offsets = (ctypes.c_uint64 * 1)(0)
    attr = _syscall.link_create_attr(prog_fd=prog_fd, attach_type=int(AttachType.TRACE_UPROBE_MULTI))
    um = attr.uprobe_multi
    um.path, um.offsets, um.cnt = ctypes.addressof(path), ctypes.addressof(offsets), 1
    return _syscall.link_create(attr, "uprobe.multi link probe")


def _link_probe_ifindex(attach_type: AttachType) -> Callable[[int], int]:
    def probe(prog_fd: int) -> int:  # ifindex 0 is no device: ENODEV where the kind exists
        attr = _syscall.link_create_attr(prog_fd=prog_fd, target_ifindex=0, attach_type=int(attach_type))
        return _syscall.link_create(attr, f"{attach_type.name} link probe")
    return probe


def _link_probe_netfilter(prog_fd: int) -> int:
    attr = _syscall.link_create_attr(prog_fd=prog_fd, attach_type=int(AttachType.NETFILTER))
    attr.netfilter.pf, attr.netfilter.hooknum = 2, 5  # NFPROTO_IPV4, NF_INET_NUMHOOKS: EPROTO
    return _syscall.link_create(attr, "netfilter link probe")


# link type: (name, first kernel, program type, expected attach type, attach call, errno meaning "present")
_LINK_PROBES: Dict[int, Tuple[str, str, ProgramType, AttachType, Callable[[int], int], Optional[int]]] = {
    _KPROBE_MULTI: ("kprobe.multi links", "5.18", ProgramType.KPROBE, AttachType.TRACE_KPROBE_MULTI,
                    _link_probe_kprobe_multi, None),
    _UPROBE_MULTI: ("uprobe.multi links", "6.6", ProgramType.KPROBE, AttachType.TRACE_UPROBE_MULTI,
                    _link_probe_uprobe_multi, errno.EBADF),
    _TCX: ("tcx links", "6.6", ProgramType.SCHED_CLS, AttachType.NONE, _link_probe_ifindex(AttachType.TCX_INGRESS),
           errno.ENODEV),
    _NETKIT: ("netkit links", "6.7", ProgramType.SCHED_CLS, AttachType.NONE,
              _link_probe_ifindex(AttachType.NETKIT_PRIMARY), errno.ENODEV),
    _NETFILTER: ("netfilter links", "6.4", ProgramType.NETFILTER, AttachType.NETFILTER, _link_probe_netfilter,
                 errno.EPROTO),
}
_LINK_DETAIL = {
    _KPROBE_MULTI: "the kernel has no fprobe (CONFIG_FPROBE) to attach them with",
    _NETKIT: "the kernel has no netkit devices (CONFIG_NETKIT)",
}


@functools.lru_cache(maxsize=None)
def _probe_link(t: int) -> Optional[EBPFError]:
    what, since, ptype, attach, create, present = _LINK_PROBES[t]
    fd, log = _libbpf.prog_load_probe(int(ptype), _RET0, expected_attach_type=int(attach))
    if fd < 0:
        refused = _unprivileged(what) or load_refusal(f"probe for {what}", ptype, -fd, log, attach_type=attach)
        if refused is not None:
            return refused
        # E2BIG/EINVAL: the kernel knows neither the program type nor the attach type
        return NotSupportedError(what, min_kernel=since, errno=-fd,
                                 detail=f"{ptype.name} programs for {attach.name} do not load")
    try:
        link_fd = create(fd)
    except EBPFError as exc:
        if present is not None and exc.errno == present:
            return None
        if exc.errno in (errno.EPERM, errno.EACCES):
            return _unprivileged(what) or NotSupportedError(what, min_kernel=since, errno=exc.errno,
                                                            detail="refused with EPERM")
        detail = _LINK_DETAIL.get(t, "") if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP) else ""
        return NotSupportedError(what, min_kernel=since, errno=exc.errno,
                                 detail=detail or os.strerror(exc.errno or errno.EINVAL))
    finally:
        os.close(fd)
    os.close(link_fd)
    return None


def have_link_type(t: int) -> bool:
    """Whether the kernel makes links of kind ``t``, an
    :class:`ebpf.link.LinkType`: ``KPROBE_MULTI``, ``UPROBE_MULTI``,
    ``TCX``, ``NETKIT`` or ``NETFILTER`` (cilium's ``HaveBPFLinkKprobeMulti``,
    ``HaveBPFLinkUprobeMulti`` and the tcx, netkit and netfilter link probes).

    NotSupportedError names what is missing: the kernel version, or the
    kernel option (kprobe.multi links need ``CONFIG_FPROBE``, netkit links
    ``CONFIG_NETKIT``).  Other link kinds raise ValueError.
    """
    if int(t) not in _LINK_PROBES:
        names = {_KPROBE_MULTI: "KPROBE_MULTI", _UPROBE_MULTI: "UPROBE_MULTI", _TCX: "TCX", _NETKIT: "NETKIT",
                 _NETFILTER: "NETFILTER"}
        raise ValueError(f"no probe for link type {t!r}: one of LinkType.{', LinkType.'.join(names.values())}")
    return _raise(_probe_link(int(t)))
