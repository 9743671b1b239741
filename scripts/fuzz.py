#!/usr/bin/env python3
"""Mutation fuzzers for what the library reads: ELF objects, BTF, kernel types.

Takes seed inputs (the built fixtures, cilium/ebpf's test objects, libxdp's
objects and the BPF objects embedded in Debian's libbpf-tools executables),
makes deterministically mutated copies (a few flipped bytes, an edge value
in an aligned word, or a truncation) and hands every copy to a child
process, so that a segfault inside libbpf shows up as a dead child rather
than a dead fuzzer.

Modes:

``raw``
    ``bpf_object__open_mem`` straight from ctypes, without any validation.
    This is the floor we measure against: how often libbpf 1.1.2 itself
    crashes on broken input.  It is the one place outside ``ebpf/_libbpf.py``
    allowed to touch ``ctypes.CDLL``, because the point is to bypass the
    library.
``lib`` (also ``elf``)
    ``ebpf.load_collection_spec(data)``, which validates first.  Must never
    crash or hang; every failure must be an ``ebpf.errors.EBPFError``.
``btf``
    The pure-Python BTF package on mutated raw BTF: ``Spec.from_raw`` (the
    validator), then for what it accepts ``format_c()`` and every type's
    ``repr``/``str``/``walk``/``sizeof``/``alignof``/codec; for what it
    refuses, the same through a lazily checked spec (``validate=False``, as
    the kernel's own BTF is read), which may only fail with ``BTFError``.
``ktypes``
    Kernel types: a mutated BTF file (raw, or an ELF object) as
    ``ebpf.Collection(spec, kernel_types=path)`` of a CO-RE program: the
    loader checks it with the BTF validator (``ebpf.btf.load_spec``), then
    libbpf parses it and relocates against it.  Needs root and a kernel.
``ktypes-raw``
    The same file handed straight to libbpf (``btf_custom_path``) with no
    check: how often libbpf crashes on such files.

Statuses: ``ok`` (accepted), ``rej`` (refused with a typed error before
libbpf saw it), ``fail`` (refused with a typed error by libbpf or the
kernel), ``bad`` (an exception that is not an ``EBPFError``: a bug),
``odd`` (validated BTF that the formatter, a walker or the codec refused
with a ``BTFError``: typed, but a gap between them and the validator),
``crash`` (the child died), ``hang`` (no answer in ``TIMEOUT`` seconds,
twice: outside the raw modes a slow answer on a busy machine is retried
once in a fresh child with a longer limit and then counted as ``slow``).

Usage::

    scripts/fuzz.py --mode raw --seed 1 --count 20000 --save /tmp/crashers
    nice -n 19 scripts/fuzz.py --mode lib --seed 1 --count 50000 --start 0 --jobs 2
    scripts/fuzz.py --mode btf --seed 1 --count 100000
    scripts/fuzz.py --mode ktypes --seed 1 --count 10000

The mutation for input ``i`` depends only on ``(mode, seed, i)`` and the
seed set, so any reported input can be regenerated with ``--only i``, and a
long campaign can run in chunks (``--start``).
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
LIBBPF_TOOLS_LIST = Path("/var/lib/dpkg/info/libbpf-tools.list")
LIBXDP_OBJECTS = "/usr/lib/*/bpf/*.o"

# An input that takes longer than this is a hang (after one retry).
TIMEOUT = 5.0
CONFIRM_TIMEOUT = 30.0
# Keep a runaway allocation in a child from taking the machine down.
CHILD_ADDRESS_SPACE = 4 << 30

MODES = ("raw", "lib", "btf", "ktypes", "ktypes-raw")
EM_BPF = 247


# -- seeds -------------------------------------------------------------------


def seed_paths() -> List[Path]:
    """Every seed object file, sorted so that input numbering is stable."""
    pats = [
        str(ROOT / "fixtures" / "build" / "*.o"),
        str(CILIUM / "testdata" / "*.elf"),
        str(CILIUM / "btf" / "testdata" / "*.elf"),
        LIBXDP_OBJECTS,
    ]
    return sorted({Path(p) for pat in pats for p in glob.glob(pat)})


def embedded_bpf_objects(data: bytes) -> List[bytes]:
    """The BPF ELF objects inside an executable (libbpf skeletons embed them
    whole): every 64-bit ELF header for EM_BPF whose section table ends
    inside the file."""
    out = []
    p = data.find(b"\x7fELF\x02", 1)
    while p >= 0:
        hdr = data[p: p + 64]
        if len(hdr) == 64 and hdr[5] in (1, 2):
            e = "<" if hdr[5] == 1 else ">"
            if struct.unpack_from(e + "H", hdr, 18)[0] == EM_BPF:
                shoff = struct.unpack_from(e + "Q", hdr, 40)[0]
                shentsize, shnum = struct.unpack_from(e + "HH", hdr, 58)
                end = shoff + shentsize * shnum
                if 64 <= end <= len(data) - p:
                    out.append(data[p: p + end])
        p = data.find(b"\x7fELF\x02", p + 1)
    return out


def libbpf_tools_objects() -> List[Tuple[str, bytes]]:
    """(name, object) for each BPF object embedded in libbpf-tools' programs."""
    try:
        listed = LIBBPF_TOOLS_LIST.read_text().split()
    except OSError:
        return []
    out = []
    for path in sorted(p for p in listed if p.startswith("/usr/sbin/")):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        for n, obj in enumerate(embedded_bpf_objects(data)):
            out.append((f"{os.path.basename(path)}.{n}.bpf.o", obj))
    return out


