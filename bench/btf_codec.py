"""Decoding ``struct { u32 a; u32 b; u64 c; }`` with ebpf.btf vs hand-written code.

The floor is what a Python programmer would write by hand for the same job:
``struct.Struct('<IIQ').unpack(buf)`` followed by constructing a plain class
with an ``__init__`` that assigns three attributes.  The ratio is
codec-decode time / floor time (target <= 1.5).
"""

import struct
import timeit

from ebpf.btf import Int, Member, Struct, Typedef, codec_for

u32 = Typedef("u32", Int("unsigned int", 4))
u64 = Typedef("u64", Int("unsigned long long", 8))
T = Struct("value", 16, [Member("a", u32, 0), Member("b", u32, 32), Member("c", u64, 64)])


class Plain:
    def __init__(self, a=0, b=0, c=0):
        self.a = a
        self.b = b
        self.c = c


S = struct.Struct("<IIQ")


def floor(buf, unpack=S.unpack, cls=Plain):
    return cls(*unpack(buf))


def main() -> None:
    codec = codec_for(T)
    buf = S.pack(1, 2, 3)
    v = codec.decode(buf)
    assert (v.a, v.b, v.c) == (1, 2, 3)
    decode = codec.decode
    n = 200_000
    best_floor = min(timeit.repeat(lambda: floor(buf), number=n, repeat=7)) / n
    best_codec = min(timeit.repeat(lambda: decode(buf), number=n, repeat=7)) / n
    best_raw = min(timeit.repeat(lambda: S.unpack(buf), number=n, repeat=7)) / n
    print(f"struct.unpack only:        {best_raw * 1e9:7.1f} ns")
    print(f"floor (unpack + Plain()):  {best_floor * 1e9:7.1f} ns")
    print(f"codec.decode:              {best_codec * 1e9:7.1f} ns")
    print(f"ratio codec / floor:       {best_codec / best_floor:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
