"""The kernel's ABI: its structs, and raw syscalls for what libbpf 1.1.2 lacks.

Every kernel struct the library hands to a syscall or reads back from one is
defined here once, laid out as ``include/uapi/linux/bpf.h`` and
``include/uapi/linux/perf_event.h`` have it (unions as ctypes unions, with
the uapi's anonymous members anonymous here too, so a field is reached by
its uapi path: ``info.perf_event.kprobe.func_name``).  A struct may be
larger than what an older kernel knows: the kernel accepts a longer struct
whose tail is zero, and fills in only what it knows of a ``bpf_*_info``.

The raw syscalls: libbpf 1.1.2's ``bpf_link_create`` cannot express tcx
anchors, netfilter links or a cookie on raw tracepoints, and it has no public
``perf_event_open``; ``setns`` and ``mount`` have no ``os`` function.  Each
goes through :func:`ebpf._libbpf.raw_syscall`, so that the C library is still
touched from the shim only.  Keep them minimal: each caller says why it
needs the raw call.

Sections, one per layer that owns the structs in it (new ones go under
their layer's marker): ``bpf_*_info``, links, perf events, maps and
marshalling, loader.
"""

from __future__ import annotations

import ctypes
import errno
import os
from ctypes import Structure, Union, c_char, c_int32, c_uint8, c_uint16, c_uint32, c_uint64
from typing import Any, List, Optional, TypeVar

from . import _libbpf
from .errors import EBPFError, NotSupportedError

_T = TypeVar("_T")

# Syscall numbers differ per architecture.
_NR = {
    "x86_64": {"bpf": 321, "perf_event_open": 298, "setns": 308, "mount": 165},
    "aarch64": {"bpf": 280, "perf_event_open": 241, "setns": 268, "mount": 40},
    "riscv64": {"bpf": 280, "perf_event_open": 241, "setns": 268, "mount": 40},
    "ppc64le": {"bpf": 361, "perf_event_open": 319, "setns": 350, "mount": 21},
    "s390x": {"bpf": 351, "perf_event_open": 331, "setns": 339, "mount": 21},
}

# enum bpf_cmd
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_LINK_CREATE = 28
BPF_LINK_UPDATE = 29
BPF_LINK_DETACH = 34


def _nr(name: str) -> int:
    arch = os.uname().machine
    try:
        return _NR[arch][name]
    except KeyError:
        raise NotSupportedError(f"raw {name}() syscall", detail=f"syscall number unknown for {arch}") from None


def _typed(exc: Exception, what: str) -> Exception:
    """The typed error of a failed raw syscall, named after the operation."""
    err = getattr(exc, "errno", None)
    if err is not None:
        return _libbpf.errno_error(err, what)
    return exc


def bpf(cmd: int, attr: Any, what: str) -> int:
    """``bpf(cmd, &attr, sizeof(attr))``; ``attr`` is one member of ``union
    bpf_attr`` below.  Failures raise the same typed errors as libbpf calls
    (``what`` names the operation in the message)."""
    try:
        return _libbpf.raw_syscall(_nr("bpf"), ctypes.c_long(cmd), ctypes.byref(attr),
                                   ctypes.c_long(ctypes.sizeof(attr)))
    except Exception as exc:
        raise _typed(exc, what) from None


def perf_event_open(attr: "perf_event_attr", pid: int, cpu: int, group_fd: int = -1, flags: int = 0,
                    what: str = "perf_event_open") -> int:
    """``perf_event_open(2)``; returns the new fd (close-on-exec is the caller's flag)."""
    try:
        return _libbpf.raw_syscall(
            _nr("perf_event_open"), ctypes.byref(attr), ctypes.c_int(pid), ctypes.c_int(cpu),
            ctypes.c_int(group_fd), ctypes.c_ulong(flags),
        )
    except Exception as exc:
        raise _typed(exc, what) from None


# setns(2): Python 3.11 has no os.setns.  Network namespaces are per thread,
# so a worker thread can enter one to resolve interface names and talk
# netlink there (legacy tc filters must be detached in the namespace they
# were attached in).
CLONE_NEWNET = 0x40000000


