"""The marshaller (ebpf/_marshal.py) without a kernel: encodings, layouts, errors."""

from __future__ import annotations

import ctypes
import struct
import sys

import pytest

from ebpf import MapType
from ebpf._marshal import OUT_DECODE, OUT_INT, OUT_RAW, Layout, encode_fixed
from ebpf.btf import Int, IntEncoding, Member, Struct, codec_for
from ebpf.errors import MarshalError, MarshalTypeError

NATIVE = sys.byteorder


def _int(size: int, signed: bool) -> Int:
    return Int(name=f"{'s' if signed else 'u'}{size * 8}", size=size,
               encoding=IntEncoding.SIGNED if signed else 0, bits=size * 8)


def test_encode_fixed_accepts_what_the_design_says():
    assert encode_fixed(b"abcd", 4) == b"abcd"
    assert encode_fixed(bytearray(b"abcd"), 4) == b"abcd"
    assert encode_fixed(memoryview(b"abcd"), 4) == b"abcd"
    assert encode_fixed(7, 4) == (7).to_bytes(4, NATIVE)
    assert encode_fixed(True, 1) == b"\x01"
    assert encode_fixed(ctypes.c_uint32(7), 4) == (7).to_bytes(4, NATIVE)

    class B:
        def __bytes__(self) -> bytes:
            return b"wxyz"

    assert encode_fixed(B(), 4) == b"wxyz"


@pytest.mark.parametrize("bad", [None, "str", 1.5, [1, 2], {"a": 1}, object()])
def test_wrong_types_are_marshal_type_errors(bad):
    with pytest.raises(MarshalTypeError) as info:
        encode_fixed(bad, 4, what="map m: key")
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    assert "map m: key" in str(info.value)


def test_sizes_are_checked():
    with pytest.raises(MarshalError, match="expected 4 bytes, got 3"):
        encode_fixed(b"abc", 4)
    with pytest.raises(MarshalError, match="expected 4 bytes, got 2"):
        encode_fixed(ctypes.c_uint16(1), 4)
    with pytest.raises(MarshalError, match="cannot encode an int into 3 bytes"):
        encode_fixed(1, 3)


def test_ints_are_unsigned_unless_said_signed():
    with pytest.raises(MarshalError, match=r"-1 does not fit in 4 bytes \(0\.\.4294967295\)"):
        encode_fixed(-1, 4)
    with pytest.raises(MarshalError, match="does not fit"):
        encode_fixed(1 << 32, 4)
    assert encode_fixed(-1, 4, signed=True) == b"\xff" * 4
    with pytest.raises(MarshalError):
        encode_fixed(1 << 31, 4, signed=True)


def test_btf_codec_errors_become_marshal_errors():
    c = codec_for(_int(1, False))
    with pytest.raises(MarshalError, match="300 does not fit"):
        encode_fixed(300, 1, c, "map m: value")
    with pytest.raises(MarshalTypeError):
        encode_fixed("x", 1, c, "map m: value")


def test_layout_of_a_plain_map():
    L = Layout("m", MapType.HASH, 4, 8)
    assert L.key_len == 4 and L.value_len == 8
    assert L.pack_key(5) == (5).to_bytes(4, NATIVE)
    with pytest.raises(struct.error):
        L.pack_key(-1)  # the hot path then asks key(), which explains
    with pytest.raises(MarshalError, match="-1 does not fit"):
        L.key(-1)
    assert L.value_out == OUT_RAW
    assert L.decode_value(b"\x01" * 8) == b"\x01" * 8


def test_layout_of_btf_int_maps_decodes_ints():
    L = Layout("m", MapType.ARRAY, 4, 8, _int(4, False), _int(8, True))
    assert L.value_out == OUT_INT
    assert L.key_signed is False and L.value_signed is True
    buf = L.value_buffer()
    buf[0] = -5
    assert buf[0] == -5
    assert L.decode_values(struct.pack("=qq", -1, 2), 2) == [-1, 2]
    assert L.decode_keys(struct.pack("=II", 3, 4), 2) == [3, 4]
    assert L.pack_value(-1) == struct.pack("=q", -1)


def test_layout_of_struct_values_decodes_through_the_codec():
    point = Struct(name="point", size=8, members=[Member("x", _int(4, False), 0), Member("y", _int(4, False), 32)])
    L = Layout("m", MapType.HASH, 4, 8, _int(4, False), point)
    assert L.value_out == OUT_DECODE
    v = L.decode_value(struct.pack("=II", 1, 2))
    assert (v.x, v.y) == (1, 2)
    assert L.value({"x": 3, "y": 4}) == struct.pack("=II", 3, 4)
    with pytest.raises(MarshalTypeError):
        L.value(5)