_CORPUS: Optional[List[Tuple[str, bytes]]] = None


def corpus() -> List[Tuple[str, bytes]]:
    """Every real object we can get: (name, bytes), in a stable order."""
    global _CORPUS
    if _CORPUS is None:
        found = [(p.name, p.read_bytes()) for p in seed_paths()]
        found += libbpf_tools_objects()
        _CORPUS = found
    return list(_CORPUS)


def btf_seeds() -> List[Tuple[str, bytes]]:
    """Raw BTF of every corpus object (data sections fixed up), deduplicated."""
    sys.path.insert(0, str(ROOT))
    from ebpf import btf

    out = []
    seen = set()
    for name, data in corpus():
        try:
            raw = btf.load_spec(data).raw
        except btf.BTFError:
            continue
        digest = hashlib.sha1(raw).digest()
        if digest not in seen:
            seen.add(digest)
            out.append((name, raw))
    return out


# The CO-RE object (one raw_tp program) the kernel-types modes relocate.
KTYPES_OBJECT = ROOT / "fixtures" / "build" / "core_read.o"


def tiny_task_struct_btf() -> bytes:
    """Raw BTF with ``int`` and ``struct task_struct { int pid; int tgid; }``."""
    strings = b"\0int\0task_struct\0pid\0tgid\0"
    types = struct.pack("<IIII", 1, 1 << 24, 4, (1 << 24) | 32)
    types += struct.pack("<III", 5, (4 << 24) | 2, 8)
    types += struct.pack("<III", 17, 1, 0) + struct.pack("<III", 21, 1, 32)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


def ktypes_seeds() -> List[Tuple[str, bytes]]:
    """Kernel-types files for the CO-RE program: its own BTF (raw and as the
    ELF object itself) and a minimal hand-written one."""
    if not KTYPES_OBJECT.exists():
        return []
    sys.path.insert(0, str(ROOT))
    from ebpf import btf

    obj = KTYPES_OBJECT.read_bytes()
    return [
        ("core_read.btf", btf.load_spec(obj).raw),
        ("core_read.o", obj),
        ("task_struct.btf", tiny_task_struct_btf()),
    ]


def seeds_for(mode: str) -> List[Tuple[str, bytes]]:
    if mode in ("raw", "lib"):
        return corpus()
    if mode == "btf":
        return btf_seeds()
    return ktypes_seeds()


# -- mutation ----------------------------------------------------------------


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


def make_input(seeds: Sequence[Tuple[str, bytes]], seed: object, i: int) -> Tuple[str, bytes]:
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


def _raw_libbpf():
    import ctypes

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

    return raw_open