def setns(fd: int, nstype: int = 0) -> None:
    """Move the calling thread into the namespace behind ``fd``."""
    _libbpf.raw_syscall(_nr("setns"), ctypes.c_int(fd), ctypes.c_int(nstype))


# mount(2): tracepoint and kprobe links read ids from tracefs, which a fresh
# system may not have mounted yet; os has no mount().


def mount(source: str, target: str, fstype: str, flags: int = 0) -> None:
    """Mount ``fstype`` on ``target`` (raises the typed errno error)."""
    _libbpf.raw_syscall(_nr("mount"), ctypes.c_char_p(source.encode()), ctypes.c_char_p(target.encode()),
                        ctypes.c_char_p(fstype.encode()), ctypes.c_ulong(flags), ctypes.c_void_p(None))


def _path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


# --------------------------------------------------------------------------
# Kernel structs (uapi layouts), grouped by who uses them.

# -- bpf_*_info (objects by fd/id) --

BPF_OBJ_NAME_LEN = 16
BPF_TAG_SIZE = 8


class bpf_map_info(Structure):
    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("key_size", c_uint32),
        ("value_size", c_uint32),
        ("max_entries", c_uint32),
        ("map_flags", c_uint32),
        ("name", c_char * BPF_OBJ_NAME_LEN),
        ("ifindex", c_uint32),
        ("btf_vmlinux_value_type_id", c_uint32),
        ("netns_dev", c_uint64),
        ("netns_ino", c_uint64),
        ("btf_id", c_uint32),
        ("btf_key_type_id", c_uint32),
        ("btf_value_type_id", c_uint32),
        ("btf_vmlinux_id", c_uint32),
        ("map_extra", c_uint64),
        ("hash", c_uint64),
        ("hash_size", c_uint32),
        ("_pad", c_uint32),
    ]


class bpf_prog_info(Structure):
    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("tag", c_uint8 * BPF_TAG_SIZE),
        ("jited_prog_len", c_uint32),
        ("xlated_prog_len", c_uint32),
        ("jited_prog_insns", c_uint64),
        ("xlated_prog_insns", c_uint64),
        ("load_time", c_uint64),  # ns since boot
        ("created_by_uid", c_uint32),
        ("nr_map_ids", c_uint32),
        ("map_ids", c_uint64),
        ("name", c_char * BPF_OBJ_NAME_LEN),
        ("ifindex", c_uint32),
        ("gpl_compatible", c_uint32, 1),
        ("_pad0", c_uint32, 31),
        ("netns_dev", c_uint64),
        ("netns_ino", c_uint64),
        ("nr_jited_ksyms", c_uint32),
        ("nr_jited_func_lens", c_uint32),
        ("jited_ksyms", c_uint64),
        ("jited_func_lens", c_uint64),
        ("btf_id", c_uint32),
        ("func_info_rec_size", c_uint32),
        ("func_info", c_uint64),
        ("nr_func_info", c_uint32),
        ("nr_line_info", c_uint32),
        ("line_info", c_uint64),
        ("jited_line_info", c_uint64),
        ("nr_jited_line_info", c_uint32),
        ("line_info_rec_size", c_uint32),
        ("jited_line_info_rec_size", c_uint32),
        ("nr_prog_tags", c_uint32),
        ("prog_tags", c_uint64),
        ("run_time_ns", c_uint64),
        ("run_cnt", c_uint64),
        ("recursion_misses", c_uint64),
        ("verified_insns", c_uint32),
        ("attach_btf_obj_id", c_uint32),
        ("attach_btf_id", c_uint32),
        ("_pad1", c_uint32),
    ]


class bpf_btf_info(Structure):
    _fields_ = [
        ("btf", c_uint64),
        ("btf_size", c_uint32),
        ("id", c_uint32),
        ("name", c_uint64),
        ("name_len", c_uint32),
        ("kernel_btf", c_uint32),
    ]


