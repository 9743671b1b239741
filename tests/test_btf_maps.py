"""BTF-typed values through real maps and globals (fixtures/btf_values.bpf.c).

Every codec shape (ints of each size and sign, bool, char[16], enum, float,
double, union, bitfields, nested struct with an array of structs) is written
with ``m[k] = value`` and read back; the bytes in the kernel are checked
against a ``struct.pack`` of the C layout, and syscall programs prove the
kernel sees the fields Python wrote (and vice versa).
"""

from __future__ import annotations

import os
import struct

import pytest

import ebpf
from ebpf.btf import codec_for
from ebpf.errors import MarshalError

from conftest import fixture_path

# struct record layout (x86-64/BPF, little endian):
#  0 u8 u8v | 2 s16 s16v | 4 u32 u32v | 8 s64 s64v | 16 bool flag | 17 char name[16]
#  36 enum color (u32) | 40 struct point pts[3] (6 x s32) | 64 union num (4)
#  68 struct flags (u32 bitfields a:3 b:5 c:4 d:20) | size 72
RECORD_SIZE = 72


def pack_flags(a: int, b: int, c: int, d: int) -> int:
    return (a & 7) | (b & 31) << 3 | (c & 15) << 8 | (d & 0xFFFFF) << 12


def pack_record(r: dict) -> bytes:
    pts = [v for p in r["pts"] for v in (p["x"], p["y"])]
    fl = r["bits"]
    return struct.pack(
        "<Bxh I q ? 16s 3x I 6i i I",
        r["u8v"], r["s16v"], r["u32v"], r["s64v"], r["flag"], r["name"], r["color"],
        *pts, r["num"]["s"], pack_flags(fl["a"], fl["b"], fl["c"], fl["d"]),
    )


RECORD = {
    "u8v": 250,
    "s16v": -32768,
    "u32v": 0xFFFFFFFE,
    "s64v": -(2**63),
    "flag": True,
    "name": b"hello-python",
    "color": 7,
    "pts": [{"x": -1, "y": 2}, {"x": 30, "y": -40}, {"x": 2**31 - 1, "y": -(2**31)}],
    "num": {"s": -5},
    "bits": {"a": 7, "b": 0, "c": -8, "d": 0xFFFFF},
}


def record_sum(r: dict) -> int:
    """Mirror of record_sum() in the fixture."""
    name0 = r["name"][0] if r["name"] else 0
    name0 = name0 - 256 if name0 >= 128 else name0  # char is signed on BPF
    p = r["pts"]
    b = r["bits"]
    return (
        r["u8v"] + r["s16v"] + r["u32v"] + r["s64v"] + int(r["flag"]) + name0 + r["color"]
        + p[0]["x"] + p[0]["y"] * 2 + p[1]["x"] * 3 + p[1]["y"] * 4 + p[2]["x"] * 5 + p[2]["y"] * 6
        + r["num"]["s"] + b["a"] * 10 + b["b"] * 100 + b["c"] * 1000 + b["d"]
    )


def as_plain(v):
    """Decoded value -> plain dicts/lists for comparison."""
    if hasattr(v, "_asdict"):
        return {k: as_plain(x) for k, x in v._asdict().items()}
    if isinstance(v, list):
        return [as_plain(x) for x in v]
    return v


@pytest.fixture
def spec() -> ebpf.CollectionSpec:
    return ebpf.load_collection_spec(fixture_path("btf_values.o"))


@pytest.fixture
def coll(spec):
    with ebpf.Collection(spec) as c:
        yield c


def raw_view(m: ebpf.Map) -> ebpf.Map:
    """The same kernel map, opened without BTF: values are bytes."""
    return ebpf.Map._from_fd(os.dup(m.fd))


# -- pure codec vs struct.pack (no kernel) -------------------------------------


def test_record_codec_matches_struct_pack(spec):
    ms = spec.maps["record_map"]
    c = codec_for(ms.value)
    assert c.size == RECORD_SIZE
    raw = c.encode(RECORD)
    assert raw == pack_record(RECORD)
    assert as_plain(c.decode(raw))["pts"] == RECORD["pts"]


