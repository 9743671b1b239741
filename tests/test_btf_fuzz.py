"""Malformed BTF: flips and truncations of real BTF either parse or raise BTFError."""

from __future__ import annotations

import random
import struct
import time

import pytest
from btftest import cpu_budget
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ebpf.btf as btf

from conftest import CILIUM_TESTDATA, fixture_path


def _seeds() -> list:
    out = [btf.load_spec(fixture_path("btf_types.bpfel.o")).raw,
           btf.load_spec(fixture_path("btf_types.bpfeb.o")).raw]
    out.append(btf.load_spec(CILIUM_TESTDATA / "btf" / "testdata" / "relocs-el.elf").raw)
    return out


SEEDS = _seeds()
_BUDGET = 30.0  # CPU seconds; raised below to 1000x the seeds' own cost


def hang_guard():
    """A budget of 1000x what exercising the seeds costs here (raised below),
    so a slow machine does not trip it either."""
    return cpu_budget(_BUDGET, "BTF handling of one input")


def _exercise(data: bytes) -> None:
    """Parse, and when valid, touch everything a user could."""
    with hang_guard():
        try:
            btf.validate(data)
        except btf.BTFError:
            with pytest.raises(btf.BTFError):
                btf.Spec.from_raw(data)
            # Lazy parsing must fail cleanly too, when it fails.
            try:
                lazy = btf.Spec.from_raw(data, validate=False)
                for t in lazy:
                    repr(t)
                    for c in t._children():
                        repr(c)
                    btf.walk(t)
                    try:
                        btf.sizeof(t)
                    except TypeError:
                        pass
            except btf.BTFError:
                pass
            return
        spec = btf.Spec.from_raw(data)
        for t in spec:
            repr(t)
            str(t)
            for _ in btf.walk(t):
                pass
            try:
                btf.codec_for(t).encode(bytes(btf.sizeof(t)))
            except TypeError:
                pass
        spec.format_c()


def _calibrate() -> float:
    start = time.process_time()
    for seed in SEEDS:
        _exercise(seed)
    return max(30.0, 1000 * (time.process_time() - start))


_BUDGET = _calibrate()


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(seed=st.sampled_from(range(len(SEEDS))), flips=st.lists(
    st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), min_size=1, max_size=4))
def test_byte_flips(seed: int, flips: list) -> None:
    data = bytearray(SEEDS[seed])
    for pos, val in flips:
        data[pos % len(data)] = val
    _exercise(bytes(data))


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(seed=st.sampled_from(range(len(SEEDS))), cut=st.integers(min_value=0))
def test_truncations(seed: int, cut: int) -> None:
    data = SEEDS[seed]
    _exercise(data[: cut % len(data)])


def test_word_mutations() -> None:
    """Targeted: overwrite aligned words in the type section with edge values."""
    rng = random.Random(1234)
    data = SEEDS[0]
    hdr_len, type_off, type_len = struct.unpack_from("<4xIII", data)
    for _ in range(400):
        buf = bytearray(data)
        word = rng.randrange(type_len // 4)
        val = rng.choice([0, 1, 0xFFFFFFFF, 0x7FFFFFFF, len(buf), rng.randrange(1 << 32),
                          rng.randrange(200), 0x04000001, 0x08000000, 0x13000002])
        struct.pack_into("<I", buf, hdr_len + type_off + 4 * word, val)
        _exercise(bytes(buf))


def _typedef_loop_blob() -> bytes:
    strings = b"\0a\0b\0"
    types = struct.pack("<III", 1, 8 << 24, 2) + struct.pack("<III", 3, 8 << 24, 1)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


def test_typedef_loop_rejected() -> None:
    with pytest.raises(btf.BTFError, match="loop"):
        btf.validate(_typedef_loop_blob())
    lazy = btf.Spec.from_raw(_typedef_loop_blob(), validate=False)
    with pytest.raises(btf.BTFError):
        btf.underlying(lazy.type_by_id(1))


def test_out_of_range_id_rejected() -> None:
    strings = b"\0p\0"
    types = struct.pack("<III", 0, 2 << 24, 99)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    with pytest.raises(btf.BTFError, match="out of range"):
        btf.validate(hdr + types + strings)