class _link_info_raw_tracepoint(Structure):
    _fields_ = [("tp_name", c_uint64), ("tp_name_len", c_uint32), ("_pad", c_uint32), ("cookie", c_uint64)]


class _link_info_tracing(Structure):
    _fields_ = [("attach_type", c_uint32), ("target_obj_id", c_uint32), ("target_btf_id", c_uint32),
                ("_pad", c_uint32), ("cookie", c_uint64)]


class _link_info_cgroup(Structure):
    _fields_ = [("cgroup_id", c_uint64), ("attach_type", c_uint32)]


class _link_info_iter_map(Structure):
    _fields_ = [("map_id", c_uint32)]


class _link_info_iter_first(Union):
    _fields_ = [("map", _link_info_iter_map)]


class _link_info_iter_cgroup(Structure):
    _fields_ = [("cgroup_id", c_uint64), ("order", c_uint32)]


class _link_info_iter_task(Structure):
    _fields_ = [("tid", c_uint32), ("pid", c_uint32)]


class _link_info_iter_second(Union):
    _fields_ = [("cgroup", _link_info_iter_cgroup), ("task", _link_info_iter_task)]


class _link_info_iter(Structure):
    _anonymous_ = ("_u1", "_u2")
    _fields_ = [("target_name", c_uint64), ("target_name_len", c_uint32),
                ("_u1", _link_info_iter_first), ("_u2", _link_info_iter_second)]


class _link_info_netns(Structure):
    _fields_ = [("netns_ino", c_uint32), ("attach_type", c_uint32)]


class _link_info_xdp(Structure):
    _fields_ = [("ifindex", c_uint32)]


class _link_info_struct_ops(Structure):
    _fields_ = [("map_id", c_uint32)]


class _link_info_netfilter(Structure):
    _fields_ = [("pf", c_uint32), ("hooknum", c_uint32), ("priority", c_int32), ("flags", c_uint32)]


class _link_info_kprobe_multi(Structure):
    _fields_ = [("addrs", c_uint64), ("count", c_uint32), ("flags", c_uint32), ("missed", c_uint64),
                ("cookies", c_uint64)]


class _link_info_uprobe_multi(Structure):
    _fields_ = [("path", c_uint64), ("offsets", c_uint64), ("ref_ctr_offsets", c_uint64), ("cookies", c_uint64),
                ("path_size", c_uint32), ("count", c_uint32), ("flags", c_uint32), ("pid", c_uint32)]


class _link_info_tracing_multi(Structure):
    _fields_ = [("attach_type", c_uint32), ("count", c_uint32), ("btf_obj_id", c_uint32), ("_pad", c_uint32),
                ("ids", c_uint64), ("addrs", c_uint64), ("cookies", c_uint64)]


class _perf_event_uprobe(Structure):
    _fields_ = [("file_name", c_uint64), ("name_len", c_uint32), ("offset", c_uint32), ("cookie", c_uint64),
                ("ref_ctr_offset", c_uint64)]


class _perf_event_kprobe(Structure):
    _fields_ = [("func_name", c_uint64), ("name_len", c_uint32), ("offset", c_uint32), ("addr", c_uint64),
                ("missed", c_uint64), ("cookie", c_uint64)]


class _perf_event_tracepoint(Structure):
    _fields_ = [("tp_name", c_uint64), ("name_len", c_uint32), ("_pad", c_uint32), ("cookie", c_uint64)]


class _perf_event_event(Structure):
    _fields_ = [("config", c_uint64), ("type", c_uint32), ("_pad", c_uint32), ("cookie", c_uint64)]


class _perf_event_union(Union):
    _fields_ = [("uprobe", _perf_event_uprobe), ("kprobe", _perf_event_kprobe),
                ("tracepoint", _perf_event_tracepoint), ("event", _perf_event_event)]


class _link_info_perf_event(Structure):
    _anonymous_ = ("_u",)
    _fields_ = [("type", c_uint32), ("_pad", c_uint32), ("_u", _perf_event_union)]


