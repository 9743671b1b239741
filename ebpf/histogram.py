"""Histograms as BCC and libbpf-tools print them.

BPF tools count events into slots, in a map: ``slots[log2(latency)]++``.
This module turns such counts into the text BCC's ``print_log2_hist`` and
``print_linear_hist`` print::

    >>> print(ebpf.histogram.log2_histogram([0, 3, 7, 1], "usecs"))
         usecs               : count     distribution
             0 -> 1          : 0        |                                        |
             2 -> 3          : 3        |*****************                       |
             4 -> 7          : 7        |****************************************|
             8 -> 15         : 1        |*****                                   |

Counts come from a list, or straight from a map
(:func:`counts_from_map`): an array map of counters (one slot per index;
per-CPU maps are summed), or a map whose values are structs with an array
member named ``slots`` (libbpf-tools' ``struct hist``), one histogram per key.

Log2 slot ``i`` counts values ``v`` with ``floor(log2(v)) == i`` (and 0 in
slot 0), as libbpf-tools' ``log2l()`` fills them; :func:`log2_slot` computes
it.  BCC's ``bpf_log2l()`` is one higher (slot 0 only for 0): pass
``bcc_slots=True``.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional, Sequence, TextIO, Union

__all__ = [
    "log2_slot", "log2_histogram", "linear_histogram", "print_log2_hist", "print_linear_hist",
    "counts_from_map", "histograms_from_map", "slots_member", "slot_counts",
]

STARS_MAX = 40

Counts = Sequence[int]


def log2_slot(value: int) -> int:
    """The log2 slot of ``value``: ``floor(log2(value))``, 0 for 0 and 1."""
    return max(int(value), 1).bit_length() - 1


def _stars(value: int, value_max: int, width: int) -> str:
    if value_max <= 0:
        return ""
    stars = "*" * (min(value, value_max) * width // value_max)
    # A count past the scale's maximum ends in '+' (BCC, libbpf-tools).
    return stars[:-1] + "+" if value > value_max else stars


def log2_histogram(counts: Counts, val_type: str = "value", *, strip_leading_zero: bool = False,
                   bcc_slots: bool = False) -> str:
    """``counts`` (one per log2 slot) as BCC's ``print_log2_hist`` text.

    Trailing empty slots are left out; with ``strip_leading_zero`` the
    leading ones too.  An all-zero histogram is the empty string.
    """
    counts = [int(c) for c in counts]
    idx_max = max((i for i, c in enumerate(counts) if c > 0), default=-1)
    if idx_max < 0:
        return ""
    value_max = max(counts)
    wide = idx_max > 32
    stars = STARS_MAX // 2 if wide else STARS_MAX
    width = 20 if wide else 10
    lines = [f"{'':{15 if wide else 5}}{val_type:<{29 if wide else 19}} : count     distribution"]
    start = 1 if bcc_slots else 0
    seen = not strip_leading_zero
    for i in range(start, idx_max + 1):
        exp = i if bcc_slots else i + 1
        low, high = (1 << exp) >> 1, (1 << exp) - 1
        if low == high:
            low -= 1
        c = counts[i]
        if not seen and not c:
            continue
        seen = True
        lines.append(f"{low:>{width}} -> {high:<{width}} : {c:<8} |{_stars(c, value_max, stars):<{stars}}|")
    return "\n".join(lines)


def linear_histogram(counts: Counts, val_type: str = "value", *, base: int = 0, step: int = 1,
                     strip_leading_zero: bool = False) -> str:
    """``counts`` (slot ``i`` counting ``base + i*step``) as BCC's
    ``print_linear_hist`` text; empty slots at the end are left out."""
    counts = [int(c) for c in counts]
    idx_max = max((i for i, c in enumerate(counts) if c > 0), default=-1)
    if idx_max < 0:
        return ""
    value_max = max(counts)
    lines = [f"     {val_type:<13} : count     distribution"]
    seen = not strip_leading_zero
    for i in range(idx_max + 1):
        c = counts[i]
        if not seen and not c:
            continue
        seen = True
        lines.append(f"        {base + i * step:<10} : {c:<8} |{_stars(c, value_max, STARS_MAX):<{STARS_MAX}}|")
    return "\n".join(lines)


def print_log2_hist(counts: Union[Counts, Any], val_type: str = "value", *, file: Optional[TextIO] = None,
                    section_header: str = "key", strip_leading_zero: bool = False, bcc_slots: bool = False) -> None:
    """Print a log2 histogram of ``counts``: a list, or a map (see
    :func:`counts_from_map`; a map of ``struct hist`` values prints one
    histogram per key under ``<section_header> = <key>``)."""
    _print(log2_histogram, counts, val_type, file, section_header,
           {"strip_leading_zero": strip_leading_zero, "bcc_slots": bcc_slots})


def print_linear_hist(counts: Union[Counts, Any], val_type: str = "value", *, file: Optional[TextIO] = None,
                      section_header: str = "key", base: int = 0, step: int = 1,
                      strip_leading_zero: bool = False) -> None:
    """Print a linear histogram of ``counts`` (a list or a map, as
    :func:`print_log2_hist`)."""
    _print(linear_histogram, counts, val_type, file, section_header,
           {"base": base, "step": step, "strip_leading_zero": strip_leading_zero})


def _print(fmt: Any, counts: Any, val_type: str, file: Optional[TextIO], section_header: str,
           options: Dict[str, Any]) -> None:
    out = file if file is not None else sys.stdout
    if _is_map(counts) and slots_member(counts.spec.value) is not None:
        for key, slots in histograms_from_map(counts).items():
            text = fmt(slots, val_type, **options)
            if text:
                out.write(f"\n{section_header} = {key}\n{text}\n")
        return
    if _is_map(counts):
        counts = counts_from_map(counts)
    text = fmt(counts, val_type, **options)
    if text:
        out.write(text + "\n")


def _is_map(obj: Any) -> bool:
    return hasattr(obj, "items") and hasattr(obj, "spec") and hasattr(obj, "max_entries")


def _total(value: Any) -> int:
    """A counter: an int, or per-CPU ints summed."""
    if isinstance(value, (list, tuple)):
        return sum(_total(v) for v in value)
    if isinstance(value, (bytes, bytearray)):
        return int.from_bytes(value, sys.byteorder)
    return int(value)


def counts_from_map(m: Any) -> List[int]:
    """The counts of an array map of counters, by index (per-CPU values
    summed; values without BTF read as native-endian integers)."""
    counts = [0] * m.max_entries
    for key, value in m.items():
        index = _total(key)
        if 0 <= index < len(counts):
            counts[index] = _total(value)
    return counts


def slots_member(value_type: Any) -> Optional[str]:
    """``"slots"`` when ``value_type`` (BTF) is a struct whose array member
    ``slots`` holds integers (libbpf-tools' ``struct hist``), else None."""
    if value_type is None:
        return None
    from .btf import types as T

    t = T.underlying(value_type)
    if not isinstance(t, (T.Struct, T.Union)):
        return None
    for m in t.members:
        if m.name == "slots":
            arr = T.underlying(m.type)
            if isinstance(arr, T.Array) and isinstance(T.underlying(arr.type), T.Int):
                return "slots"
    return None


def slot_counts(value: Any) -> List[int]:
    """The ``slots`` of one decoded ``struct hist`` value (a struct, a dict,
    or per-CPU values of either, added up)."""
    if isinstance(value, (list, tuple)) and value and not isinstance(value[0], int):
        per_cpu = [slot_counts(v) for v in value]
        return [sum(col) for col in zip(*per_cpu)]
    slots = value["slots"] if isinstance(value, dict) else value.slots
    return [int(s) for s in slots]


def histograms_from_map(m: Any) -> Dict[Any, List[int]]:
    """Key -> slot counts of a map whose values have a ``slots`` array
    (per-CPU values summed), in key order."""
    out: Dict[Any, List[int]] = {}
    for key, value in m.items():
        out[key] = slot_counts(value)
    try:
        return dict(sorted(out.items()))
    except TypeError:
        return out
