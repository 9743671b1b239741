#!/usr/bin/env python3
"""Mutation fuzzer for opening BPF ELF objects.

Takes seed objects (the built fixtures and cilium/ebpf's test objects), makes
deterministically mutated copies (a few flipped bytes, or a truncation) and
opens every copy in a child process, so that a segfault inside libbpf shows up
as a dead child rather than a dead fuzzer.

Modes:

``raw``
    ``bpf_object__open_mem`` straight from ctypes, without any validation.
    This is the floor we measure against: how often libbpf 1.1.2 itself
    crashes on broken input.  It is the one place outside ``ebpf/_libbpf.py``
    allowed to touch ``ctypes.CDLL``, because the point is to bypass the
    library.
``lib``
    ``ebpf.load_collection_spec(data)``, which validates first.  Must never
    crash or hang; every failure must be an ``ebpf.errors.EBPFError``.  Until
    the library has ``load_collection_spec`` this is emulated as
    ``_validate.check_object`` followed by the raw open.

Usage::

    scripts/fuzz.py --mode raw --seed 1 --count 20000 --save /tmp/crashers
    scripts/fuzz.py --mode lib --seed 1 --count 200000 --jobs 2

The mutation for input ``i`` depends only on ``(seed, i)`` and the seed set,
so any reported input can be regenerated with ``--only i``.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import random
import select
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
CILIUM = Path("/usr/share/gocode/src/github.com/cilium/ebpf")

# Per-input time limit; libbpf takes milliseconds on these objects, so
# anything near this is a hang.
TIMEOUT = 20.0
# Keep a runaway allocation in a child from taking the machine down.
CHILD_ADDRESS_SPACE = 4 << 30


def seed_paths() -> List[Path]:
    """Every seed object, sorted so that input numbering is stable."""
    pats = [
        str(ROOT / "fixtures" / "build" / "*.o"),
        str(CILIUM / "testdata" / "*.elf"),
        str(CILIUM / "btf" / "testdata" / "*.elf"),
    ]
    paths = sorted({Path(p) for pat in pats for p in glob.glob(pat)})
    return paths


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A copy of ``data`` with a small random change.

    Mostly a handful of byte overwrites or bit flips (what reaches deepest,
    since the ELF and BTF headers stay mostly intact); sometimes a truncation.
    """
    buf = bytearray(data)
    choice = rng.random()
    if choice < 0.08:
        return bytes(buf[: rng.randrange(len(buf))])
    if choice < 0.16:
        # A whole aligned word set to an edge value: reaches 64-bit offset
        # and size fields, where wrap-around bugs live, which byte flips
        # almost never do.
        width = rng.choice((4, 8))
        pos = rng.randrange(len(buf) // width) * width
        value = rng.choice((0, 1, 8, 0x7FFFFFFF, 0xFFFFFFFF, -8, -(1 << 24), 1 << 31, 1 << 32))
        buf[pos : pos + width] = (value % (1 << (8 * width))).to_bytes(width, rng.choice(("little", "big")))
        return bytes(buf)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 6))):
        pos = rng.randrange(len(buf))
        kind = rng.random()
        if kind < 0.4:
            buf[pos] ^= 1 << rng.randrange(8)
        elif kind < 0.8:
            buf[pos] = rng.randrange(256)
        else:
            # Interesting values land in size and index fields.
            buf[pos] = rng.choice((0x00, 0xFF, 0x7F, 0x80, 0x01, 0x10, 0x20, 0x40))
    return bytes(buf)


def make_input(seeds: Sequence[Tuple[str, bytes]], seed: int, i: int) -> Tuple[str, bytes]:
    """Input number ``i`` of run ``seed``: (seed object name, mutated bytes)."""
    rng = random.Random(f"{seed}:{i}")
    name, data = seeds[rng.randrange(len(seeds))]
    return name, mutate(data, rng)


# -- child side ------------------------------------------------------------


def _read_exact(f, n: int) -> Optional[bytes]:
    chunks = []
    while n:
        b = f.read(n)
        if not b:
            return None
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def child_main(mode: str) -> None:
    """Open each length-prefixed input from stdin; one result line per input."""
    import ctypes
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE))
    sys.path.insert(0, str(ROOT))
    lib = ctypes.CDLL("libbpf.so.1")
    lib.bpf_object__open_mem.restype = ctypes.c_void_p
    lib.bpf_object__open_mem.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    lib.bpf_object__close.argtypes = [ctypes.c_void_p]
    lib.libbpf_get_error.argtypes = [ctypes.c_void_p]
    lib.libbpf_get_error.restype = ctypes.c_long
    lib.libbpf_set_print.restype = ctypes.c_void_p
    lib.libbpf_set_print.argtypes = [ctypes.c_void_p]
    lib.libbpf_set_print(None)

    def raw_open(data: bytes) -> str:
        buf = ctypes.create_string_buffer(data, len(data))
        obj = lib.bpf_object__open_mem(buf, len(data), None)
        err = lib.libbpf_get_error(obj)
        if err:
            return f"fail {err}"
        lib.bpf_object__close(obj)
        return "ok"

    load = None
    check = None
    EBPFError: type = Exception
    if mode == "lib":
        import logging

        logging.disable(logging.CRITICAL)
        import ebpf
        from ebpf.errors import EBPFError as _E

        EBPFError = _E
        load = getattr(ebpf, "load_collection_spec", None)
        if load is None:
            from ebpf._validate import check_object as check

    stdin = sys.stdin.buffer
    stdout = sys.stdout
    while True:
        head = _read_exact(stdin, 4)
        if head is None:
            return
        (n,) = struct.unpack("<I", head)
        data = _read_exact(stdin, n)
        if data is None:
            return
        if mode == "raw":
            result = raw_open(data)
        else:
            try:
                if load is not None:
                    load(data)
                    result = "ok"
                else:
                    assert check is not None
                    check(data)
                    result = raw_open(data)
            except EBPFError as e:
                result = "rej " + f"{type(e).__name__}: {e}".replace("\n", " ")[:300]
            except BaseException as e:  # noqa: BLE001 - any other type is the bug we hunt
                result = "bad " + f"{type(e).__name__}: {e}".replace("\n", " ")[:300]
        stdout.write(result + "\n")
        stdout.flush()