class _link_info_ifindex(Structure):  # tcx, netkit
    _fields_ = [("ifindex", c_uint32), ("attach_type", c_uint32)]


class _link_info_sockmap(Structure):
    _fields_ = [("map_id", c_uint32), ("attach_type", c_uint32)]


class _link_info_union(Union):
    _fields_ = [
        ("raw_tracepoint", _link_info_raw_tracepoint),
        ("tracing", _link_info_tracing),
        ("cgroup", _link_info_cgroup),
        ("iter", _link_info_iter),
        ("netns", _link_info_netns),
        ("xdp", _link_info_xdp),
        ("struct_ops", _link_info_struct_ops),
        ("netfilter", _link_info_netfilter),
        ("kprobe_multi", _link_info_kprobe_multi),
        ("uprobe_multi", _link_info_uprobe_multi),
        ("tracing_multi", _link_info_tracing_multi),
        ("perf_event", _link_info_perf_event),
        ("tcx", _link_info_ifindex),
        ("netkit", _link_info_ifindex),
        ("sockmap", _link_info_sockmap),
    ]


class bpf_link_info(Structure):
    _anonymous_ = ("_u",)
    _fields_ = [("type", c_uint32), ("id", c_uint32), ("prog_id", c_uint32), ("_u", _link_info_union)]


def map_info(fd: int) -> bpf_map_info:
    """The kernel's ``bpf_map_info`` of the map behind ``fd``."""
    return _libbpf.obj_get_info(fd, bpf_map_info())  # type: ignore[no-any-return]


def prog_info(fd: int) -> bpf_prog_info:
    """The kernel's ``bpf_prog_info`` of the program behind ``fd``."""
    return _libbpf.obj_get_info(fd, bpf_prog_info())  # type: ignore[no-any-return]


def prog_arrays(fd: int, info: bpf_prog_info) -> "tuple[List[int], List[int], List[int]]":
    """A program's map ids, jited symbol addresses and jited function
    lengths, in one second info call sized by the first (``info``).  The
    kernel leaves the addresses and lengths out (zero) without the privilege
    to see kernel addresses (``kernel.kptr_restrict``)."""
    n_maps, n_ksyms, n_lens = info.nr_map_ids, info.nr_jited_ksyms, info.nr_jited_func_lens
    ids = (c_uint32 * max(n_maps, 1))()
    ksyms = (c_uint64 * max(n_ksyms, 1))()
    lens = (c_uint32 * max(n_lens, 1))()
    second = bpf_prog_info(nr_map_ids=n_maps, nr_jited_ksyms=n_ksyms, nr_jited_func_lens=n_lens)
    if n_maps:
        second.map_ids = ctypes.addressof(ids)
    if n_ksyms:
        second.jited_ksyms = ctypes.addressof(ksyms)
    if n_lens:
        second.jited_func_lens = ctypes.addressof(lens)
    got = _libbpf.obj_get_info(fd, second)
    # A pointer the kernel zeroed: it withheld that array.
    return (list(ids[: min(got.nr_map_ids, n_maps)]),
            list(ksyms[: min(got.nr_jited_ksyms, n_ksyms)]) if got.jited_ksyms else [],
            list(lens[: min(got.nr_jited_func_lens, n_lens)]) if got.jited_func_lens else [])


def prog_func_infos(fd: int, count: int) -> List["tuple[int, int]"]:
    """A program's ``bpf_func_info`` records: (instruction offset, BTF type
    id) of each of its functions."""
    recs = (c_uint32 * (2 * max(count, 1)))()
    info = _libbpf.obj_get_info(fd, bpf_prog_info(nr_func_info=count, func_info_rec_size=8,
                                                  func_info=ctypes.addressof(recs)))
    n = min(info.nr_func_info, count) if info.func_info else 0
    return [(recs[2 * i], recs[2 * i + 1]) for i in range(n)]


