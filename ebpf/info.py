"""What the kernel reports about a map or program (BPF_OBJ_GET_INFO_BY_FD)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from . import _syscall
from .types import MapType, ProgramType, to_enum

__all__ = ["MapInfo", "ProgramInfo", "map_info", "program_info"]


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


def map_info(fd: int) -> MapInfo:
    """What the kernel reports about the map behind ``fd``."""
    i = _syscall.map_info(fd)
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
    )


def program_info(fd: int) -> ProgramInfo:
    """What the kernel reports about the program behind ``fd``."""
    i = _syscall.prog_info(fd)
    # A second call with a buffer for the map ids, sized by the first.
    ids: List[int] = _syscall.prog_map_ids(fd, i.nr_map_ids) if i.nr_map_ids else []
    return ProgramInfo(
        type=to_enum(ProgramType, i.type),
        id=i.id,
        tag=bytes(i.tag).hex(),
        name=i.name.decode(errors="replace"),
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
    )


def xlated_instructions(fd: int) -> Optional[bytes]:
    """The program as the kernel rewrote it (None when not permitted)."""
    size = _syscall.prog_info(fd).xlated_prog_len
    if not size:
        return None
    return _syscall.prog_xlated_insns(fd, size)
