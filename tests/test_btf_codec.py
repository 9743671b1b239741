"""ebpf.btf codec: round trips for every shape, and error messages naming the field."""

from __future__ import annotations

import ctypes
import enum
import struct

import pytest

import ebpf.btf as btf
from ebpf.btf import Array, Enum, EnumValue, Float, Int, IntEncoding, Member, Pointer, Struct, Typedef, Union, codec_for

from conftest import fixture_path

u8 = Typedef("u8", Int("unsigned char", 1))
u16 = Int("unsigned short", 2)
u32 = Typedef("u32", Int("unsigned int", 4))
s32 = Int("int", 4, IntEncoding.SIGNED)
u64 = Int("unsigned long long", 8)
s64 = Int("long long", 8, IntEncoding.SIGNED)
char = Int("char", 1, IntEncoding.SIGNED)
boolean = Int("_Bool", 1, IntEncoding.BOOL)


def test_ints() -> None:
    for t, v in [(u8, 255), (u32, 2**32 - 1), (s32, -5), (s64, -2**63), (u64, 2**64 - 1), (u16, 7)]:
        c = codec_for(t)
        assert c.decode(c.encode(v)) == v
    assert codec_for(s32).encode(-1) == b"\xff" * 4
    assert codec_for(boolean).decode(b"\x01") is True
    assert codec_for(boolean).encode(False) == b"\x00"
    assert codec_for(u8) is codec_for(u8)  # cached


def test_int_errors() -> None:
    with pytest.raises(ValueError, match=r"value: 300 does not fit in u8"):
        codec_for(u8).encode(300)
    with pytest.raises(ValueError, match="does not fit"):
        codec_for(s32).encode(2**31)
    with pytest.raises(TypeError, match="value: expected an integer"):
        codec_for(u32).encode("x")
    with pytest.raises(ValueError, match="expected 4 bytes"):
        codec_for(u32).decode(b"\x00")


def test_floats_and_pointers() -> None:
    f = codec_for(Float("double", 8))
    assert f.decode(f.encode(1.25)) == 1.25
    p = codec_for(Pointer(s32))
    assert p.decode(p.encode(0xFFFF0000)) == 0xFFFF0000
    assert p.size == 8


def test_enum() -> None:
    e = Enum("color", 4, [EnumValue("RED", 0), EnumValue("BLUE", 7)])
    c = codec_for(e)
    v = c.decode(struct.pack("<I", 7))
    assert isinstance(v, enum.IntEnum) and v.name == "BLUE" and v == 7
    assert c.decode(struct.pack("<I", 9)) == 9 and type(c.decode(struct.pack("<I", 9))) is int
    assert c.encode("RED") == b"\0" * 4 and c.encode(v) == struct.pack("<I", 7)
    s = Enum("sgn", 8, [EnumValue("NEG", -2)], signed=True)
    assert codec_for(s).decode(codec_for(s).encode(-2)).name == "NEG"


def test_arrays() -> None:
    a = codec_for(Array(s32, 3))
    assert a.decode(a.encode([1, -2, 3])) == [1, -2, 3]
    with pytest.raises(ValueError, match=r"expected 3 elements, got 2"):
        a.encode([1, 2])
    cs = codec_for(Array(char, 8))
    assert cs.decode(b"hi\0\0xyz\0") == b"hi"  # C string: up to the first NUL
    assert cs.encode("hi") == b"hi" + b"\0" * 6
    assert cs.encode(b"12345678") == b"12345678"
    with pytest.raises(ValueError, match="do not fit"):
        cs.encode(b"123456789")
    mac = codec_for(Array(u8, 6))
    assert mac.decode(b"\x01\x02\x00\x00\x00\x00") == b"\x01\x02\x00\x00\x00\x00"  # all bytes kept
    m2 = codec_for(Array(Array(u16, 2), 2))
    assert m2.decode(m2.encode([[1, 2], [3, 4]])) == [[1, 2], [3, 4]]


def _hdr() -> Struct:
    return Struct("hdr", 8, [
        Member("flags", u8, 0), Member("lo", u32, 8, 4), Member("hi", s32, 12, 4),
        Member("len", u16, 16), Member("tail", u32, 32),
    ])


