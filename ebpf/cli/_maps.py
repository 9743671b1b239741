"""Map contents for people: log2 histograms where the map holds one, else a table."""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ._common import plain, show, table

_ARRAYS = ("ARRAY", "PERCPU_ARRAY")
# Maps whose keys are u32 indices, BTF or not.
_INDEXED = ("ARRAY", "PERCPU_ARRAY", "PROG_ARRAY", "ARRAY_OF_MAPS", "PERF_EVENT_ARRAY", "CGROUP_ARRAY",
            "DEVMAP", "CPUMAP", "XSKMAP")


def decoder(t: Any) -> Any:
    """bytes -> value through the BTF type ``t`` (bytes unchanged without one)."""
    if t is None:
        return lambda raw: raw
    from ..btf import codec_for

    codec = codec_for(t)
    return codec.decode


def _is_int_type(t: Any) -> bool:
    if t is None:
        return False
    from ..btf import types as T

    u = T.underlying(t)
    return isinstance(u, T.Int) and not u.is_bool


def _total(v: Any) -> Any:
    """Per-CPU values: the sum when they are numbers, else the list."""
    if isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return sum(v)
    return v


class MapView:
    """A map's decoded entries and how to show them.

    ``kind`` is ``"hist"`` (``hists``: key -> log2 slot counts) or
    ``"table"`` (``rows``: (key, value) pairs; the all-zero entries of
    arrays, which always exist, only with ``keep_zero``).
    """

    def __init__(self, name: str, map_type: Any, entries: Sequence[Tuple[Any, Any]],
                 key_type: Any = None, value_type: Any = None, keep_zero: bool = False) -> None:
        from ..histogram import slot_counts, slots_member

        self.name = name
        self.type_name = getattr(map_type, "name", str(map_type))
        is_array = self.type_name in _ARRAYS
        entries = [(k, _total(v)) for k, v in entries]
        self.hists: Dict[Any, List[int]] = {}
        self.rows: List[Tuple[Any, Any]] = []
        if slots_member(value_type) is not None:
            self.kind = "hist"
            for k, v in entries:
                slots = slot_counts(v)
                if any(slots):
                    self.hists[k] = slots
            self.hists = _sorted(self.hists)
        elif is_array and _is_int_type(value_type) and _is_int_type(key_type) and len(entries) > 1:
            self.kind = "hist"
            counts = [0] * len(entries)
            for k, v in entries:
                if 0 <= k < len(counts):
                    counts[k] = v
            if any(counts):
                self.hists[None] = counts
        else:
            self.kind = "table"
            self.rows = [(k, v) for k, v in entries if keep_zero or not (is_array and is_zero(v))]
            try:
                self.rows.sort(key=lambda kv: _sort_key(kv[0]))
            except TypeError:
                pass

    @property
    def empty(self) -> bool:
        return not (self.hists if self.kind == "hist" else self.rows)

    def as_json(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = {"map": self.name, "type": self.type_name.lower(), "kind": self.kind}
        if self.kind == "hist":
            doc["histograms"] = [{"key": plain(k), "slots": v} for k, v in self.hists.items()]
        else:
            doc["entries"] = [{"key": plain(k), "value": plain(v)} for k, v in self.rows]
        return doc

    def print(self, out: Any = None) -> None:
        from ..histogram import log2_histogram

        out = out if out is not None else sys.stdout
        out.write(f"{self.name} ({self.type_name.lower()}):\n")
        if self.kind == "hist":
            for key, slots in self.hists.items():
                if key is not None:
                    out.write(f"key = {show(key)}\n")
                out.write(log2_histogram(slots, "value") + "\n")
            return
        keys = [plain(k) for k, _ in self.rows]
        values = [plain(v) for _, v in self.rows]
        key_cols = _columns(keys, "KEY")
        value_cols = _columns(values, "VALUE")
        headers = [c.upper() if c else "KEY" for c in key_cols] + [c.upper() if c else "VALUE" for c in value_cols]
        table([_cells(k, key_cols) + _cells(v, value_cols) for k, v in zip(keys, values)], headers,
              out=out, indent="  ")


def _sorted(d: Dict[Any, Any]) -> Dict[Any, Any]:
    try:
        return dict(sorted(d.items(), key=lambda kv: _sort_key(kv[0])))
    except TypeError:
        return d


def _sort_key(k: Any) -> Any:
    p = plain(k)
    if isinstance(p, dict):
        return tuple(str(x) if not isinstance(x, int) else x for x in p.values())
    return p


def is_zero(v: Any) -> bool:
    if isinstance(v, (bytes, bytearray)):
        return not any(v)
    if isinstance(v, (int, float)):
        return v == 0
    p = plain(v)
    if isinstance(p, dict):
        return all(is_zero(x) for x in p.values())
    if isinstance(p, list):
        return all(is_zero(x) for x in p)
    if isinstance(p, str):
        return p == "" or set(p) <= {"0"}
    return False


def _columns(values: List[Any], default: str) -> List[Optional[str]]:
    """Struct fields become columns when every value is a struct of the same fields."""
    if values and all(isinstance(v, dict) for v in values):
        fields = list(values[0])
        if fields and all(list(v) == fields for v in values):
            return fields
    return [None]


def _cells(v: Any, cols: List[Optional[str]]) -> List[Any]:
    if cols == [None]:
        return [v if isinstance(v, (int, float)) and not isinstance(v, bool) else show(v)]
    out = []
    for c in cols:
        x = v[c]
        out.append(x if isinstance(x, (int, float)) and not isinstance(x, bool) else show(x))
    return out


def read_entries(m: Any, key_type: Any = None, value_type: Any = None) -> List[Tuple[Any, Any]]:
    """All (key, value) pairs of ``m``, decoded through the given BTF types
    when the map itself has none (a map opened by id or pin)."""
    dk, dv = decoder(key_type), decoder(value_type)
    index_keys = getattr(m.type, "name", "") in _INDEXED
    entries = []
    for k, v in m.items():
        if isinstance(k, (bytes, bytearray)) and key_type is not None:
            k = dk(bytes(k))
        elif isinstance(k, (bytes, bytearray)) and index_keys:
            k = int.from_bytes(k, sys.byteorder)  # array keys are u32 indices
        if isinstance(v, list):
            v = [dv(bytes(x)) if isinstance(x, (bytes, bytearray)) and value_type is not None else x for x in v]
        elif isinstance(v, (bytes, bytearray)) and value_type is not None:
            v = dv(bytes(v))
        entries.append((k, v))
    return entries
