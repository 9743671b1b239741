"""Ring buffer and perf buffer readers: this library against a libbpf C floor.

Run as root from the repository root::

    python3 bench/ringbuf.py [--quick] [--rounds N]

Events are produced in the kernel: the fixtures' producer programs
(``fixtures/ringbuf.bpf.c``, a syscall program, and ``fixtures/perfbuf.bpf.c``,
a raw tracepoint program run on CPU 0) loop ``bpf_ringbuf_output`` /
``bpf_perf_event_output`` with ``bpf_loop``, driven by BPF_PROG_TEST_RUN.
Each event is 16 bytes (a sequence number and a value).

The C floor (``bench/_ringbuf_floor.c``, compiled here against -lbpf) loads
the same object with libbpf's bpf_object API and consumes with
``ring_buffer__consume`` / ``perf_buffer__consume``.  For each kind it
prints, in the same run:

* prefilled: the ring is filled first, then consumed; events/s of the
  consuming thread's CPU time (both sides: steadier on a busy machine);
* concurrent: a producer thread emits bursts (waiting for room, so the
  consumer keeps up) while the consumer reads; events/s, and whether any
  event was lost or came out of order (must be none).

Python variants: records by iteration (``for rec in reader``), records by
``read_batch``, raw samples (``read_samples``, no Record objects), records
with a BTF-decoded ``value``, and (ring buffer) libbpf's callback per event
(``backend="libbpf"``).  Each figure is the best of several interleaved
rounds, with its ratio to the C floor.  Targets (from the issue; this script
reports, it never fails): >= 3 M raw records/s and >= 1.5 M decoded
records/s from a pre-filled ring, decoded records at >= 0.6x the rate of
undecoded ones in the same run, nothing lost or reordered concurrently.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# --tree DIR: measure the ebpf package of another checkout (an export of
# main, say, for "before" figures); the fixtures and floor stay this tree's.
TREE = os.path.abspath(sys.argv[sys.argv.index("--tree") + 1]) if "--tree" in sys.argv else ROOT
sys.path.insert(0, TREE)

import ebpf  # noqa: E402
from ebpf import perf, ringbuf  # noqa: E402

MAGIC = 0x9E3779B97F4A7C15
TARGET_RAW = 3e6
TARGET_DECODED = 1.5e6
TARGET_DECODED_RATIO = 0.6  # issue #12: decoded records at >= 0.6x the rate of undecoded ones
RB_RECORD = 24  # 8-byte header + 16 bytes
PERF_RECORD = 32  # 8-byte header + 4-byte size + 16 bytes + 4 padding
BURST = 4096


def build(tmp: str) -> tuple:
    floor = os.path.join(tmp, "floor")
    subprocess.run(["cc", "-O2", "-o", floor, os.path.join(ROOT, "bench", "_ringbuf_floor.c"), "-lbpf", "-lpthread"],
                   check=True)
    arch_inc = "/usr/include/" + subprocess.run(["gcc", "-dumpmachine"], capture_output=True, text=True).stdout.strip()
    objs = []
    for name in ("ringbuf", "perfbuf"):
        obj = os.path.join(tmp, f"{name}.o")
        subprocess.run(
            ["clang", "-O2", "-g", "-target", "bpf", f"-I{arch_inc}", "-I" + os.path.join(ROOT, "fixtures"),
             "-c", os.path.join(ROOT, "fixtures", f"{name}.bpf.c"), "-o", obj],
            check=True,
        )
        objs.append(obj)
    return floor, objs[0], objs[1]


def run_floor(floor: str, kind: str, obj: str, ring: int, n: int) -> dict:
    out = subprocess.run([floor, kind, obj, str(ring), str(n), "3", str(BURST)],
                         capture_output=True, text=True, check=True).stdout
    return {k: float(v) for k, v in (line.split() for line in out.splitlines())}


class Source:
    """A loaded fixture whose producer program emits ``count`` events."""

    def __init__(self, obj: str, ring: int, kind: str) -> None:
        self.spec = ebpf.load_collection_spec(obj)
        if kind == "ringbuf":
            self.spec.maps["events"].max_entries = ring
        self.coll = ebpf.Collection(self.spec)
        self.prog = self.coll.programs["produce"]
        self.vars = self.coll.variables
        self.kind = kind

    def produce(self, count: int, start: int = 0) -> None:
        self.vars["count"].set(count)
        self.vars["start"].set(start)
        if self.kind == "perf":
            self.prog.run(flags=1, cpu=0)  # BPF_F_TEST_RUN_ON_CPU
        else:
            self.prog.run()

    def dropped(self) -> int:
        return self.vars["failed" if self.kind == "perf" else "dropped"].get()


# -- the Python measurements: each returns events/s for one pre-filled ring ------


def by_iteration(rd, n: int) -> float:
    t0 = time.thread_time()
    for _ in itertools.islice(rd, n):
        pass
    return n / (time.thread_time() - t0)


def by_batches(rd, n: int) -> float:
    got = 0
    t0 = time.thread_time()
    while got < n:
        got += len(rd.read_batch(4096))
    return n / (time.thread_time() - t0)


def by_samples(rd, n: int) -> float:
    got = 0
    t0 = time.thread_time()
    while got < n:
        got += len(rd.read_samples(65536))
    return n / (time.thread_time() - t0)


def decoded(rd, n: int) -> float:
    t0 = time.thread_time()
    for rec in itertools.islice(rd, n):
        _ = rec.value  # decoded as the record is built; touch it all the same
    return n / (time.thread_time() - t0)


def check_first(rd, src: Source, n: int) -> None:
    """Sanity: the reader sees exactly what was produced."""
    src.produce(n)
    got = rd.read_batch(n)
    assert len(got) == n and [int.from_bytes(r.raw_sample[:8], "little") for r in got] == list(range(n))


def concurrent(src: Source, rd, total: int, capacity_bytes: int, record: int) -> tuple:
    """Producer thread in bursts (waiting for room) against a consumer
    iterating records; returns (events/s, lost, out_of_order)."""
    dropped0 = src.dropped()
    errors: list = []

    def producer() -> None:
        # Off CPU 0, where the perf producer's program runs, as the C floor's
        # producer (see off_cpu0() in _ringbuf_floor.c): the figure is then
        # the reader's, not the scheduler's placement.
        others = set(range(1, os.cpu_count() or 1)) & os.sched_getaffinity(0)
        if others:
            os.sched_setaffinity(0, others)
        try:
            for k in range(total // BURST):
                # perf keeps one byte of its ring free: room for one more record
                while rd.available_bytes() > capacity_bytes - (BURST + 1) * record:
                    time.sleep(0)
                src.produce(BURST, k * BURST)
        except BaseException as exc:
            errors.append(exc)

    samples = []
    append = samples.append
    t = threading.Thread(target=producer)
    t0 = time.perf_counter()
    t.start()
    for rec in itertools.islice(rd, total):
        append(rec.raw_sample)
    dt = time.perf_counter() - t0
    t.join()
    if errors:
        raise errors[0]
    seqs = [int.from_bytes(s[:8], "little") for s in samples]
    bad = sum(1 for i, s in enumerate(seqs) if s != i) + (total - len(seqs))
    return total / dt, src.dropped() - dropped0, bad


def fmt(rate: float) -> str:
    return f"{rate / 1e6:7.2f} M/s"


def report(title: str, floor: dict, rows: list, conc: tuple) -> None:
    print(f"\n{title}")
    base = floor["prefilled"]
    print(f"  {'C floor, pre-filled ring':44s} {fmt(base)}   1.000")
    for name, rate, target in rows:
        note = ""
        if target:
            note = f"   target >= {target / 1e6:.1f} M/s: {'met' if rate >= target else 'NOT met'}"
        print(f"  {name:44s} {fmt(rate)}   {rate / base:.3f}{note}")
    rates = {name: rate for name, rate, _ in rows}
    plain, dec = rates.get("records (for rec in reader)"), rates.get("decoded records (value_type=event)")
    if plain and dec:
        r = dec / plain
        print(f"  {'decoded / undecoded records, same run':44s} {r:9.2f}x    target >= {TARGET_DECODED_RATIO}: "
              f"{'met' if r >= TARGET_DECODED_RATIO else 'NOT met'}")
    cbase = floor["concurrent"]
    ok = "ok" if floor["lost"] == 0 and floor["disorder"] == 0 else "LOST/REORDERED"
    print(f"  {'C floor, concurrent producer/consumer':44s} {fmt(cbase)}   1.000   "
          f"lost {floor['lost']:.0f}, out of order {floor['disorder']:.0f}: {ok}")
    rate, lost, bad = conc
    ok = "ok" if lost == 0 and bad == 0 else "LOST/REORDERED"
    print(f"  {'ebpf, concurrent (records by iteration)':44s} {fmt(rate)}   {rate / cbase:.3f}   "
          f"lost {lost}, out of order {bad}: {ok}")


def bench_ringbuf(floor_bin: str, obj: str, ring: int, rounds: int) -> None:
    n = ring // RB_RECORD - 64
    src = Source(obj, ring, "ringbuf")
    event_t = src.spec.types.type_by_name("event")
    readers = {
        "records (for rec in reader)": (ringbuf.Reader(src.coll.maps["events"]), by_iteration, TARGET_RAW),
        "records (read_batch(4096))": (None, by_batches, 0),
        "raw samples (read_samples)": (None, by_samples, 0),
        "decoded records (value_type=event)":
            (ringbuf.Reader(src.coll.maps["events"], value_type=event_t), decoded, TARGET_DECODED),
        "records, libbpf callback per event":
            (ringbuf.Reader(src.coll.maps["events"], backend="libbpf"), by_iteration, 0),
    }
    plain = readers["records (for rec in reader)"][0]
    best: dict = dict.fromkeys(readers, 0.0)
    fl: dict = {}
    check_first(plain, src, 1000)
    for _ in range(rounds):
        f = run_floor(floor_bin, "ringbuf", obj, ring, n)
        fl = {k: max(fl.get(k, 0), v) for k, v in f.items()}
        for name, (rd, fn, _) in readers.items():
            rd = rd or plain
            src.produce(n)
            assert src.dropped() == 0
            gc.collect()
            best[name] = max(best[name], fn(rd, n))
    conc = concurrent(src, plain, n * 4 // BURST * BURST, ring, RB_RECORD)
    for rd, _, _ in readers.values():
        if rd is not None:
            rd.close()
    src.coll.close()
    report(f"BPF ring buffer: {n} events of 16 bytes per pre-filled run ({ring >> 20} MiB ring), best of {rounds}",
           fl, [(k, best[k], readers[k][2]) for k in readers], conc)


def bench_perf(floor_bin: str, obj: str, ring: int, rounds: int) -> None:
    n = ring // PERF_RECORD - 64
    src = Source(obj, ring, "perf")
    event_t = src.spec.types.type_by_name("event")
    pmap = src.coll.maps["perf_events"]
    plain = perf.Reader(pmap, per_cpu_buffer=ring)
    variants = {
        "records (for rec in reader)": (by_iteration, TARGET_RAW),
        "records (read_batch(4096))": (by_batches, 0),
        "raw samples (read_samples)": (by_samples, 0),
        "decoded records (value_type=event)": (decoded, TARGET_DECODED),
    }
    best: dict = dict.fromkeys(variants, 0.0)
    fl: dict = {}
    check_first(plain, src, 1000)
    plain.close()
    for _ in range(rounds):
        f = run_floor(floor_bin, "perf", obj, ring, n)
        fl = {k: max(fl.get(k, 0), v) for k, v in f.items()}
        for name, (fn, _) in variants.items():
            # One reader at a time: the map has one slot per CPU.
            vt = event_t if fn is decoded else None
            with perf.Reader(pmap, per_cpu_buffer=ring, value_type=vt) as rd:
                src.produce(n)
                assert src.dropped() == 0, "perf ring too small for the run"
                gc.collect()
                best[name] = max(best[name], fn(rd, n))
    with perf.Reader(pmap, per_cpu_buffer=ring) as rd:
        conc = concurrent(src, rd, n * 4 // BURST * BURST, rd.per_cpu_buffer, PERF_RECORD)
    src.coll.close()
    report(f"perf event buffer: {n} events of 16 bytes per pre-filled run ({ring >> 20} MiB per CPU), best of {rounds}",
           fl, [(k, best[k], variants[k][1]) for k in variants], conc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 MiB rings, 2 rounds")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--only", choices=("ringbuf", "perf"), help="measure one kind only")
    ap.add_argument("--tree", default=ROOT, help="the checkout whose ebpf package to measure (default: this one)")
    args = ap.parse_args()
    ring = (4 if args.quick else 32) << 20
    rounds = args.rounds or (2 if args.quick else 5)
    if os.geteuid() != 0:
        sys.exit("run as root (BPF programs and perf events)")
    ebpf.rlimit.remove_memlock()
    with tempfile.TemporaryDirectory() as tmp:
        floor_bin, rb_obj, perf_obj = build(tmp)
        print(f"libbpf {ebpf._libbpf.version_string()}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
        if args.only != "perf":
            bench_ringbuf(floor_bin, rb_obj, ring, rounds)
        if args.only != "ringbuf":
            bench_perf(floor_bin, perf_obj, ring, rounds)


if __name__ == "__main__":
    main()
