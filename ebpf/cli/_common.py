"""What several commands share: reading objects, showing values, tables."""

from __future__ import annotations

import argparse
import enum
import os
import struct
import sys
from typing import Any, Iterable, List, Optional, Sequence, Tuple

from . import fail

EM_BPF = 247


def add_json(parser: argparse.ArgumentParser, what: str = "the output") -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


# -- objects ---------------------------------------------------------------


def embedded_objects(data: bytes) -> List[Tuple[int, int]]:
    """(offset, size) of each BPF ELF object inside ``data``.

    Tools built with libbpf skeletons (Debian's libbpf-tools, bpftool's
    ``gen skeleton``) carry their BPF object as bytes in the executable; the
    size is where its last section or its section header table ends.
    """
    found: List[Tuple[int, int]] = []
    start = 1
    while True:
        off = data.find(b"\x7fELF", start)
        if off < 0:
            return found
        start = off + 1
        head = data[off:off + 64]
        if len(head) < 64 or head[4] != 2 or head[5] not in (1, 2):
            continue
        bo = "<" if head[5] == 1 else ">"
        machine, = struct.unpack_from(bo + "H", head, 18)
        if machine != EM_BPF:
            continue
        shoff, = struct.unpack_from(bo + "Q", head, 40)
        shentsize, shnum = struct.unpack_from(bo + "HH", head, 58)
        end = shoff + shentsize * shnum
        if shentsize != 64 or end > len(data) - off:
            continue
        for i in range(shnum):
            sh = data[off + shoff + 64 * i: off + shoff + 64 * (i + 1)]
            sh_type, = struct.unpack_from(bo + "I", sh, 4)
            sh_offset, sh_size = struct.unpack_from(bo + "QQ", sh, 24)
            if sh_type != 8:  # SHT_NOBITS occupies no file space
                end = max(end, sh_offset + sh_size)
        if end <= len(data) - off:
            found.append((off, end))
            start = off + end


def read_object(arg: str) -> Tuple[bytes, str]:
    """The BPF object named by ``arg``: a BPF ELF file, or an executable
    that embeds one (``PATH#N`` picks the N-th of several, from 0)."""
    path, index = arg, None
    if not os.path.exists(path) and "#" in arg:
        path, _, n = arg.rpartition("#")
        if not n.isdigit():
            raise fail(f"{arg}: no such file")
        index = int(n)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise fail(f"{path}: no such file", "check the path") from None
    except IsADirectoryError:
        raise fail(f"{path}: is a directory") from None
    if data[:4] != b"\x7fELF":
        raise fail(f"{path}: not an ELF file")
    if len(data) >= 20 and index is None:
        machine, = struct.unpack_from("<H" if data[5] == 1 else ">H", data, 18)
        if machine == EM_BPF:
            return data, path
    objects = embedded_objects(data)
    if not objects:
        raise fail(f"{path}: neither a BPF object nor an executable that embeds one",
                   "BPF objects come from clang -target bpf")
    if index is None:
        if len(objects) > 1:
            raise fail(f"{path} embeds {len(objects)} BPF objects", f"pick one: {path}#0 .. {path}#{len(objects) - 1}")
        index = 0
    if index >= len(objects):
        raise fail(f"{path} embeds {len(objects)} BPF objects, not {index + 1}")
    off, size = objects[index]
    return data[off:off + size], f"{path}#{index}" if len(objects) > 1 else path


def load_spec(arg: str) -> Tuple[Any, str]:
    """(CollectionSpec, label) of the object ``arg``."""
    from ..elf_reader import load_collection_spec

    data, label = read_object(arg)
    return load_collection_spec(data), label


# -- values ----------------------------------------------------------------


def name_of(value: Any) -> str:
    """An enum member's name, lower case (as bpftool prints them), else str()."""
    if isinstance(value, enum.Enum):
        return value.name.lower() if value.name else str(value.value)
    return str(value)


def flag_names(cls: Any, flags: int) -> List[str]:
    """The lower-case names of the bits set in ``flags`` (unknown bits in hex)."""
    names = [f.name.lower() for f in cls if f.value and flags & f.value == f.value and f.name]
    rest = flags & ~sum(f.value for f in cls if flags & f.value == f.value)
    return names + ([hex(rest)] if rest else [])


def type_by_spelling(types: Any, text: str, what: str) -> Any:
    """The BTF type ``text`` names: ``NAME``, or ``struct NAME`` (union,
    enum, typedef) to pick a kind; a one-line failure naming ``what``."""
    from ..btf import AmbiguousTypeError, TypeNotFoundError

    if types is None:
        raise fail(f"{what}: there is no BTF to find {text!r} in")
    kind, _, bare = text.strip().partition(" ")
    if not bare:
        kind, bare = "", kind
    try:
        return types.type_by_name(bare.strip(), kind or None)
    except (TypeNotFoundError, AmbiguousTypeError) as exc:
        raise fail(f"{what}: {exc}", "name a kind to choose: 'struct NAME' (or union, enum, typedef)") from None


def _text(raw: bytes) -> Optional[str]:
    try:
        s = raw.decode()
    except UnicodeDecodeError:
        return None
    return s if s.isprintable() else None


def plain(value: Any) -> Any:
    """``value`` (as decoded through BTF) made of JSON types: structs are
    dicts, enum members their names, byte strings text when they are
    printable UTF-8 and hex otherwise, maps and programs their ids."""
    if value is None or isinstance(value, (bool, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return value.name if value.name else int(value.value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        text = _text(raw)
        return text if text is not None else raw.hex()
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    kind = type(value).__name__
    if kind in ("Map", "Program"):
        try:
            return {kind.lower(): value.info().id}
        except Exception:
            return kind.lower()
    return str(value)


def show(value: Any) -> str:
    """``value`` as compact text: ``pid=1 comm=bash``, ``[1, 2]``, ``{a=1 b=2}``."""
    return _show(plain(value), top=True)


def _show(v: Any, top: bool = False) -> str:
    if isinstance(v, dict):
        inner = " ".join(f"{k}={_show(x)}" for k, x in v.items())
        return inner if top else "{" + inner + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    if isinstance(v, str):
        return v if v and " " not in v and "=" not in v else repr(v)
    if v is None:
        return "-"
    return str(v)


# -- tables ----------------------------------------------------------------


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], out: Any = None, indent: str = "") -> None:
    """Print ``rows`` under ``headers`` in aligned columns (numbers right-aligned)."""
    out = out if out is not None else sys.stdout
    cells = [[str(h) for h in headers]] + [["-" if c is None or c == "" else str(c) for c in r] for r in rows]
    numeric = [all(_is_number(r[i]) for r in rows) and bool(rows) for i in range(len(headers))]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        parts = [c.rjust(widths[i]) if numeric[i] else c.ljust(widths[i]) for i, c in enumerate(r)]
        out.write(indent + "  ".join(parts).rstrip() + "\n")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def pairs(items: Iterable[Tuple[str, Any]], out: Any = None, indent: str = "") -> None:
    """Print ``name: value`` lines with the values aligned."""
    out = out if out is not None else sys.stdout
    items = list(items)
    width = max((len(k) for k, _ in items), default=0)
    for k, v in items:
        out.write(f"{indent}{k + ':':<{width + 1}} {'-' if v is None or v == '' else v}\n")