def _raw_core_load():
    """libbpf opening and loading the CO-RE object against a kernel-types
    file (``btf_custom_path``) without any check of that file."""
    import ctypes

    class OpenOpts(ctypes.Structure):  # struct bpf_object_open_opts, libbpf 1.1
        _fields_ = [("sz", ctypes.c_size_t), ("object_name", ctypes.c_char_p), ("relaxed_maps", ctypes.c_bool),
                    ("pin_root_path", ctypes.c_char_p), ("attach_prog_fd", ctypes.c_uint32),
                    ("kconfig", ctypes.c_char_p), ("btf_custom_path", ctypes.c_char_p)]

    lib = ctypes.CDLL("libbpf.so.1")
    lib.bpf_object__open_mem.restype = ctypes.c_void_p
    lib.bpf_object__open_mem.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    lib.bpf_object__load.argtypes = [ctypes.c_void_p]
    lib.bpf_object__close.argtypes = [ctypes.c_void_p]
    lib.libbpf_get_error.argtypes = [ctypes.c_void_p]
    lib.libbpf_get_error.restype = ctypes.c_long
    lib.libbpf_set_print.argtypes = [ctypes.c_void_p]
    lib.libbpf_set_print(None)
    obj_bytes = KTYPES_OBJECT.read_bytes()

    def load(path: str) -> str:
        opts = OpenOpts(sz=ctypes.sizeof(OpenOpts), object_name=b"core_read", btf_custom_path=path.encode())
        buf = ctypes.create_string_buffer(obj_bytes, len(obj_bytes))
        obj = lib.bpf_object__open_mem(buf, len(obj_bytes), ctypes.byref(opts))
        if lib.libbpf_get_error(obj):
            return "fail open"
        try:
            err = lib.bpf_object__load(obj)
        finally:
            lib.bpf_object__close(obj)
        return f"fail {err}" if err else "ok"

    return load


def exercise_btf(data: bytes) -> str:
    """Everything a user can do with parsed BTF; raises on a bug."""
    from ebpf import btf

    try:
        spec = btf.Spec.from_raw(data)
    except btf.BTFError:
        # Refused.  The lazy path (used for the kernel's own BTF) must fail
        # cleanly too when it fails.
        try:
            lazy = btf.Spec.from_raw(data, validate=False)
            _touch(lazy, decode=False)
        except btf.BTFError:
            pass
        return "rej"
    try:
        _touch(spec, decode=True)
    except btf.BTFError as e:
        # Typed, but BTF the validator accepted should be usable: a walker
        # that refuses it points at a gap between the two.
        return "odd " + _line(e)
    return "ok"


# Walks and codecs cost far more than the rest; an input exercises this many
# of its types with them (spread over the spec), every type with the rest.
_DEEP_PER_INPUT = 48


def _touch(spec, decode: bool) -> None:
    from ebpf import btf

    spec.format_c()
    step = max(1, len(spec) // _DEEP_PER_INPUT)
    for n, t in enumerate(spec):
        repr(t)
        str(t)
        try:
            size = btf.sizeof(t)
            btf.alignof(t)
        except TypeError:  # documented: kinds without a size or alignment
            size = -1
        if n % step:
            continue
        for _ in btf.walk(t):
            pass
        if size < 0:
            continue
        try:
            codec = btf.codec_for(t)
        except TypeError:  # documented: no codec for this kind
            continue
        if decode and size <= 1 << 16:
            value = codec.decode(bytes(size))
            codec.encode(value)


def child_main(mode: str) -> None:
    """Handle each length-prefixed input from stdin; one result line per
    input: ``status peak_rss_kb detail``."""
    import resource
    import tempfile

    resource.setrlimit(resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE))
    sys.path.insert(0, str(ROOT))
    import logging

    logging.disable(logging.CRITICAL)
    raw_open = _raw_libbpf() if mode == "raw" else None
    raw_core_load = _raw_core_load() if mode == "ktypes-raw" else None
    import ebpf
    from ebpf.errors import EBPFError, InvalidObjectError

    ktypes_spec = None
    tmpdir = None
    if mode in ("ktypes", "ktypes-raw"):
        ktypes_spec = ebpf.load_collection_spec(KTYPES_OBJECT)
        tmpdir = tempfile.mkdtemp(prefix="ebpf-fuzz-")

    def one(data: bytes) -> str:
        if mode == "raw":
            assert raw_open is not None
            return raw_open(data)
        if mode == "lib":
            ebpf.load_collection_spec(data)
            return "ok"
        if mode == "btf":
            return exercise_btf(data)
        assert tmpdir is not None and ktypes_spec is not None
        path = os.path.join(tmpdir, "kernel_types")
        with open(path, "wb") as f:
            f.write(data)
        if mode == "ktypes-raw":
            assert raw_core_load is not None
            return raw_core_load(path)
        try:
            coll = ebpf.Collection(ktypes_spec, kernel_types=path)
        except InvalidObjectError as e:  # the validator's refusal (BTFError is one)
            return "rej " + _line(e)
        except EBPFError as e:
            return "fail " + _line(e)
        coll.close()
        return "ok"

    stdin = sys.stdin.buffer
    stdout = sys.stdout
    try:
        while True:
            head = _read_exact(stdin, 4)
            if head is None:
                return
            (n,) = struct.unpack("<I", head)
            data = _read_exact(stdin, n)
            if data is None:
                return
            try:
                result = one(data)
            except EBPFError as e:
                result = "rej " + _line(e)
            except BaseException as e:  # any other type is the bug we hunt
                result = "bad " + _line(e)
            status, _, detail = result.partition(" ")
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            stdout.write(f"{status} {rss} {detail}\n")
            stdout.flush()
    finally:
        if tmpdir is not None:
            for name in os.listdir(tmpdir):
                os.unlink(os.path.join(tmpdir, name))
            os.rmdir(tmpdir)


