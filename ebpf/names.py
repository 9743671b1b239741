"""Names of kernel objects: which characters the kernel takes, and how many.

Neutral ground: maps, programs and the loader all name kernel objects, and
none of them should import another for it.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["sanitize_name", "object_name", "OBJ_NAME_LEN"]

# BPF_OBJ_NAME_LEN: 16 bytes with the terminating NUL.
OBJ_NAME_LEN = 16

_VALID = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.")


def sanitize_name(name: str, replacement: Optional[str] = "_") -> str:
    """Replace every character the kernel refuses in object names.

    The kernel takes ``[A-Za-z0-9_.]`` in map and program names (dots since
    Linux 5.2).  Each other character becomes ``replacement``; with
    ``replacement=None`` it is deleted instead.  Like cilium/ebpf's
    ``SanitizeName``, the length is left alone (the kernel keeps 15
    characters; loading cuts longer names).

    >>> sanitize_name("my-map:v2")
    'my_map_v2'
    >>> sanitize_name("my-map:v2", replacement=None)
    'mymapv2'
    """
    if replacement is not None and not isinstance(replacement, str):
        raise TypeError(f"replacement must be a str or None, not {type(replacement).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    sub = "" if replacement is None else replacement
    return "".join(c if c in _VALID else sub for c in name)


def object_name(name: str) -> str:
    """``name`` as the kernel stores it: sanitized and cut to 15 characters,
    so a name never fails a load."""
    return sanitize_name(name)[: OBJ_NAME_LEN - 1]
