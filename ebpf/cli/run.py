"""``ebpf run OBJ``: load an object, attach it, stream its events, show its maps.

A tool without user-space code: globals come from ``--set``, every program
whose section names its hook is attached (``attach_all``), ring buffer and
perf event array records are printed decoded through the object's BTF until
``--duration`` ends or Ctrl-C, then the programs are detached and every
non-empty map is printed (log2 histograms where the map holds one).
"""

from __future__ import annotations

import argparse
import json
import selectors
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from . import emit_json, fail
from ._common import load_spec, plain, show, type_by_spelling

if TYPE_CHECKING:
    from .._epoll import EventReader

_EVENT_TYPES = ("RINGBUF", "PERF_EVENT_ARRAY")
# Maps whose elements user space cannot list (or that hold only fds).
_NOT_SHOWN = ("RINGBUF", "PERF_EVENT_ARRAY", "USER_RINGBUF", "STRUCT_OPS", "QUEUE", "STACK", "BLOOM_FILTER",
              "CGROUP_ARRAY")
# Tracing programs that attach to a kernel or BPF function through fentry's
# machinery (refused together under lockdown).
_FUNCTION_TRACING = ("TRACE_FENTRY", "TRACE_FEXIT", "MODIFY_RETURN", "LSM_MAC", "LSM_CGROUP")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run", help="load an object, attach its programs, print its events and maps",
        description="Load OBJ (globals set with --set, parsed by their BTF type), attach every program "
                    "whose section names its hook, print each ring buffer and perf event array record "
                    "decoded through BTF until --duration ends or Ctrl-C, detach, then print every "
                    "non-empty map: log2 histograms (BCC style) for maps of structs with a `slots` array "
                    "or arrays of counters, tables for the rest.  Programs this kernel cannot load or "
                    "attach are skipped, and the reason said.")
    p.add_argument("object", metavar="OBJ", help="BPF object file, or an executable embedding one")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="set a global (const volatile or not) before loading; VALUE is read as its BTF "
                        "type says: integers (0x.. too), true/false, enum names, strings for char arrays, "
                        "JSON for structs and arrays; repeatable")
    p.add_argument("--events", action="append", default=[], metavar="MAP[:TYPE]",
                   help="stream only these maps; TYPE names the struct of the records (default: the one "
                        "struct of the object whose size matches, else raw bytes); repeatable")
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long (default: Ctrl-C)")
    p.add_argument("--pin-path", metavar="DIR", help="bpffs directory for maps the object pins by name "
                                                     "(default: pinning is ignored)")
    p.add_argument("--perf-buffer", type=int, default=128 * 1024, metavar="BYTES",
                   help="per-CPU buffer of perf event arrays (default 128 KiB)")
    p.add_argument("--json", action="store_true",
                   help="JSON lines: one per event, then one per map (and status lines)")
    p.set_defaults(func=run)


# -- globals -----------------------------------------------------------------


def parse_value(var: Any, text: str) -> Any:
    """``text`` as a value of the variable's BTF type."""
    from ..btf import types as T

    t = getattr(var, "type", None)
    t = t.type if isinstance(t, T.Var) else t
    if t is None:
        return _parse_int(text)
    u = T.underlying(t)
    if isinstance(u, T.Int):
        if u.is_bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{text!r} is not a boolean (true/false)")
        if u.is_char and len(text) == 1 and not text.isdigit():
            return ord(text)
        return _parse_int(text)
    if isinstance(u, T.Enum):
        for v in u.values:
            if v.name == text:
                return v.value
        try:
            return _parse_int(text)
        except ValueError:
            names = ", ".join(v.name for v in u.values[:8])
            raise ValueError(f"{text!r} is not one of {names}{', ...' if len(u.values) > 8 else ''}") from None
    if isinstance(u, T.Float):
        return float(text)
    if isinstance(u, T.Pointer):
        return _parse_int(text)
    elem = T.underlying(u.type) if isinstance(u, T.Array) else None
    if isinstance(elem, T.Int) and elem.size == 1:
        if text.startswith("["):
            return bytes(json.loads(text))
        return text  # a C string; the codec checks it fits
    try:
        return json.loads(text)
    except ValueError:
        raise ValueError(f"{text!r} is not JSON (structs and arrays are given as JSON)") from None