def prog_xlated_insns(fd: int, size: int) -> bytes:
    """``size`` bytes of the program as the kernel rewrote it."""
    buf = ctypes.create_string_buffer(size)
    _libbpf.obj_get_info(fd, bpf_prog_info(xlated_prog_len=size, xlated_prog_insns=ctypes.addressof(buf)))
    return buf.raw


def link_info(fd: int) -> bpf_link_info:
    """The kernel's ``bpf_link_info`` of the link behind ``fd``."""
    return _libbpf.obj_get_info(fd, bpf_link_info())  # type: ignore[no-any-return]


def link_info_string(fd: int, member: str, name: str, length: str, size: int) -> str:
    """The string a link's info names by pointer: a second info call hands
    the kernel a ``size``-byte buffer in ``member.name`` (e.g.
    ``"perf_event.kprobe"``, ``"func_name"``, ``"name_len"``)."""
    if not size:
        return ""
    buf = ctypes.create_string_buffer(size)
    info = bpf_link_info()
    part = _path(info, member)
    setattr(part, name, ctypes.addressof(buf))
    setattr(part, length, size)
    _libbpf.obj_get_info(fd, info)
    return buf.value.decode(errors="replace")


def btf_data(btf_fd: int) -> bytes:
    """The raw BTF a kernel BTF object holds (``bpf_btf_info.btf``)."""
    size = _libbpf.obj_get_info(btf_fd, bpf_btf_info()).btf_size
    buf = ctypes.create_string_buffer(size)
    info = _libbpf.obj_get_info(btf_fd, bpf_btf_info(btf=ctypes.addressof(buf), btf_size=size))
    return buf.raw[: min(size, info.btf_size)]


# -- links --

# union bpf_attr, member raw_tracepoint (BPF_RAW_TRACEPOINT_OPEN); cookie since 6.10.
class raw_tracepoint_attr(Structure):
    _fields_ = [("name", c_uint64), ("prog_fd", c_uint32), ("_pad", c_uint32), ("cookie", c_uint64)]


class _link_create_iter(Structure):
    _fields_ = [("iter_info", c_uint64), ("iter_info_len", c_uint32)]


class _link_create_perf_event(Structure):
    _fields_ = [("bpf_cookie", c_uint64)]


class _link_create_kprobe_multi(Structure):
    _fields_ = [("flags", c_uint32), ("cnt", c_uint32), ("syms", c_uint64), ("addrs", c_uint64), ("cookies", c_uint64)]


class _link_create_tracing(Structure):
    _fields_ = [("target_btf_id", c_uint32), ("cookie", c_uint64)]


class _link_create_netfilter(Structure):
    _fields_ = [("pf", c_uint32), ("hooknum", c_uint32), ("priority", c_int32), ("flags", c_uint32)]


class _relative(Union):
    _fields_ = [("relative_fd", c_uint32), ("relative_id", c_uint32)]


class _link_create_relative(Structure):  # tcx, netkit, cgroup (mprog anchors)
    _anonymous_ = ("_u",)
    _fields_ = [("_u", _relative), ("expected_revision", c_uint64)]


class _link_create_uprobe_multi(Structure):
    _fields_ = [("path", c_uint64), ("offsets", c_uint64), ("ref_ctr_offsets", c_uint64), ("cookies", c_uint64),
                ("cnt", c_uint32), ("flags", c_uint32), ("pid", c_uint32), ("path_fd", c_uint32)]


class _link_create_tracing_multi(Structure):
    _fields_ = [("ids", c_uint64), ("cookies", c_uint64), ("cnt", c_uint32)]


class _link_create_union(Union):
    _anonymous_ = ("_iter",)
    _fields_ = [
        ("target_btf_id", c_uint32),
        ("_iter", _link_create_iter),
        ("perf_event", _link_create_perf_event),
        ("kprobe_multi", _link_create_kprobe_multi),
        ("tracing", _link_create_tracing),
        ("netfilter", _link_create_netfilter),
        ("tcx", _link_create_relative),
        ("uprobe_multi", _link_create_uprobe_multi),
        ("netkit", _link_create_relative),
        ("cgroup", _link_create_relative),
        ("tracing_multi", _link_create_tracing_multi),
    ]


