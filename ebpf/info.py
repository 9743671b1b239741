"""What the kernel reports about a map or program (BPF_OBJ_GET_INFO_BY_FD)."""

from __future__ import annotations

import ctypes
from ctypes import c_char, c_uint8, c_uint32, c_uint64
from dataclasses import dataclass
from typing import Any, List, Optional

from .types import MapType, ProgramType

__all__ = ["MapInfo", "ProgramInfo", "map_info", "program_info"]


class _bpf_map_info(ctypes.Structure):
    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("key_size", c_uint32),
        ("value_size", c_uint32),
        ("max_entries", c_uint32),
        ("map_flags", c_uint32),
        ("name", c_char * 16),
        ("ifindex", c_uint32),
        ("btf_vmlinux_value_type_id", c_uint32),
        ("netns_dev", c_uint64),
        ("netns_ino", c_uint64),
        ("btf_id", c_uint32),
        ("btf_key_type_id", c_uint32),
        ("btf_value_type_id", c_uint32),
        ("_pad", c_uint32),
        ("map_extra", c_uint64),
    ]


class _bpf_prog_info(ctypes.Structure):
    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("tag", c_uint8 * 8),
        ("jited_prog_len", c_uint32),
        ("xlated_prog_len", c_uint32),
        ("jited_prog_insns", c_uint64),
        ("xlated_prog_insns", c_uint64),
        ("load_time", c_uint64),
        ("created_by_uid", c_uint32),
        ("nr_map_ids", c_uint32),
        ("map_ids", c_uint64),
        ("name", c_char * 16),
        ("ifindex", c_uint32),
        ("gpl_compatible", c_uint32),
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
        ("_pad", c_uint32),
    ]


def _get(fd: int, info: Any) -> Any:
    from . import _libbpf

    size = ctypes.c_uint32(ctypes.sizeof(info))
    _libbpf.lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size))
    return info


@dataclass(frozen=True)
class MapInfo:
    """Kernel view of a map."""

    type: Any
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


@dataclass(frozen=True)
class ProgramInfo:
    """Kernel view of a program."""

    type: Any
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


def _enum(cls: Any, v: int) -> Any:
    try:
        return cls(v)
    except ValueError:
        return v


def map_info(fd: int) -> MapInfo:
    i = _get(fd, _bpf_map_info())
    return MapInfo(
        type=_enum(MapType, i.type),
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
    )


def program_info(fd: int) -> ProgramInfo:
    i = _get(fd, _bpf_prog_info())
    ids: List[int] = []
    if i.nr_map_ids:
        # Second call with a buffer for the map ids, sized by the first.
        arr = (c_uint32 * i.nr_map_ids)()
        j = _bpf_prog_info(nr_map_ids=i.nr_map_ids, map_ids=ctypes.addressof(arr))
        _get(fd, j)
        ids = list(arr[: min(j.nr_map_ids, i.nr_map_ids)])
    return ProgramInfo(
        type=_enum(ProgramType, i.type),
        id=i.id,
        tag=bytes(i.tag).hex(),
        name=i.name.decode(errors="replace"),
        map_ids=ids,
        btf_id=i.btf_id,
        load_time_ns=i.load_time,
        created_by_uid=i.created_by_uid,
        gpl_compatible=bool(i.gpl_compatible & 1),
        run_time_ns=i.run_time_ns,
        run_count=i.run_cnt,
        verified_instructions=i.verified_insns,
        xlated_size=i.xlated_prog_len,
        jited_size=i.jited_prog_len,
        attach_btf_id=i.attach_btf_id,
        attach_btf_obj_id=i.attach_btf_obj_id,
    )


def xlated_instructions(fd: int) -> Optional[bytes]:
    """The program as the kernel rewrote it (None when not permitted)."""
    i = _get(fd, _bpf_prog_info())
    if not i.xlated_prog_len:
        return None
    buf = ctypes.create_string_buffer(i.xlated_prog_len)
    _get(fd, _bpf_prog_info(xlated_prog_len=i.xlated_prog_len, xlated_prog_insns=ctypes.addressof(buf)))
    return buf.raw