def _parse_int(text: str) -> int:
    try:
        return int(text.strip(), 0)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None


def apply_sets(spec: Any, assignments: List[str]) -> None:
    for item in assignments:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise fail(f"--set {item!r}: expected NAME=VALUE")
        var = spec.variables.get(name)
        if var is None:
            names = ", ".join(spec.variables) or "none"
            raise fail(f"--set {name}: the object has no global {name!r}", f"its globals: {names}")
        try:
            var.set(parse_value(var, text))
        except (ValueError, TypeError, OverflowError) as exc:
            raise fail(f"--set {name}={text}: {exc}") from None


# -- loading -----------------------------------------------------------------


def _needs(ps: Any) -> Optional[str]:
    """Why this kernel cannot load the program, as far as probes tell, or None."""
    from .. import features
    from ..errors import NotSupportedError, PermissionDeniedError

    kind, attach = getattr(ps.type, "name", ""), getattr(ps.attach_type, "name", "")
    try:
        if kind in ("LSM", "EXT") or (kind == "TRACING" and attach in _FUNCTION_TRACING):
            features.have_tracing_programs()
        else:
            features.have_program_type(ps.type)
    except NotSupportedError as exc:
        return str(exc)
    except PermissionDeniedError:
        return None  # the load itself will say so
    return None


def load(spec: Any, pin_path: Optional[str], skipped: Dict[str, str]) -> Any:
    """The collection of what this kernel can load; ``skipped`` gets the rest."""
    from ..collection import Collection
    from ..errors import KernelPolicyError, NotSupportedError, VerifierError
    from ..types import PinType

    if pin_path is None:
        for ms in spec.maps.values():
            if ms.pinning != PinType.NONE:
                note(f"map {ms.name}: pinning ignored (give --pin-path to pin it)")
                ms.pinning = PinType.NONE
    for name, ps in list(spec.programs.items()):
        why = _needs(ps)
        if why is not None:
            skipped[name] = f"{ps.section_name}: {why}"
            del spec.programs[name]
    while True:
        try:
            return Collection(spec, pin_path=pin_path)
        except (KernelPolicyError, VerifierError, NotSupportedError) as exc:
            name = getattr(exc, "program", None)
            if name is None or name not in spec.programs or len(spec.programs) == 1:
                raise
            first = str(exc).splitlines()[0]
            skipped[name] = f"{spec.programs[name].section_name}: {first}"
            del spec.programs[name]