class _fd_or_map(Union):
    _fields_ = [("prog_fd", c_uint32), ("map_fd", c_uint32)]


class _target(Union):
    _fields_ = [("target_fd", c_uint32), ("target_ifindex", c_uint32)]


class link_create_attr(Structure):
    """``union bpf_attr``, member ``link_create`` (``BPF_LINK_CREATE``)."""

    _anonymous_ = ("_prog", "_target", "_u")
    _fields_ = [("_prog", _fd_or_map), ("_target", _target), ("attach_type", c_uint32), ("flags", c_uint32),
                ("_u", _link_create_union)]


class _iter_link_info_map(Structure):
    _fields_ = [("map_fd", c_uint32)]


class _iter_link_info_cgroup(Structure):
    _fields_ = [("order", c_uint32), ("cgroup_fd", c_uint32), ("cgroup_id", c_uint64)]


class _iter_link_info_task(Structure):
    _fields_ = [("tid", c_uint32), ("pid", c_uint32), ("pid_fd", c_uint32)]


class bpf_iter_link_info(Union):
    """``union bpf_iter_link_info``: which object an iterator walks."""

    _fields_ = [("map", _iter_link_info_map), ("cgroup", _iter_link_info_cgroup), ("task", _iter_link_info_task)]


def link_create(attr: link_create_attr, what: str) -> int:
    """``BPF_LINK_CREATE`` with an attribute block libbpf 1.1.2 cannot build."""
    return bpf(BPF_LINK_CREATE, attr, what)


# BPF_PROG_ATTACH/DETACH/QUERY with the multi-program fields of 6.6 (tcx,
# netkit): relative_fd/id, expected_revision, link_ids and revision.
# libbpf 1.1.2's bpf_prog_attach_opts and bpf_prog_query_opts predate them.
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_QUERY = 16


class prog_attach_attr(Structure):
    """``union bpf_attr``, the ``BPF_PROG_ATTACH``/``BPF_PROG_DETACH`` member."""

    _anonymous_ = ("_target", "_relative")
    _fields_ = [("_target", _target), ("attach_bpf_fd", c_uint32), ("attach_type", c_uint32),
                ("attach_flags", c_uint32), ("replace_bpf_fd", c_uint32), ("_relative", _relative),
                ("expected_revision", c_uint64)]


class _query_count(Union):
    _fields_ = [("prog_cnt", c_uint32), ("count", c_uint32)]


class prog_query_attr(Structure):
    """``union bpf_attr``, the ``BPF_PROG_QUERY`` member."""

    _anonymous_ = ("_target", "_count")
    _fields_ = [("_target", _target), ("attach_type", c_uint32), ("query_flags", c_uint32),
                ("attach_flags", c_uint32), ("prog_ids", c_uint64), ("_count", _query_count), ("_pad", c_uint32),
                ("prog_attach_flags", c_uint64), ("link_ids", c_uint64), ("link_attach_flags", c_uint64),
                ("revision", c_uint64)]


def prog_attach(attr: prog_attach_attr, what: str) -> None:
    """``BPF_PROG_ATTACH`` with anchors and a revision."""
    bpf(BPF_PROG_ATTACH, attr, what)


def prog_detach(attr: prog_attach_attr, what: str) -> None:
    """``BPF_PROG_DETACH``."""
    bpf(BPF_PROG_DETACH, attr, what)


def prog_query(attr: prog_query_attr, capacity: int, what: str) -> "tuple[List[int], List[int]]":
    """``BPF_PROG_QUERY`` into ``attr`` (target and attach type set): the ids
    of the attached programs and of their links (0: attached without one),
    in the hook's order; ``attr.revision`` is filled in.  ``capacity`` is how
    many the buffers hold; the caller retries with ``attr.count`` if that was
    too few (ENOSPC)."""
    progs = (c_uint32 * max(capacity, 1))()
    links = (c_uint32 * max(capacity, 1))()
    attr.prog_ids = ctypes.addressof(progs)
    attr.link_ids = ctypes.addressof(links)
    attr.count = capacity
    bpf(BPF_PROG_QUERY, attr, what)
    n = min(attr.count, capacity)
    return list(progs[:n]), list(links[:n])


