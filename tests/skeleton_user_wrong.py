"""Mistakes ``mypy --strict`` must report against the skeleton of
fixtures/skeleton.bpf.c: tests/test_gen.py expects an error on exactly the
lines marked ``# error``, and none elsewhere."""

from __future__ import annotations

import skel


def main() -> None:
    with skel.load(target_pid="me") as objs:  # error
        objs.stats_map[0] = skel.point(x=1, y=2)  # error
        objs.stats_map["zero"] = skel.stats()  # error
        objs.target_pid.set(1)  # error
        objs.calls.set(b"1")  # error
        objs.origin.set(skel.point(x=1, y=2))
        objs.jump_table[0] = objs.stats_map  # error
        ev = skel.event(pid=b"x")  # error
        ev.comm = "text"  # error
        s: skel.stats = objs.stats_map[0]
        s.where = skel.stats()  # error
        s.hist = [1.5]  # error
        objs.no_such_map.close()  # error
