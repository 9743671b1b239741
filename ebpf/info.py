"""What the kernel reports about a map or program (BPF_OBJ_GET_INFO_BY_FD).

``bpf_map_info``/``bpf_prog_info`` are completed, as cilium does, by what
only ``/proc/self/fdinfo/<fd>`` tells: whether a map is frozen, and the
memory charged to a map or program (``memlock``).  Fields a kernel does not
report read as 0 (or ``None`` where 0 is a real value).  Run-time
statistics are :class:`ProgramStats` (see :mod:`ebpf.stats`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from . import _syscall
from ._syscall import BPF_OBJ_NAME_LEN
from .types import MapType, ProgramType, to_enum

__all__ = ["MapInfo", "ProgramInfo", "ProgramStats", "map_info", "program_info", "program_stats"]


@dataclass(frozen=True)
class MapInfo:
    """Kernel view of a map."""

    type: MapType
    id: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str
    btf_id: int
    btf_key_type_id: int
    btf_value_type_id: int
    map_extra: int
    ifindex: int
    # From /proc/self/fdinfo (None when it could not be read).
    frozen: Optional[bool] = None
    memlock: Optional[int] = None
    btf_vmlinux_value_type_id: int = 0


@dataclass(frozen=True)
class ProgramInfo:
    """Kernel view of a program."""

    type: ProgramType
    id: int
    tag: str
    name: str
    map_ids: List[int]
    btf_id: int
    load_time_ns: int
    created_by_uid: int
    gpl_compatible: bool
    run_time_ns: int
    run_count: int
    verified_instructions: int
    xlated_size: int
    jited_size: int
    attach_btf_id: int
    attach_btf_obj_id: int
    recursion_misses: int = 0
    func_info_count: int = 0
    line_info_count: int = 0
    jited_line_info_count: int = 0
    # Kernel addresses of the jited program and its subprograms, and the
    # length of each (empty where kernel.kptr_restrict hides them).
    jited_ksyms: List[int] = field(default_factory=list)
    jited_func_lengths: List[int] = field(default_factory=list)
    ifindex: int = 0
    memlock: Optional[int] = None  # from /proc/self/fdinfo


@dataclass(frozen=True)
class ProgramStats:
    """Run-time statistics of a program (cilium's ``ProgramStats``), counted
    only while statistics are on (:func:`ebpf.enable_stats`).

    ``run_time_ns`` is the total time spent in the program, ``run_count``
    how often it ran and ``recursion_misses`` how often it was not run
    because another program was running on that CPU already.
    """

    run_count: int
    run_time_ns: int
    recursion_misses: int


def _fdinfo(fd: int) -> Dict[str, str]:
    """``/proc/self/fdinfo/<fd>`` as key -> value text (empty without procfs)."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            text = f.read()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _int(text: Optional[str]) -> Optional[int]:
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None


def map_info(fd: int, *, fdinfo: bool = True) -> MapInfo:
    """What the kernel reports about the map behind ``fd``.

    ``fdinfo=False`` skips ``/proc/self/fdinfo`` (``frozen`` and
    ``memlock`` are None then), for callers that need only the definition.
    """
    i = _syscall.map_info(fd)
    extra = _fdinfo(fd) if fdinfo else {}
    frozen = _int(extra.get("frozen"))
    return MapInfo(
        type=to_enum(MapType, i.type),
        id=i.id,
        key_size=i.key_size,
        value_size=i.value_size,
        max_entries=i.max_entries,
        flags=i.map_flags,
        name=i.name.decode(errors="replace"),
        btf_id=i.btf_id,
        btf_key_type_id=i.btf_key_type_id,
        btf_value_type_id=i.btf_value_type_id,
        map_extra=i.map_extra,
        ifindex=i.ifindex,
        frozen=bool(frozen) if frozen is not None else None,
        memlock=_int(extra.get("memlock")),
        btf_vmlinux_value_type_id=i.btf_vmlinux_value_type_id,
    )


def program_info(fd: int) -> ProgramInfo:
    """What the kernel reports about the program behind ``fd``."""
    i = _syscall.prog_info(fd)
    # A second call with buffers for the arrays, sized by the first.
    ids: List[int] = []
    ksyms: List[int] = []
    lengths: List[int] = []
    if i.nr_map_ids or i.nr_jited_ksyms or i.nr_jited_func_lens:
        ids, ksyms, lengths = _syscall.prog_arrays(fd, i)
    name = i.name.decode(errors="replace")
    if len(name) == BPF_OBJ_NAME_LEN - 1 and i.nr_func_info and i.btf_id:
        name = _full_name(fd, i.nr_func_info, i.btf_id) or name
    return ProgramInfo(
        type=to_enum(ProgramType, i.type),
        id=i.id,
        tag=bytes(i.tag).hex(),
        name=name,
        map_ids=ids,
        btf_id=i.btf_id,
        load_time_ns=i.load_time,
        created_by_uid=i.created_by_uid,
        gpl_compatible=bool(i.gpl_compatible),
        run_time_ns=i.run_time_ns,
        run_count=i.run_cnt,
        verified_instructions=i.verified_insns,
        xlated_size=i.xlated_prog_len,
        jited_size=i.jited_prog_len,
        attach_btf_id=i.attach_btf_id,
        attach_btf_obj_id=i.attach_btf_obj_id,
        recursion_misses=i.recursion_misses,
        func_info_count=i.nr_func_info,
        line_info_count=i.nr_line_info,
        jited_line_info_count=i.nr_jited_line_info,
        jited_ksyms=ksyms,
        jited_func_lengths=lengths,
        ifindex=i.ifindex,
        memlock=_int(_fdinfo(fd).get("memlock")),
    )


def _full_name(fd: int, nr_func_info: int, btf_id: int) -> Optional[str]:
    """A name the kernel cut to 15 bytes, whole, as cilium reads it: the
    FUNC of the program's first instruction in its BTF (None if unknown)."""
    import os

    from . import _libbpf
    from .btf import Spec  # a lazily loaded subpackage
    from .errors import EBPFError

    try:
        funcs = dict(_syscall.prog_func_infos(fd, nr_func_info))
        if 0 not in funcs:
            return None
        btf_fd = _libbpf.btf_get_fd_by_id(btf_id)
        try:
            raw = _syscall.btf_data(btf_fd)
        finally:
            os.close(btf_fd)
        # The kernel checked this BTF when the program was loaded: index it,
        # decode the one type.
        return str(Spec.from_raw(raw, validate=False).type_by_id(funcs[0]).name) or None
    except (EBPFError, KeyError, ValueError):
        return None  # no privilege to read BTF, or no such type: keep the kernel's name


def program_stats(fd: int) -> ProgramStats:
    """The run-time statistics of the program behind ``fd``."""
    i = _syscall.prog_info(fd)
    return ProgramStats(run_count=i.run_cnt, run_time_ns=i.run_time_ns, recursion_misses=i.recursion_misses)


def xlated_instructions(fd: int) -> Optional[bytes]:
    """The program as the kernel rewrote it (None when not permitted)."""
    size = _syscall.prog_info(fd).xlated_prog_len
    if not size:
        return None
    return _syscall.prog_xlated_insns(fd, size)