def test_scalar_codecs_match_struct_pack(spec):
    cases = [
        ("u8_map", 255, "<B"), ("s16_map", -2, "<h"), ("u32_map", 2**32 - 1, "<I"),
        ("s64_map", -(2**62), "<q"), ("bool_map", True, "<?"), ("enum_map", 7, "<I"),
        ("float_map", 1.5, "<f"), ("double_map", -2.25, "<d"),
    ]
    for name, value, fmt in cases:
        c = codec_for(spec.maps[name].value)
        assert c.encode(value) == struct.pack(fmt, value), name
        assert c.decode(struct.pack(fmt, value)) == value, name


# -- real maps -----------------------------------------------------------------


SCALARS = [
    ("u8_map", [0, 1, 127, 255], "<B"),
    ("s16_map", [-32768, -1, 0, 32767], "<h"),
    ("u32_map", [0, 1, 2**31, 2**32 - 1], "<I"),
    ("s64_map", [-(2**63), -1, 0, 2**63 - 1], "<q"),
    ("bool_map", [False, True, False, True], "<?"),
    ("float_map", [0.0, 1.5, -3.25, 1e30], "<f"),
    ("double_map", [0.0, 1.5, -3.25, 1e300], "<d"),
]


@pytest.mark.kernel
@pytest.mark.parametrize("name,values,fmt", SCALARS, ids=[s[0] for s in SCALARS])
def test_scalar_round_trip(coll, name, values, fmt):
    m = coll.maps[name]
    raw = raw_view(m)
    try:
        for k, v in enumerate(values):
            m[k] = v
        for k, v in enumerate(values):
            got = m[k]
            if fmt == "<f":
                assert got == struct.unpack(fmt, struct.pack(fmt, v))[0]
            else:
                assert got == v and type(got) is type(v)
            assert raw[k] == struct.pack(fmt, v)
        # Raw bytes written are decoded through BTF too.
        m[0] = struct.pack(fmt, values[-1])
        assert raw[0] == struct.pack(fmt, values[-1])
    finally:
        raw.close()


@pytest.mark.kernel
def test_char_array_round_trip(coll):
    m = coll.maps["str_map"]
    raw = raw_view(m)
    try:
        # At the map level, bytes are the raw value (exactly value_size);
        # str goes through the codec and is NUL-padded.
        m[0] = "abc"
        m[1] = "utf8-\u00e9"
        m[2] = b"x" * 16  # full, no NUL
        m[3] = b"ab\0".ljust(16, b"\0")
        assert m[0] == b"abc"
        assert m[1] == "utf8-\u00e9".encode()
        assert m[2] == b"x" * 16
        assert m[3] == b"ab"
        assert raw[0] == b"abc".ljust(16, b"\0")
        assert raw[1] == "utf8-\u00e9".encode().ljust(16, b"\0")
        assert raw[2] == b"x" * 16
        with pytest.raises(ValueError, match="17|fit"):
            m[0] = "y" * 17
    finally:
        raw.close()


@pytest.mark.kernel
def test_char_array_short_bytes_round_trip(coll):
    m = coll.maps["str_map"]
    m[0] = b"abc"
    assert m[0] == b"abc"
    m[1] = b"x" * 16  # exactly the size: stored as is
    assert m[1] == b"x" * 16
    with pytest.raises(MarshalError, match="17 bytes do not fit"):
        m[2] = b"y" * 17


@pytest.mark.kernel
def test_enum_round_trip(coll):
    m = coll.maps["enum_map"]
    m[0] = 7
    got = m[0]
    assert got == 7 and got.name == "BLUE"
    m[1] = got.__class__.GREEN
    assert m[1].name == "GREEN"
    m[2] = 99  # not an enumerator: still stored, decoded as a plain int
    assert m[2] == 99
    assert m[3] == 0 and m[3].name == "RED"


