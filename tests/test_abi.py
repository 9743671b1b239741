"""ebpf._syscall's kernel structs, checked against the running kernel's own
BTF: every field the kernel has is there, at the kernel's bit offset and
with its size (the structs follow the newest uapi, so they may have more)."""

from __future__ import annotations

import ctypes
import sys
from typing import Any, Dict, Tuple

import pytest

from ebpf import _syscall as S
from ebpf import btf

pytestmark = pytest.mark.skipif(sys.byteorder != "little", reason="bitfield positions are checked little-endian")

Fields = Dict[str, Tuple[int, int]]  # path -> (bit offset, bit size)


def _kernel_fields(t: Any, prefix: str = "", base: int = 0, out: Any = None) -> Fields:
    out = {} if out is None else out
    for m in t.members:
        under = btf.underlying(m.type)
        off = base + m.offset
        if not m.name:
            if isinstance(under, (btf.Struct, btf.Union)):
                _kernel_fields(under, prefix, off, out)
            continue
        if m.name.startswith("__"):  # __reserved_*: padding
            continue
        path = prefix + m.name
        out[path] = (off, m.bitfield_size or btf.sizeof(m.type) * 8)
        if isinstance(under, (btf.Struct, btf.Union)):
            _kernel_fields(under, path + ".", off, out)
    return out


def _bit_of(cls: Any, name: str) -> int:
    """Bit offset of bitfield ``name`` in ``cls``: set it, see which bit moved."""
    obj = cls()
    setattr(obj, name, 1)
    value = int.from_bytes(bytes(obj), "little")
    return (value & -value).bit_length() - 1


def _our_fields(cls: Any, prefix: str = "", base: int = 0, out: Any = None) -> Fields:
    out = {} if out is None else out
    anonymous = set(getattr(cls, "_anonymous_", ()))
    for field in cls._fields_:
        name, ftype = field[0], field[1]
        if name in anonymous:
            _our_fields(ftype, prefix, base + getattr(cls, name).offset * 8, out)
            continue
        if name.startswith("_"):
            continue
        if len(field) == 3:
            out[prefix + name] = (base + _bit_of(cls, name), field[2])
            continue
        off = base + getattr(cls, name).offset * 8
        out[prefix + name] = (off, ctypes.sizeof(ftype) * 8)
        if isinstance(ftype, type) and issubclass(ftype, (ctypes.Structure, ctypes.Union)):
            _our_fields(ftype, prefix + name + ".", off, out)
    return out


@pytest.fixture(scope="module")
def kernel() -> Any:
    try:
        return btf.load_kernel_spec()
    except Exception as exc:  # no /sys/kernel/btf/vmlinux
        pytest.skip(f"no kernel BTF: {exc}")


def _kernel_type(kernel: Any, what: str) -> Any:
    kind, _, name = what.partition(" ")
    if "." in name:  # a member of union bpf_attr
        union, member = name.split(".")
        u = kernel.type_by_name(union, kind=btf.Union)
        return btf.underlying(next(m for m in u.members if m.name == member).type)
    return kernel.type_by_name(name, kind=btf.Struct if kind == "struct" else btf.Union)


CASES = [
    ("struct bpf_map_info", S.bpf_map_info),
    ("struct bpf_prog_info", S.bpf_prog_info),
    ("struct bpf_btf_info", S.bpf_btf_info),
    ("struct bpf_link_info", S.bpf_link_info),
    ("union bpf_iter_link_info", S.bpf_iter_link_info),
    ("struct perf_event_attr", S.perf_event_attr),
    ("union bpf_attr.link_create", S.link_create_attr),
    ("union bpf_attr.raw_tracepoint", S.raw_tracepoint_attr),
]


@pytest.mark.parametrize("what,cls", CASES, ids=[c[0] for c in CASES])
def test_struct_matches_the_kernel(kernel, what, cls):
    kt = _kernel_type(kernel, what)
    theirs = _kernel_fields(kt)
    ours = _our_fields(cls)
    assert theirs, what
    missing = sorted(set(theirs) - set(ours))
    assert missing == [], f"{what}: fields the kernel has and we lack"
    wrong = {p: (ours[p], theirs[p]) for p in theirs if ours[p] != theirs[p]}
    assert wrong == {}, f"{what}: (ours, kernel's) bit offset and size differ"
    assert ctypes.sizeof(cls) >= kt.size


def test_perf_event_attr_fills_in_its_size_and_keeps_its_probe_name():
    a = S.perf_event_attr(type=S.PERF_TYPE_TRACEPOINT, sample_period=1)
    assert a.size == ctypes.sizeof(a) == 144  # PERF_ATTR_SIZE_VER9
    a.set_probe(b"do_nanosleep", 8)
    assert ctypes.string_at(a.kprobe_func) == b"do_nanosleep" and a.probe_offset == 8
    assert a.config1 == a.kprobe_func == a.uprobe_path
    a.freq = 1
    a.watermark = 1
    assert a.flags == (1 << 10) | (1 << 14)
    assert a.sample_freq == a.sample_period == 1