def _packet() -> Struct:
    inner = Union("", 4, [Member("i", s32, 0), Member("f", Float("float", 4), 0)])
    elems = Struct("pair", 4, [Member("a", u16, 0), Member("b", u16, 16)])
    return Struct("packet", 40, [
        Member("hdr", _hdr(), 0),
        Member("", inner, 64),
        Member("pairs", Array(elems, 2), 96),
        Member("name", Array(char, 4), 160),
        Member("ok", boolean, 192),
        Member("ptr", Pointer(s32), 256),
    ])


def test_struct_round_trip() -> None:
    c = codec_for(_packet())
    v = c.decode(bytes(c.size))
    assert v.hdr.flags == 0 and v.pairs[1].b == 0 and v.name == b"" and v.ok is False
    # i=-3 makes f a NaN: compare bytes
    v2 = c.cls(hdr={"flags": 1, "lo": 15, "hi": -8, "len": 9, "tail": 7}, i=-3,
               pairs=[{"a": 1, "b": 2}, {"a": 3, "b": 4}], name="ab", ok=True, ptr=16)
    raw = c.encode(v2)
    back = c.decode(raw)
    assert back.hdr.lo == 15 and back.hdr.hi == -8 and back.hdr.tail == 7
    assert back.i == -3 and back.pairs[1].a == 3 and back.name == b"ab" and back.ok is True
    assert c.encode(back) == raw
    assert c.encode(c.decode(bytearray(raw))) == raw and c.encode(c.decode(memoryview(raw))) == raw
    assert c.decode(raw).hdr == back.hdr
    assert dict(back)["ptr"] == 16 and back._asdict()["name"] == b"ab"
    assert repr(back).startswith("packet(hdr=hdr(flags=1")
    assert bytes(back) == raw
    # dicts with missing fields are zero-filled
    assert c.encode({"hdr": {"flags": 2}}) == c.encode({"hdr": {"flags": 2, "len": 0}})


def test_struct_errors() -> None:
    c = codec_for(_packet())
    with pytest.raises(ValueError, match=r"^value\.hdr\.flags: 300 does not fit in u8$"):
        c.encode({"hdr": {"flags": 300}})
    with pytest.raises(ValueError, match=r"value\.hdr\.lo: 16 does not fit in u32:4"):
        c.encode({"hdr": {"lo": 16}})
    with pytest.raises(ValueError, match=r"value\.hdr: struct hdr has no field 'nope'"):
        c.encode({"hdr": {"nope": 1}})
    with pytest.raises(ValueError, match=r"value\.pairs\[1\]\.a: -1 does not fit"):
        c.encode({"pairs": [{}, {"a": -1}]})
    with pytest.raises(TypeError, match=r"key: expected a dict or struct value"):
        c.encode(5, path="key")
    with pytest.raises(ValueError, match="expected 40 bytes"):
        c.encode(b"\0" * 3)


def test_raw_values_always_work() -> None:
    c = codec_for(_packet())
    raw = bytes(range(40))
    assert c.encode(raw) == raw
    assert c.encode(bytearray(raw)) == raw and c.encode(memoryview(raw)) == raw

    class P(ctypes.Structure):
        _fields_ = [("b", ctypes.c_uint8 * 40)]
    p = P()
    p.b[0] = 9
    assert c.encode(p)[0] == 9

    class B:
        def __bytes__(self) -> bytes:
            return raw
    assert c.encode(B()) == raw
    # nested raw bytes for a struct member
    assert c.encode({"hdr": raw[:8]})[:8] == raw[:8]


def test_big_endian_bitfields() -> None:
    spec = btf.load_spec(fixture_path("btf_types.bpfeb.o"))
    c = codec_for(spec.type_by_name("bits"))
    v = c.cls(a=5, b=17, c=-3, d=100000, col=7)
    back = c.decode(c.encode(v))
    assert (back.a, back.b, back.c, back.d, back.col) == (5, 17, -3, 100000, 7)
    assert back.col.name == "BLUE"