def _line(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".replace("\n", " ")[:300]


# -- parent side -----------------------------------------------------------


class Child:
    """One worker process, restarted after it dies."""

    def __init__(self, mode: str) -> None:
        if mode == "elf":
            mode = "lib"
        self.mode = mode
        self.proc: Optional[subprocess.Popen] = None
        self.peak_rss_kb = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", self.mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def run(self, data: bytes, timeout: Optional[float] = None) -> Tuple[str, str]:
        """(status, detail): status is ok/fail/rej/bad/crash/hang/slow."""
        status, detail = self._once(data, TIMEOUT if timeout is None else timeout)
        if status == "hang" and timeout is None and not self.mode.endswith("raw"):
            # Busy machine or a real hang: once more, alone, with time to spare.
            t0 = time.monotonic()
            status, detail = self._once(data, CONFIRM_TIMEOUT)
            took = time.monotonic() - t0
            if status != "hang":
                return "slow", f"{took:.1f}s on retry ({status} {detail})"
        return status, detail

    def _once(self, data: bytes, timeout: float) -> Tuple[str, str]:
        if self.proc is None:
            self.start()
        proc = self.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(struct.pack("<I", len(data)) + data)
            proc.stdin.flush()
        except BrokenPipeError:
            return self._dead()
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            proc.kill()
            proc.wait()
            self.proc = None
            return "hang", f"no answer in {timeout:.0f}s"
        line = proc.stdout.readline().decode(errors="replace").rstrip("\n")
        if not line:
            return self._dead()
        status, _, rest = line.partition(" ")
        rss, _, detail = rest.partition(" ")
        self.peak_rss_kb = max(self.peak_rss_kb, int(rss or 0))
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
    peak_rss_kb: int = 0
    slowest: float = 0.0


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
    if mode == "elf":
        mode = "lib"
    seeds = seeds_for(mode)
    if not seeds:
        raise SystemExit(f"no seeds for mode {mode} (run scripts/build_fixtures.sh)")
    # Each mode draws its own inputs: the same (seed, i) in two modes must
    # not be the same mutation of differently ordered seed lists.
    run_seed = seed if mode in ("raw", "lib") else f"{mode}:{seed}"
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
                name, data = make_input(seeds, run_seed, i)
                t_in = time.monotonic()
                status, detail = child.run(data)
                took = time.monotonic() - t_in
                with lock:
                    stats.inputs += 1
                    stats.counts[status] = stats.counts.get(status, 0) + 1
                    stats.peak_rss_kb = max(stats.peak_rss_kb, child.peak_rss_kb)
                    stats.slowest = max(stats.slowest, took)
                    if status in ("crash", "hang", "bad", "odd"):
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
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=MODES + ("elf", "both"), default="lib")
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
        print(f"mode {mode}: {stats.inputs} inputs (#{args.start}..) in {took:.1f}s "
              f"({stats.inputs / took:.0f}/s), counts {dict(sorted(c.items()))}")
        print(f"  crashes {c.get('crash', 0)}, hangs over {TIMEOUT:.0f}s {c.get('hang', 0)}, "
              f"untyped exceptions {c.get('bad', 0)}, odd {c.get('odd', 0)}, slow {c.get('slow', 0)}, "
              f"slowest input {stats.slowest:.2f}s, peak child RSS {stats.peak_rss_kb / 1024:.0f} MiB")
        if mode not in ("raw", "ktypes-raw"):
            bad += crashes + c.get("bad", 0)
        for i, name, status, detail in stats.failures[:50]:
            print(f"  #{i} ({name}): {status} {detail}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
