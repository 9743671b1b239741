"""Kernel helper functions callable with ``call`` (``BPF_CALL`` with ``src=0``).

``Helper`` is an ``IntEnum`` of the kernel's ``enum bpf_func_id``; members are
named after the helper without its ``bpf_`` prefix, e.g.
``Helper.map_lookup_elem`` is ``bpf_map_lookup_elem()`` (id 1).  Every member
is also exported as an upper-case constant, ``FN_MAP_LOOKUP_ELEM``, the
spelling cilium/ebpf users know as ``asm.FnMapLookupElem``.

``ebpf.asm`` imports this module lazily: creating a 200-member enum takes a few
milliseconds, which ``import ebpf.asm`` should not pay up front.
"""

from __future__ import annotations

import enum

from .helper_names import HELPER_IDS, HELPER_NAMES

__all__ = ["Helper", "helper_by_name"]

Helper = enum.IntEnum(  # type: ignore[misc]
    "Helper", [(name, i) for i, name in enumerate(HELPER_NAMES)], module=__name__, qualname="Helper"
)
Helper.__doc__ = "A kernel helper function id (``BPF_FUNC_*``); ``str()`` gives ``bpf_<name>``."
Helper.__str__ = lambda self: f"bpf_{self.name}"  # type: ignore[assignment]


def helper_by_name(name: str) -> "Helper":
    """Look a helper up by name, with or without the ``bpf_`` prefix.

    Raises :class:`KeyError` for a name the table does not know.
    """
    key = name[4:] if name.startswith("bpf_") else name
    if key not in HELPER_IDS:
        raise KeyError(f"unknown BPF helper {name!r}")
    return Helper(HELPER_IDS[key])


# Upper-case aliases (FN_MAP_LOOKUP_ELEM, ...), generated rather than written
# out so the two spellings can never disagree.
for _member in Helper:
    globals()["FN_" + _member.name.upper()] = _member
    __all__.append("FN_" + _member.name.upper())
del _member