@pytest.mark.parametrize("obj", ["btf_types.bpfel.o", "btf_types.bpfeb.o"])
def test_fixture_node(obj: str) -> None:
    spec = btf.load_spec(fixture_path(obj))
    c = codec_for(spec.type_by_name("node"))
    assert c.size == 160
    v = c.cls(next=0x1000, cv=-1, name=b"node", mac=b"\x01\x02\x03\x04\x05\x06",
              pairs=[{"tag": 1, "value": -2}] * 3, as_int=0x3F800000, range={"lo": 1, "hi": 2},
              x=3, y=4, ratio=0.5, color=1, big=2**33, sgn=3, ok=True,
              matrix=[[1, 2, 3], [4, 5, 6]], bits={"a": 1, "d": 5}, flags=9)
    back = c.decode(c.encode(v))
    assert back.as_float == 1.0 and back.as_int == 0x3F800000
    assert back.range.hi == 2 and back.x == 3 and back.matrix[1] == [4, 5, 6]
    assert back.pairs[2].value == -2 and back.bits.d == 5 and back.color.name == "GREEN"
    assert back.name == b"node" and back.cv == -1 and back.big == 2**33
    data = spec.type_by_name(".data", "datasec")
    dc = codec_for(data)
    g = dc.decode(dc.encode({"counter": 5, "greeting": "hi"}))
    assert g.counter == 5 and g.greeting == b"hi"
    var = spec.type_by_name("limit", btf.Var)
    assert codec_for(var).decode(codec_for(var).encode(42)) == 42


# -- found by scripts/fuzz.py --mode btf ------------------------------------------


def test_fields_named_like_private_names_decode() -> None:
    """Kernel structs have '__x' fields (qrwlock.__lstate, rb_node.__rb_parent_color):
    slots named so are mangled by the class machinery, so decoding failed."""
    s = Struct("qrwlock", 8, [Member("__lstate", u32, 0), Member("wait", u32, 32)])
    v = codec_for(s).decode(struct.pack("<II", 7, 9))
    assert getattr(v, "__lstate") == 7 and v.wait == 9
    assert codec_for(s).encode(v) == struct.pack("<II", 7, 9)


def test_zero_sized_elements_inside_a_value() -> None:
    """char args[6][0]: six elements of zero bytes each, at an offset."""
    s = Struct("ev", 8, [Member("id", s64, 0), Member("args", Array(Array(char, 0), 6), 64)])
    v = codec_for(s).decode(bytes(range(8)))
    assert v.args == [b""] * 6 and v.id == int.from_bytes(bytes(range(8)), "little", signed=True)


def test_codecs_live_as_long_as_their_type() -> None:
    """The cache used to be a module dict holding every type ever decoded."""
    import gc
    import weakref

    t = Struct("transient", 4, [Member("x", s32, 0)])
    c = weakref.ref(codec_for(t))
    assert codec_for(t) is c()
    del t
    gc.collect()
    assert c() is None


def test_sizes_btf_does_not_have_are_btf_errors() -> None:
    for t in (Int("odd", 3), Enum("e", 3, [EnumValue("A", 1)]), Int("huge", 1 << 32)):
        with pytest.raises(btf.BTFError):
            codec_for(Struct("s", 4, [Member("x", t, 0)]))


def test_values_too_large_for_btf_are_btf_errors() -> None:
    with pytest.raises(btf.BTFError, match="cannot be represented"):
        codec_for(Array(Struct("page", 1 << 20, []), 1 << 20))


def test_fields_named_self_or_twice_decode() -> None:
    """A field called self (fixtures/skeleton_names) made the generated
    constructor 'def __init__(self, self=...)': a SyntaxError."""
    s = Struct("odd", 12, [Member("self", u32, 0), Member("_f2", u32, 32), Member("x", u32, 64)])
    v = codec_for(s).decode(struct.pack("<III", 1, 2, 3))
    assert (v.self, v._f2, v.x) == (1, 2, 3)
    assert codec_for(s).encode(v) == struct.pack("<III", 1, 2, 3)