def attach(coll: Any, skipped: Dict[str, str]) -> Dict[str, Any]:
    """Each program attached by its section; failures go to ``skipped``."""
    from ..errors import EBPFError
    from ..link import attach_all

    links: Dict[str, Any] = {}
    for name, prog in coll.programs.items():
        section = prog.spec.section_name if prog.spec is not None else ""
        try:
            got = attach_all({name: prog})
        except EBPFError as exc:
            skipped[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            continue
        if got:
            links.update(got)
        else:
            skipped[name] = f"section {section!r} names no hook (attach it yourself: an interface, a cgroup, ...)"
    return links


# -- events ------------------------------------------------------------------


class EventStream:
    """One ring buffer or perf event array and how its records decode."""

    def __init__(self, name: str, m: Any, spec: Any, type_name: Optional[str], perf_buffer: int) -> None:
        from .. import perf, ringbuf

        self.name = name
        self.perf = m.type.name == "PERF_EVENT_ARRAY"
        self.types = spec.types
        self.codec: Any = None
        self.fixed = False
        if type_name:
            self.codec = _codec(spec.types, type_name)
            self.fixed = True
        self._by_length: Dict[int, Any] = {}
        # Records of either kind: self.perf says which fields they have.
        self.reader: EventReader[Any] = perf.Reader(m, perf_buffer) if self.perf else ringbuf.Reader(m)
        self.warned = False

    def decode(self, sample: bytes) -> Any:
        codec = self.codec if self.fixed else self._guess(len(sample))
        if codec is None:
            return None
        size = codec.size
        return codec.decode(sample[:size] if len(sample) >= size else sample + bytes(size - len(sample)))

    def _guess(self, length: int) -> Any:
        if length in self._by_length:
            return self._by_length[length]
        from ..btf import codec_for
        from ..btf import types as T

        found = []
        for t in (self.types or ()):
            if isinstance(t, (T.Struct, T.Union)) and t.name and t.size:
                # perf pads a sample so that its u32 size and the data fill 8-byte words
                padded = (t.size + 4 + 7) // 8 * 8 - 4 if self.perf else t.size
                if padded == length or t.size == length:
                    found.append(t)
        codec = codec_for(found[0]) if len(found) == 1 else None
        if codec is None and not self.warned:
            self.warned = True
            which = f"several structs ({', '.join(t.name for t in found[:4])})" if found else "no struct"
            note(f"{self.name}: {length}-byte records match {which} of the object: printing bytes; "
                 f"name the type with --events {self.name}:TYPE")
        self._by_length[length] = codec
        return codec


def _codec(types: Any, type_name: str) -> Any:
    from ..btf import codec_for

    return codec_for(type_by_spelling(types, type_name, f"--events ...:{type_name}"))


def open_streams(coll: Any, spec: Any, wanted: List[str], perf_buffer: int) -> List[EventStream]:
    requested: Dict[str, Optional[str]] = {}
    for item in wanted:
        name, _, tname = item.partition(":")
        if name not in coll.maps:
            names = ", ".join(n for n, m in coll.maps.items() if m.type.name in _EVENT_TYPES) or "none"
            raise fail(f"--events {item}: the object has no map {name!r}", f"its event maps: {names}")
        if coll.maps[name].type.name not in _EVENT_TYPES:
            raise fail(f"--events {item}: map {name} is a {coll.maps[name].type.name.lower()} map, "
                       "not a ring buffer or perf event array")
        requested[name] = tname or None
    if not requested:
        requested = {n: None for n, m in coll.maps.items() if m.type.name in _EVENT_TYPES}
    return [EventStream(n, coll.maps[n], spec, t, perf_buffer) for n, t in requested.items()]


def note(text: str) -> None:
    sys.stderr.write(f"ebpf run: {text}\n")
    sys.stderr.flush()


class _Stop(KeyboardInterrupt):
    """SIGTERM: stop as Ctrl-C does (detach, print the maps)."""


def _on_term(signum: int, frame: Any) -> None:
    raise _Stop()


def stream(streams: List[EventStream], duration: Optional[float], as_json: bool) -> None:
    """Print records until ``duration`` passes or Ctrl-C / SIGTERM."""
    sel = selectors.DefaultSelector()
    for s in streams:
        sel.register(s.reader.fileno(), selectors.EVENT_READ, s)
    deadline = time.monotonic() + duration if duration is not None else None
    try:
        while True:
            timeout = None
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
            if not streams:
                time.sleep(timeout if timeout is not None else 3600)
                continue
            for key, _ in sel.select(timeout):
                emit(key.data, as_json)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (_Stop)
        pass
    finally:
        sel.close()
    for s in streams:  # what arrived before the stop
        emit(s, as_json)


def emit(s: EventStream, as_json: bool) -> None:
    out = sys.stdout
    for rec in s.reader.flush():
        if s.perf and rec.lost_samples:
            if as_json:
                emit_json({"lost": rec.lost_samples, "map": s.name, "cpu": rec.cpu})
            else:
                note(f"{s.name}: lost {rec.lost_samples} samples on CPU {rec.cpu}")
            continue
        value = s.decode(rec.raw_sample)
        if as_json:
            doc: Dict[str, Any] = {"event": s.name}
            if s.perf:
                doc["cpu"] = rec.cpu
            if value is None:
                doc["raw"] = rec.raw_sample.hex()
            else:
                doc["value"] = plain(value)
            emit_json(doc)
        else:
            out.write(f"{s.name}: {show(value) if value is not None else rec.raw_sample.hex()}\n")
    out.flush()


# -- maps --------------------------------------------------------------------


def globals_of(coll: Any, spec: Any) -> List[Tuple[str, Any]]:
    """(name, value) of the non-zero globals in writable sections."""
    from ._maps import is_zero

    out = []
    for name, var in coll.variables.items():
        vs = spec.variables.get(name)
        if vs is None or vs.constant:
            continue
        try:
            value = var.get()
        except Exception:
            continue
        if not is_zero(value):
            out.append((name, value))
    return out


def show_maps(coll: Any, spec: Any, as_json: bool) -> None:
    from ..errors import EBPFError
    from ._maps import MapView, read_entries

    out = sys.stdout
    values = globals_of(coll, spec)
    if values:
        if as_json:
            emit_json({"globals": {n: plain(v) for n, v in values}})
        else:
            out.write("\nglobals:\n")
            width = max(len(n) for n, _ in values)
            for n, v in values:
                out.write(f"  {n:<{width}} = {show(v)}\n")
    for name, m in coll.maps.items():
        ms = spec.maps.get(name)
        if m.type.name in _NOT_SHOWN or (ms is not None and ms.is_data_section):
            continue
        key_t = ms.key if ms is not None else None
        value_t = ms.value if ms is not None else None
        try:
            view = MapView(name, m.type, read_entries(m), key_t, value_t)
        except EBPFError as exc:
            note(f"map {name}: cannot read it: {exc}")
            continue
        if view.empty:
            continue
        if as_json:
            emit_json(view.as_json())
        else:
            out.write("\n")
            view.print(out)
    out.flush()


# -- the command -------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    old = signal.signal(signal.SIGTERM, _on_term)
    try:
        return _run(args)
    finally:
        signal.signal(signal.SIGTERM, old)


def _run(args: argparse.Namespace) -> int:
    from .. import rlimit

    spec, label = load_spec(args.object)
    apply_sets(spec, args.set)
    rlimit.remove_memlock()
    skipped: Dict[str, str] = {}
    with load(spec, args.pin_path, skipped) as coll:
        streams = open_streams(coll, spec, args.events, args.perf_buffer)
        links: Dict[str, Any] = {}
        try:
            links = attach(coll, skipped)
            try:
                report(links, skipped, streams, args)
                stream(streams, args.duration, args.json)
            except KeyboardInterrupt:  # a stop before the stream began
                pass
            dumps = read_iterators(links)
        finally:
            for link in links.values():
                link.close()
            for s in streams:
                s.reader.close()
        show_dumps(dumps, args.json)
        show_maps(coll, spec, args.json)
    return 0


def read_iterators(links: Dict[str, Any]) -> List[Tuple[str, bytes]]:
    """What each iterator program prints over one walk (name, bytes)."""
    from ..link import Iter

    return [(name, link.read()) for name, link in links.items() if isinstance(link, Iter)]


def show_dumps(dumps: List[Tuple[str, bytes]], as_json: bool) -> None:
    for name, data in dumps:
        text = data.decode(errors="replace")
        if as_json:
            emit_json({"iterator": name, "output": text})
        else:
            sys.stdout.write(f"\n{name} (iterator):\n{text}" + ("" if text.endswith("\n") or not text else "\n"))
    sys.stdout.flush()


def report(links: Dict[str, Any], skipped: Dict[str, str], streams: List[EventStream],
           args: argparse.Namespace) -> None:
    for name, why in skipped.items():
        note(f"skipped {name}: {why}")
        if args.json:
            emit_json({"skipped": name, "reason": why})
    what = ", ".join(links) or "no programs"
    until = f"for {args.duration:g} s" if args.duration is not None else "until Ctrl-C"
    events = ", ".join(s.name for s in streams)
    note(f"attached {what}; " + (f"printing events of {events} {until}" if streams else f"running {until}"))
    if args.json:
        emit_json({"attached": list(links), "events": [s.name for s in streams]})
