"""Helpers for the commands that look at what the kernel holds."""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Tuple

from . import fail


def parse_id(text: str, what: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise fail(f"{what} id must be a number, not {text!r}") from None
    if not 0 < value < (1 << 32):
        raise fail(f"{what} id {value} is out of range")
    return value


def loaded_at(boot_ns: int) -> str:
    """A load time (ns since boot) as local ISO time, as bpftool shows it."""
    if not boot_ns:
        return ""
    since = time.clock_gettime(time.CLOCK_BOOTTIME) - boot_ns / 1e9
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() - since))


_INODE_KIND = {"prog_id": "anon_inode:bpf-prog", "map_id": "anon_inode:bpf-map", "link_id": "anon_inode:bpf-link"}


def holders(field: str, obj_id: int) -> List[Tuple[int, str]]:
    """(pid, comm) of the processes holding an fd of the object ``obj_id``
    (``field`` is "prog_id", "map_id" or "link_id", as /proc/PID/fdinfo says)."""
    want = f"{field}:\t{obj_id}\n"
    inode = _INODE_KIND[field]
    found: Dict[int, str] = {}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") != inode:
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    if want not in f.read():
                        continue
                with open(f"/proc/{pid}/comm") as f:
                    found[pid] = f.read().strip()
                break
            except OSError:
                continue
    return sorted(found.items())


def show_holders(found: List[Tuple[int, str]]) -> str:
    return ", ".join(f"{comm}({pid})" for pid, comm in found)


def map_btf_types(info: Any) -> Tuple[Any, Any]:
    """(key type, value type) of a map from its BTF in the kernel (None, None
    when it has none, or it vanished, or we may not read it)."""
    if not info.btf_id:
        return None, None
    from ..errors import EBPFError
    from ..ids import btf_spec_from_id

    try:
        spec = btf_spec_from_id(info.btf_id)
        key = spec.type_by_id(info.btf_key_type_id) if info.btf_key_type_id else None
        value = spec.type_by_id(info.btf_value_type_id) if info.btf_value_type_id else None
    except (EBPFError, KeyError):
        return None, None
    return key, value


def by_id(opener: Any, obj_id: int) -> Optional[Any]:
    """``opener(obj_id)``, or None when the object went away meanwhile."""
    from ..errors import KeyNotExistError

    try:
        return opener(obj_id)
    except KeyNotExistError:
        return None