@pytest.mark.kernel
def test_union_and_bitfields_round_trip(coll):
    u = coll.maps["union_map"]
    u[0] = {"s": -2}
    got = u[0]
    assert got.s == -2 and got.u == 2**32 - 2 and got.b == b"\xfe\xff\xff\xff"
    u[1] = {"b": b"\x01\x02\x03\x04"}
    assert u[1].u == 0x04030201
    f = coll.maps["flags_map"]
    raw = raw_view(f)
    try:
        for k, (a, b, c, d) in enumerate([(0, 0, 0, 0), (7, 31, 7, 0xFFFFF), (1, 2, -8, 3), (5, 17, -1, 123456)]):
            f[k] = {"a": a, "b": b, "c": c, "d": d}
            got = f[k]
            assert (got.a, got.b, got.c, got.d) == (a, b, c, d)
            assert raw[k] == struct.pack("<I", pack_flags(a, b, c, d))
    finally:
        raw.close()


@pytest.mark.kernel
def test_record_round_trip(coll):
    m = coll.maps["record_map"]
    raw = raw_view(m)
    try:
        m[1] = RECORD
        got = m[1]
        assert got.pts[2].y == -(2**31)
        assert got.name == RECORD["name"]
        assert got.bits.c == -8
        plain = as_plain(got)
        plain["num"] = {"s": plain["num"]["s"]}
        assert plain == RECORD
        assert raw[1] == pack_record(RECORD)
        # The decoded object encodes back to the same bytes.
        m[2] = got
        assert raw[2] == raw[1]
        assert m[2] == got
        # Missing fields are zero.
        m[3] = {"u8v": 1}
        assert raw[3] == b"\x01" + bytes(RECORD_SIZE - 1)
    finally:
        raw.close()


@pytest.mark.kernel
def test_struct_key_hash(coll):
    h = coll.maps["point_hash"]
    h[{"x": 1, "y": -1}] = RECORD
    h[{"x": 2, "y": -2}] = {"u8v": 2}
    keys = sorted((k.x, k.y) for k in h.keys())
    assert keys == [(1, -1), (2, -2)]
    assert h[{"x": 2, "y": -2}].u8v == 2
    items = {(k.x, k.y): v.u8v for k, v in h.items()}
    assert items == {(1, -1): RECORD["u8v"], (2, -2): 2}


@pytest.mark.kernel
def test_percpu_struct_values(coll):
    m = coll.maps["percpu_points"]
    n = ebpf._libbpf.num_possible_cpus()
    m[0] = [{"x": i, "y": -i} for i in range(n)]
    got = m[0]
    assert isinstance(got, list) and len(got) == n
    assert [(p.x, p.y) for p in got] == [(i, -i) for i in range(n)]
    assert all(p.x == 0 for p in m[1])
    with pytest.raises(ValueError):
        m[0] = [{"x": 1}] * (n + 1)


# -- programs see what Python wrote, Python decodes what programs wrote ------


@pytest.mark.kernel
def test_program_reads_struct_python_wrote(coll):
    coll.maps["record_map"][0] = RECORD
    res = coll.programs["sum_record"].run()
    expect = record_sum(RECORD)
    assert coll.variables["g_sum"].get() == expect
    assert res.retval == expect & 0x7FFFFFFF


@pytest.mark.kernel
def test_python_decodes_struct_program_wrote(coll):
    assert coll.programs["write_record"].run().retval == 0
    r = coll.maps["out_map"][0]
    assert (r.u8v, r.s16v, r.u32v, r.s64v, r.flag) == (0xAB, -12345, 0xDEADBEEF, -1234567890123, True)
    assert r.name == b"from-bpf"
    assert r.color == 7 and r.color.name == "BLUE"
    assert [(p.x, p.y) for p in r.pts] == [(-1, -2), (100, 200), (2**31 - 1, -(2**31))]
    assert r.num.s == -2 and r.num.u == 2**32 - 2
    assert (r.bits.a, r.bits.b, r.bits.c, r.bits.d) == (6, 31, -8, 0xFFFFF)


# -- variables of struct type ------------------------------------------------


