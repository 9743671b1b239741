"""A user's script for the skeleton of fixtures/skeleton.bpf.c.

tests/test_gen_load.py writes ``skel.py`` with ``python -m ebpf gen
skeleton.o -o skel.py --type event`` next to a copy of this script,
type-checks both with ``mypy --strict`` and runs it: it loads the object,
writes and reads a struct-valued map, sets globals (one before load), fills
a program array slot, and reads an event from the ring buffer.
"""

from __future__ import annotations

import os
from typing import List

import ebpf.ringbuf

import skel


def main() -> None:
    me = os.getpid()
    with skel.load(target_pid=me, origin=skel.point(x=7, y=-2)) as objs:
        # A struct-valued map: the program folds stats_map[0] into itself.
        objs.stats_map[0] = skel.stats(count=1, label=b"first", where=skel.point(x=10, y=20),
                                       hist=[1, 2, 3, 4], ready=1)
        first: skel.stats = objs.stats_map[0]
        assert first.label == b"first" and first.where == skel.point(x=10, y=20), first

        # Globals and the program array: entry tail-calls jump_table[tail_index].
        objs.tail_index.set(1)
        objs.jump_table[1] = objs.tail_one
        assert objs.entry.run(b"\0" * 64).retval == 101
        assert objs.last_tail.get() == 1
        objs.tail_index.set(0)  # slot 0 was filled in the ELF
        assert objs.entry.run(b"\0" * 64).retval == 100

        s = objs.stats_map[0]
        assert (s.count, s.total, s.hi, s.level) == (3, 68, 1, 100), s
        assert s.last is skel.kind.KIND_TAIL
        assert s.tag.word == 0x01020304 and s.tag.octets == bytes([4, 3, 2, 1])
        per_cpu: List[int] = objs.per_cpu[0]
        assert sum(per_cpu) == 2
        assert [(p.x, p.y, n) for p, n in objs.point_counts.items()] == [(1, 2, 2)]

        # Events: on_getppid is attached by its section, and filters by target_pid.
        with ebpf.ringbuf.Reader(objs.events) as events:
            links = objs.attach()
            assert list(links) == ["on_getppid"], links
            os.getppid()
            ev = skel.event.from_bytes(events.read(timeout=10.0).raw_sample)
        assert ev.pid == me and ev.seq == 1, ev
        assert ev.kind is skel.kind.KIND_EXEC
        assert ev.comm and ev.cookie == 7 * 1000 - 2
        assert objs.calls.get() == 1
        assert objs.target_pid.get() == me
        assert objs.greeting.get() == b"hello"
        print("ok:", ev)


if __name__ == "__main__":
    main()