def test_layout_compiles_codecs_on_first_use_only():
    # Creating a map must not pay for decoding it: a Layout decides its
    # fast paths from the BTF types and builds the codec when first asked.
    point = Struct(name="point", size=8, members=[Member("x", _int(4, False), 0), Member("y", _int(4, False), 32)])
    L = Layout("m", MapType.HASH, 4, 8, _int(4, False), point)
    assert L.key_int is False and L.value_out == OUT_DECODE
    assert "value_codec" not in vars(L) and "key_codec" not in vars(L)
    assert L.pack_key(7) == struct.pack("=I", 7)
    assert "key_codec" not in vars(L)  # plain int keys never need it
    assert L.decode_value(struct.pack("=II", 5, 6)).y == 6
    assert "value_codec" in vars(L)


def test_per_cpu_layout_pads_each_cpu_to_8_bytes():
    L = Layout("m", MapType.PERCPU_ARRAY, 4, 3, ncpus=2)
    assert L.vbuf_size == 16
    assert L.value([b"abc", b"def"]) == b"abc\0\0\0\0\0def\0\0\0\0\0"
    assert L.decode_value(b"abc\0\0\0\0\0def\0\0\0\0\0") == [b"abc", b"def"]
    with pytest.raises(MarshalError, match="expected 2 per-CPU values, got 1"):
        L.value([b"abc"])
    with pytest.raises(MarshalTypeError):
        L.value(b"abc")


def test_fd_value_layout_turns_ids_into_objects():
    opened = []
    L = Layout("m", MapType.PROG_ARRAY, 4, 4, open_id=lambda i: opened.append(i) or ("prog", i))
    assert L.decode_value((42).to_bytes(4, NATIVE)) == ("prog", 42)

    class Owner:
        fd = 9

    assert L.value(Owner()) == (9).to_bytes(4, NATIVE)
    with pytest.raises(MarshalTypeError):
        L.value("nope")


def test_keyless_layout_takes_none_only():
    L = Layout("q", MapType.QUEUE, 0, 4)
    assert L.key(None) is None
    with pytest.raises(MarshalTypeError, match="take no key"):
        L.key(1)


def test_blobs_pack_batches_in_one_go_and_name_the_culprit():
    L = Layout("m", MapType.HASH, 4, 8)
    assert L.keys_blob([1, 2]) == struct.pack("=II", 1, 2)
    assert L.keys_blob([b"abcd", b"efgh"]) == b"abcdefgh"
    assert L.keys_blob([1, b"abcd"]) == struct.pack("=I", 1) + b"abcd"  # mixed: one by one
    with pytest.raises(MarshalError, match="-1 does not fit"):
        L.keys_blob([1, -1])
    with pytest.raises(MarshalError, match="expected 4 bytes, got 3"):
        L.keys_blob([b"abcd", b"abc"])
    with pytest.raises(MarshalTypeError):
        L.values_blob([1, None])


def test_bulk_decoder_matches_the_codec_for_flat_structs():
    from ebpf._marshal import bulk_decoder
    from ebpf.btf import Enum, EnumValue, Float, Pointer

    flat = Struct(name="ev", size=24, members=[
        Member("a", _int(1, False), 0), Member("b", _int(2, True), 16), Member("c", _int(4, False), 32),
        Member("d", Float(name="double", size=8), 64), Member("p", Pointer(target=_int(4, False)), 128)])
    c = codec_for(flat)
    bulk = bulk_decoder(c)
    assert bulk is not None
    raw = bytes(range(24)) + bytes(8) + bytes(range(100, 124))  # stride 32: 8 bytes between values
    got = list(bulk.decode(raw, 0, 32, 2))
    assert got == [c.decode(raw[:24]), c.decode(raw[32:56])]
    # Not flat: enums, bitfields, arrays decode one value at a time.
    e = Enum(name="e", size=4, values=[EnumValue("X", 1)])
    assert bulk_decoder(codec_for(Struct(name="s1", size=4, members=[Member("e", e, 0)]))) is None
    assert bulk_decoder(codec_for(Struct(name="s2", size=4, members=[Member("b", _int(4, False), 0, 3)]))) is None


def test_layout_decodes_batches_of_struct_values_in_one_go():
    point = Struct(name="pt", size=8, members=[Member("x", _int(4, True), 0), Member("y", _int(4, True), 32)])
    L = Layout("m", MapType.HASH, 4, 8, _int(4, False), point)
    raw = struct.pack("=iiiiii", 1, -2, 3, -4, 0, 0)
    assert [(v.x, v.y) for v in L.decode_values(raw, 2)] == [(1, -2), (3, -4)]


def test_blobs_never_take_a_wide_buffer_for_its_length():
    import array

    L = Layout("m", MapType.HASH, 2, 8)
    wide = memoryview(array.array("I", [1, 2]))  # len() 2, but 8 bytes
    with pytest.raises(MarshalError, match="expected 2 bytes, got 8"):
        L.keys_blob([wide])
    assert L.keys_blob([b"ab", bytearray(b"cd"), memoryview(b"ef")]) == b"abcdef"