# -- parent side -----------------------------------------------------------


class Child:
    """One worker process, restarted after it dies."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", self.mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def run(self, data: bytes) -> Tuple[str, str]:
        """(status, detail): status is ok/fail/rej/bad/crash/hang."""
        if self.proc is None:
            self.start()
        proc = self.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(struct.pack("<I", len(data)) + data)
            proc.stdin.flush()
        except BrokenPipeError:
            return self._dead()
        ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
        if not ready:
            proc.kill()
            proc.wait()
            self.proc = None
            return "hang", f"no answer in {TIMEOUT}s"
        line = proc.stdout.readline().decode(errors="replace").rstrip("\n")
        if not line:
            return self._dead()
        status, _, detail = line.partition(" ")
        return status, detail

    def _dead(self) -> Tuple[str, str]:
        assert self.proc is not None
        rc = self.proc.wait()
        self.proc = None
        return "crash", f"child exit {rc}"

    def close(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait()
            self.proc = None


@dataclass
class Stats:
    inputs: int = 0
    counts: Dict[str, int] = field(default_factory=dict)
    failures: List[Tuple[int, str, str, str]] = field(default_factory=list)


def run(
    mode: str,
    seed: int,
    count: int,
    jobs: int,
    save: Optional[Path],
    start: int = 0,
    only: Optional[int] = None,
    progress: bool = True,
) -> Stats:
    """Fuzz ``count`` inputs in ``jobs`` parallel children; return the tallies."""
    seeds = [(p.name, p.read_bytes()) for p in seed_paths()]
    if not seeds:
        raise SystemExit("no seed objects found (run scripts/build_fixtures.sh)")
    stats = Stats()
    lock = threading.Lock()
    indices = [only] if only is not None else list(range(start, start + count))
    next_pos = [0]
    t0 = time.monotonic()

    def worker() -> None:
        child = Child(mode)
        try:
            while True:
                with lock:
                    if next_pos[0] >= len(indices):
                        return
                    i = indices[next_pos[0]]
                    next_pos[0] += 1
                name, data = make_input(seeds, seed, i)
                status, detail = child.run(data)
                with lock:
                    stats.inputs += 1
                    stats.counts[status] = stats.counts.get(status, 0) + 1
                    if status in ("crash", "hang", "bad"):
                        stats.failures.append((i, name, status, detail))
                        if save is not None:
                            save.mkdir(parents=True, exist_ok=True)
                            digest = hashlib.sha1(data).hexdigest()[:12]
                            (save / f"{mode}-{status}-{seed}-{i}-{name}-{digest}.bin").write_bytes(data)
                    if progress and stats.inputs % 5000 == 0:
                        rate = stats.inputs / (time.monotonic() - t0)
                        print(f"  {stats.inputs} inputs, {rate:.0f}/s, {stats.counts}", file=sys.stderr, flush=True)
        finally:
            child.close()

    threads = [threading.Thread(target=worker) for _ in range(max(1, jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return stats


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", choices=("raw", "lib"), help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=("raw", "lib", "both"), default="lib")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--start", type=int, default=0, help="first input number")
    ap.add_argument("--only", type=int, help="run just input number N")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--save", type=Path, help="directory for crashing inputs")
    args = ap.parse_args(argv)
    if args.child:
        child_main(args.child)
        return 0

    modes = ("raw", "lib") if args.mode == "both" else (args.mode,)
    bad = 0
    for mode in modes:
        t0 = time.monotonic()
        stats = run(mode, args.seed, args.count, args.jobs, args.save, args.start, args.only)
        took = time.monotonic() - t0
        c = stats.counts
        crashes = c.get("crash", 0) + c.get("hang", 0)
        print(f"mode {mode}: {stats.inputs} inputs in {took:.1f}s ({stats.inputs / took:.0f}/s)")
        if mode == "raw":
            print(f"  crashes/hangs in raw libbpf: {crashes} ({100.0 * crashes / max(1, stats.inputs):.3f}%)")
            print(f"  opened: {c.get('ok', 0)}, refused by libbpf: {c.get('fail', 0)}")
        else:
            print(f"  rejected by validator/library: {c.get('rej', 0)}")
            print(f"  opened: {c.get('ok', 0)}, refused by libbpf after validation: {c.get('fail', 0)}")
            print(f"  crashes/hangs in lib mode: {crashes}, untyped exceptions: {c.get('bad', 0)}")
            bad += crashes + c.get("bad", 0)
        for i, name, status, detail in stats.failures[:50]:
            print(f"  #{i} ({name}): {status} {detail}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