def uprobe_multi_link_info(fd: int, count: int, path_size: int) -> "tuple[bpf_link_info, str, List[List[int]]]":
    """A uprobe.multi link's info with what it points to: the path, and the
    offsets, semaphore offsets and cookies of its ``count`` probes."""
    path = ctypes.create_string_buffer(max(path_size, 1))
    arrays = [(c_uint64 * max(count, 1))() for _ in range(3)]
    info = bpf_link_info()
    um = info.uprobe_multi
    um.path, um.path_size = ctypes.addressof(path), max(path_size, 1)
    um.offsets, um.ref_ctr_offsets, um.cookies = (ctypes.addressof(a) for a in arrays)
    um.count = max(count, 1)
    _libbpf.obj_get_info(fd, info)
    n = min(um.count, count)
    return info, path.value.decode(errors="replace"), [list(a[:n]) for a in arrays]


def raw_tracepoint_open(name: str, prog_fd: int, cookie: int, what: str) -> int:
    """``BPF_RAW_TRACEPOINT_OPEN`` with a cookie (libbpf 1.1.2 has no way to pass one)."""
    buf = ctypes.create_string_buffer(name.encode())
    attr = raw_tracepoint_attr(name=ctypes.addressof(buf), prog_fd=prog_fd, cookie=cookie)
    return bpf(BPF_RAW_TRACEPOINT_OPEN, attr, what)


# -- perf events --

# enum perf_type_id
PERF_TYPE_HARDWARE = 0
PERF_TYPE_SOFTWARE = 1
PERF_TYPE_TRACEPOINT = 2
# enum perf_sw_ids
PERF_COUNT_SW_CPU_CLOCK = 0
PERF_COUNT_SW_BPF_OUTPUT = 10
# enum perf_event_sample_format
PERF_SAMPLE_RAW = 1 << 10
# enum perf_event_type
PERF_RECORD_LOST = 2
PERF_RECORD_SAMPLE = 9

PERF_FLAG_FD_CLOEXEC = 1 << 3

# ioctls: _IO('$', 0), _IO('$', 1), _IOW('$', 8, __u32)
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_DISABLE = 0x2401
PERF_EVENT_IOC_SET_BPF = 0x40042408


class _perf_sample(Union):
    _fields_ = [("sample_period", c_uint64), ("sample_freq", c_uint64)]


_PERF_FLAG_BITS = [
    ("disabled", 1), ("inherit", 1), ("pinned", 1), ("exclusive", 1), ("exclude_user", 1), ("exclude_kernel", 1),
    ("exclude_hv", 1), ("exclude_idle", 1), ("mmap", 1), ("comm", 1), ("freq", 1), ("inherit_stat", 1),
    ("enable_on_exec", 1), ("task", 1), ("watermark", 1), ("precise_ip", 2), ("mmap_data", 1),
    ("sample_id_all", 1), ("exclude_host", 1), ("exclude_guest", 1), ("exclude_callchain_kernel", 1),
    ("exclude_callchain_user", 1), ("mmap2", 1), ("comm_exec", 1), ("use_clockid", 1), ("context_switch", 1),
    ("write_backward", 1), ("namespaces", 1), ("ksymbol", 1), ("bpf_event", 1), ("aux_output", 1),
    ("cgroup", 1), ("text_poke", 1), ("build_id", 1), ("inherit_thread", 1), ("remove_on_exec", 1),
    ("sigtrap", 1), ("defer_callchain", 1), ("defer_output", 1), ("_reserved_1", 24),
]


class _perf_flag_bits(Structure):
    _fields_ = [(name, c_uint64, bits) for name, bits in _PERF_FLAG_BITS]