def test_struct_variables_on_spec(spec):
    g = spec.variables["g_record"].get()
    assert g.name == b"initial" and g.color.name == "GREEN"
    assert [(p.x, p.y) for p in g.pts] == [(1, 2), (3, 4), (5, 6)]
    assert (g.bits.a, g.bits.b, g.bits.c, g.bits.d) == (5, 17, -3, 123456)
    assert g.num.u == 0x01020304
    c = spec.variables["g_const"].get()
    assert (c.x, c.y) == (10, -20)
    assert (spec.variables["g_point"].get().x, spec.variables["g_point"].get().y) == (0, 0)
    spec.variables["g_point"].set({"x": 3, "y": -4})
    p = spec.variables["g_point"].get()
    assert (p.x, p.y) == (3, -4)
    spec.variables["g_record"].set(RECORD)
    assert spec.variables["g_record"].get_bytes() == pack_record(RECORD)


@pytest.mark.kernel
def test_struct_variables_set_before_load(spec):
    spec.variables["g_record"].set(RECORD)
    spec.variables["g_point"].set({"x": 3, "y": -4})
    spec.variables["g_const"].set({"x": -100, "y": 200})
    with ebpf.Collection(spec) as coll:
        assert as_plain(coll.variables["g_record"].get())["pts"] == RECORD["pts"]
        assert coll.variables["g_const"].get().x == -100
        coll.programs["sum_globals"].run()
        expect = record_sum(RECORD) + 3 * 7 + (-4) * 11 + (-100) * 13 + 200 * 17
        assert coll.variables["g_global_sum"].get() == expect


@pytest.mark.kernel
def test_struct_variables_live(coll):
    v = coll.variables["g_record"]
    g = v.get()
    assert g.name == b"initial"
    v.set(RECORD)
    assert v.get_bytes() == pack_record(RECORD)
    coll.variables["g_point"].set({"x": -9, "y": 9})
    coll.programs["sum_globals"].run()
    expect = record_sum(RECORD) + (-9) * 7 + 9 * 11 + 10 * 13 + (-20) * 17
    assert coll.variables["g_global_sum"].get() == expect
    # A decoded value with one field changed.
    g = v.get()
    g.pts[1].x = 1000
    v.set(g)
    assert v.get().pts[1].x == 1000


# -- bad values ----------------------------------------------------------------


BAD_VALUES = [
    ("u8_map", 256, "256"),
    ("s16_map", -32769, "-32769"),
    ("u32_map", -1, "-1"),
    ("record_map", {"nope": 1}, "nope"),
    ("record_map", {"u8v": 300}, "u8v"),
    ("record_map", {"pts": [{"x": 1}]}, "pts"),
    ("record_map", {"pts": [{"x": 1}] * 4}, "pts"),
    ("record_map", {"pts": [{"x": 2**40}] * 3}, "pts[0].x"),
    ("record_map", {"bits": {"a": 8}}, "bits.a"),
    ("record_map", {"bits": {"c": 8}}, "bits.c"),
    ("record_map", {"name": b"x" * 17}, "name"),
    ("flags_map", {"d": 2**20}, "d"),
]


@pytest.mark.kernel
@pytest.mark.parametrize("name,value,needle", BAD_VALUES)
def test_bad_values_name_the_field(coll, name, value, needle):
    m = coll.maps[name]
    with pytest.raises((TypeError, ValueError)) as info:
        m[0] = value
    assert needle in str(info.value)
    # Nothing was written.
    assert m[0] in (0, False, b"") or as_plain(m[0]) == as_plain(codec_for(m.spec.value).decode(bytes(m.value_size)))


def test_bad_variable_values(spec):
    with pytest.raises(MarshalError, match=r"pts\[0\]\.x"):
        spec.variables["g_record"].set({"pts": [{"x": 2**40}] * 3})
    with pytest.raises(ValueError, match="z"):
        spec.variables["g_point"].set({"z": 1})
    with pytest.raises((TypeError, ValueError), match="y"):
        spec.variables["g_point"].set({"y": "nope"})
    assert issubclass(MarshalError, ValueError)
