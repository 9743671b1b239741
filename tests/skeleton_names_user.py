"""A script for the skeleton of fixtures/skeleton_names.bpf.c (names that
need renaming in Python, special map kinds); tests/test_gen_load.py
generates ``names.py``, type-checks both with ``mypy --strict`` and runs
this.  ``copy`` copies odd_map[0] into odd_map[1] with each field changed,
so the round trip shows every renamed field sits where C has it."""

from __future__ import annotations

import names


def main() -> None:
    with names.load(path_=7, stats=names.struct_level(depth=3)) as objs:
        odd = names.odd(from_=1, _pad=2, keys_=3, bytes=4, label=b"abc", point_=names.point(5, 6), self_=7,
                        lvl=names.struct_level(8), how=names.mode.LOW, tagged=names.level(9),
                        pts=[names.point(10, 11), names.point()], grid=[[12, 0, 0], [0, 0, 0]],
                        small=[13, 0, 0], ratio=0.5)
        objs.odd_map[0] = odd
        assert objs.odd_map[0] == odd
        assert objs.copy.run().retval == 0
        out = objs.odd_map[1]
        assert (out.from_, out._pad, out.keys_, out.bytes, out.self) == (2, 3, 4, 5, 8), out
        assert out.label == b"Xbc" and out.point == names.point(6, 7)
        assert out.lvl.depth == 8 + 3 and out.tagged.code == 10
        assert out.how is names.mode.HIGH
        assert out.pts[1] == names.point(11, 0) and out.grid[1][2] == 12 + 7 and out.small[2] == 12
        assert out._asdict()["from"] == 2 and out._asdict()["__pad"] == 3

        objs.close_[names.pair_t(1, 2)] = names.struct_range(3, 4)
        assert [(k.a, k.b, v.lo, v.hi) for k, v in objs.close_.items()] == [(1, 2, 3, 4)]
        objs.anon_map[0] = names.anon_map_value(only=5)
        assert objs.anon_map[0].only == 5
        objs.queue.put(None, 42)
        assert objs.queue.lookup_and_delete(None) == 42
        key = names.lpm_key(prefixlen=32, addr=bytes([10, 0, 0, 1]))
        objs.routes[key] = 1
        assert objs.routes[key] == 1
        inner = objs.outer[0]
        try:
            assert inner.name == "inner_one"
        finally:
            inner.close()
        assert objs.stats.get() == names.struct_level(depth=3)
        assert objs.path_.get() == 7 and objs.Objects_.get() is names.mode.HIGH
        print("ok:", out)


if __name__ == "__main__":
    main()