class _perf_flags(Union):
    # ``flags`` is the whole bitfield word, for code that sets several at once.
    _anonymous_ = ("_bits",)
    _fields_ = [("flags", c_uint64), ("_bits", _perf_flag_bits)]


class _perf_wakeup(Union):
    _fields_ = [("wakeup_events", c_uint32), ("wakeup_watermark", c_uint32)]


class _perf_config1(Union):
    _fields_ = [("bp_addr", c_uint64), ("kprobe_func", c_uint64), ("uprobe_path", c_uint64), ("config1", c_uint64)]


class _perf_config2(Union):
    _fields_ = [("bp_len", c_uint64), ("kprobe_addr", c_uint64), ("probe_offset", c_uint64), ("config2", c_uint64)]


class _perf_aux_bits(Structure):
    _fields_ = [("aux_start_paused", c_uint32, 1), ("aux_pause", c_uint32, 1), ("aux_resume", c_uint32, 1),
                ("_reserved_3", c_uint32, 29)]


class _perf_aux(Union):
    _anonymous_ = ("_bits",)
    _fields_ = [("aux_action", c_uint32), ("_bits", _perf_aux_bits)]


class perf_event_attr(Structure):
    """``struct perf_event_attr`` (PERF_ATTR_SIZE_VER9, 144 bytes).

    ``size`` is filled in.  :meth:`set_probe` points ``kprobe_func`` /
    ``uprobe_path`` at a name the struct keeps alive.
    """

    _anonymous_ = ("_sample", "_flags", "_wakeup", "_config1", "_config2", "_aux")
    _fields_ = [
        ("type", c_uint32),
        ("size", c_uint32),
        ("config", c_uint64),
        ("_sample", _perf_sample),
        ("sample_type", c_uint64),
        ("read_format", c_uint64),
        ("_flags", _perf_flags),
        ("_wakeup", _perf_wakeup),
        ("bp_type", c_uint32),
        ("_config1", _perf_config1),
        ("_config2", _perf_config2),
        ("branch_sample_type", c_uint64),
        ("sample_regs_user", c_uint64),
        ("sample_stack_user", c_uint32),
        ("clockid", c_int32),
        ("sample_regs_intr", c_uint64),
        ("aux_watermark", c_uint32),
        ("sample_max_stack", c_uint16),
        ("_reserved_2", c_uint16),
        ("aux_sample_size", c_uint32),
        ("_aux", _perf_aux),
        ("sig_data", c_uint64),
        ("config3", c_uint64),
        ("config4", c_uint64),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size = ctypes.sizeof(self)
        self._name: Optional[Any] = None

    def set_probe(self, name: bytes, offset: int = 0) -> None:
        """A kprobe PMU event on function ``name`` or a uprobe PMU event on
        file ``name``, ``offset`` bytes in (``config1``/``config2``)."""
        self._name = ctypes.create_string_buffer(name)
        self.config1 = ctypes.addressof(self._name)
        self.config2 = offset


# -- maps and marshalling --

# renameat2(2) with RENAME_NOREPLACE: moving a pin (cilium's Pin of an object
# already pinned elsewhere) must never replace a file at the new path, and
# os.rename would; Python has no renameat2.
_RENAMEAT2_NR = {"x86_64": 316, "aarch64": 276, "riscv64": 276, "ppc64le": 357, "s390x": 347}
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def rename_noreplace(old: str, new: str) -> None:
    """Rename ``old`` to ``new``; OSError (FileExistsError, ...) on failure."""
    nr = _RENAMEAT2_NR.get(os.uname().machine)
    if nr is None:
        # No syscall number: refuse to overwrite, then rename (not atomic).
        if os.path.lexists(new):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), new)
        os.rename(old, new)
        return
    try:
        _libbpf.raw_syscall(nr, ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(os.fsencode(old)),
                            ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(os.fsencode(new)),
                            ctypes.c_uint(_RENAME_NOREPLACE))
    except EBPFError as exc:
        err = exc.errno or errno.EINVAL
        raise OSError(err, os.strerror(err), new) from None


# -- loader --
