"""Map element operations, bulk writes and iteration: this library against its floors.

Run as root from the repository root::

    python3 bench/maps.py [--quick] [--tree DIR]

It compiles ``bench/_cfloor.c`` (the same operations straight through
libbpf) and a tiny BPF object with u32 -> u64 array and hash maps (with BTF,
so that ints come back as ints); maps without BTF (a plain ``MapSpec``)
are measured too.  Two floors are measured in the same run, interleaved
with the Python runs (every figure is the best of several short runs, which
keeps the ratios meaningful on a busy machine; per-operation loops and bulk
writes are timed in thread CPU time on both sides, whole-map iteration in
wall time):

* the C floor: libbpf called from C;
* the bare ctypes floor: one ctypes call per operation with the key as
  ready bytes and a fresh value buffer, no checks, through the same
  function handle the library uses -- the least any ctypes binding can
  cost.  The loop overhead of a plain Python ``for`` is in both.

Per-operation rows cover lookup/update (array and hash maps) and delete
(hash maps: the kernel cannot delete array elements), with int, bytes and
ctypes keys (values of the same kind), on BTF maps and on plain maps.
Bulk rows write 200,000 entries with ``batch_update`` and
``update(mapping)`` against a per-call ``m[k] = v`` loop.  Iteration
rows read a 1,000,000-entry hash map.  The in-flight guard (the token an
operation holds so that a concurrent ``close()`` cannot release the fd
under it, see ``ebpf/_fd.py``) is measured against the same lookup without
it.

``--tree DIR`` imports ``ebpf`` from another checkout (e.g. an export of
``main``) to get the "before" figures; what that tree lacks prints n/a.

Targets (issue #12; this script only reports, '!' marks a miss):
per-op <= 1.15x the bare ctypes call; iteration >= 0.8x the throughput of
C's best ``bpf_map_lookup_batch`` loop; bulk writes >= 3x the per-call
loop; ``import ebpf`` <= 20 ms (``-X importtime``).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMALL = 1024  # entries of the maps used for per-op numbers; keys cycle 0..1023
ORDER = sys.byteorder

FIXTURE = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, %(small)d);
         __type(key, __u32); __type(value, __u64); } arr SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, %(small)d);
         __type(key, __u32); __type(value, __u64); } hsh SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, %(chunk)d);
         __type(key, __u32); __type(value, __u64); } del SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, %(bulk)d);
         __type(key, __u32); __type(value, __u64); } bulk SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, %(big)d);
         __type(key, __u32); __type(value, __u64); } big SEC(".maps");

char LICENSE[] SEC("license") = "GPL";
"""

TARGET_OP = 1.15
TARGET_ITER = 0.8
TARGET_BULK = 3.0
TARGET_IMPORT_MS = 20.0


def build(tmp: str, small: int, chunk: int, bulk: int, big: int) -> Tuple[str, str]:
    cfloor = os.path.join(tmp, "cfloor")
    subprocess.run(["cc", "-O2", "-o", cfloor, os.path.join(ROOT, "bench", "_cfloor.c"), "-lbpf"], check=True)
    src = os.path.join(tmp, "fixture.bpf.c")
    obj = os.path.join(tmp, "fixture.bpf.o")
    with open(src, "w") as f:
        f.write(FIXTURE % {"small": small, "chunk": chunk, "bulk": bulk, "big": big})
    arch_inc = "/usr/include/" + subprocess.run(["gcc", "-dumpmachine"], capture_output=True, text=True).stdout.strip()
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", f"-I{arch_inc}", "-c", src, "-o", obj], check=True)
    return cfloor, obj


class Floor:
    """The C program, driven line by line so C and Python runs interleave."""

    def __init__(self, path: str) -> None:
        self.proc = subprocess.Popen([path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __call__(self, op: str, n: int) -> float:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{op} {n}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"C floor died on {op} {n}")
        return float(line) if line.strip() != "ok" else 0.0

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait()


def _per_op(fn: Callable[..., Any], args: List[Any], star: bool) -> float:
    # Thread CPU time, as the C floor's per-op loops (see _cfloor.c).
    t0 = time.thread_time_ns()
    if star:
        for a in args:
            fn(*a)
    else:
        for a in args:
            fn(a)
    return (time.thread_time_ns() - t0) / len(args)


# -- per-operation jobs ---------------------------------------------------------

KEY_KINDS = ("int", "bytes", "ctypes")


def _keys(kind: str, n: int, modulo: int) -> List[Any]:
    if kind == "int":
        return [i % modulo for i in range(n)]
    if kind == "bytes":
        return [(i % modulo).to_bytes(4, ORDER) for i in range(n)]
    return [ctypes.c_uint32(i % modulo) for i in range(n)]


def _values(kind: str, n: int) -> List[Any]:
    if kind == "int":
        return list(range(n))
    if kind == "bytes":
        return [i.to_bytes(8, ORDER) for i in range(n)]
    return [ctypes.c_uint64(i) for i in range(n)]


class Job:
    """One measured loop: ``run()`` returns ns per operation."""

    def __init__(self, fn: Callable[..., Any], args: List[Any], star: bool = False,
                 before: Optional[Callable[[], None]] = None) -> None:
        self.fn, self.args, self.star, self.before = fn, args, star, before

    def run(self) -> float:
        if self.before is not None:
            self.before()
        return _per_op(self.fn, self.args, self.star)


def op_jobs(maps: Dict[str, Any], chunk: int) -> Dict[str, Job]:
    """name -> Job for one map flavour (``arr``, ``hsh``, ``del`` maps)."""
    jobs: Dict[str, Job] = {}
    for kind in KEY_KINDS:
        keys = _keys(kind, chunk, SMALL)
        pairs = list(zip(keys, _values(kind, chunk)))
        for mk, m in (("array", maps["arr"]), ("hash", maps["hsh"])):
            for k, v in pairs[:SMALL]:
                m.update(k, v)
            jobs[f"{mk} lookup {kind}"] = Job(m.lookup, keys)
            jobs[f"{mk} update {kind}"] = Job(m.update, pairs, star=True)
            if kind == "int":
                jobs[f"{mk} m[k] {kind}"] = Job(m.__getitem__, keys)
                jobs[f"{mk} m[k] = v {kind}"] = Job(m.__setitem__, pairs, star=True)
        d = maps["del"]
        dkeys = _keys(kind, chunk, chunk)
        fill_k, fill_v = list(range(chunk)), [i.to_bytes(8, ORDER) for i in range(chunk)]
        raw_k = [i.to_bytes(4, ORDER) for i in fill_k]

        def refill(d: Any = d, fill_k: Any = raw_k, fill_v: Any = fill_v) -> None:
            d.batch_update(fill_k, fill_v)

        jobs[f"hash delete {kind}"] = Job(d.delete, dkeys, before=refill)
    return jobs


def bare_jobs(maps: Dict[str, Any], chunk: int) -> Dict[str, Job]:
    """The same operations as one bare ctypes call each (bytes in, a fresh
    buffer out, no checks): the least any ctypes binding can cost."""
    from ebpf import _libbpf

    look, upd, dele = (_libbpf.unchecked(n)
                       for n in ("bpf_map_lookup_elem", "bpf_map_update_elem", "bpf_map_delete_elem"))
    zero = _libbpf.u64(0)
    vb_t = ctypes.c_char * 8
    keys = _keys("bytes", chunk, SMALL)
    pairs = list(zip(keys, _values("bytes", chunk)))
    jobs: Dict[str, Job] = {}
    for mk, m in (("array", maps["arr"]), ("hash", maps["hsh"])):
        fd = m.fd

        def lookup(k: bytes, fd: int = fd) -> int:
            return look(fd, k, vb_t())

        def update(k: bytes, v: bytes, fd: int = fd) -> int:
            return upd(fd, k, v, zero)

        jobs[f"{mk} lookup"] = Job(lookup, keys)
        jobs[f"{mk} update"] = Job(update, pairs, star=True)
    d = maps["del"]
    dfd = d.fd
    dkeys = _keys("bytes", chunk, chunk)
    fill_v = [i.to_bytes(8, ORDER) for i in range(chunk)]

    def delete(k: bytes, fd: int = dfd) -> int:
        return dele(fd, k)

    jobs["hash delete"] = Job(delete, dkeys, before=lambda: d.batch_update(dkeys, fill_v))
    return jobs


def unguarded_lookup(m: Any) -> Optional[Callable[[Any], Any]]:
    """``m.lookup`` for int keys as it is minus the in-flight guard (a fresh
    buffer per call instead of a token, no settle check): what the guard
    costs is the difference.  None for trees without the guard."""
    if not hasattr(m, "_idle") or not hasattr(m, "_pack_key"):
        return None
    from ebpf import maps as M

    pack, vbuf_t, look = m._pack_key, m._vbuf_t, M._lookup_elem

    def lookup(key: Any = None, flags: int = 0, self: Any = m) -> Any:
        kt = type(key)
        if kt is int:
            kb = pack(key)
        elif kt is bytes and len(key) == self._key_len:
            kb = key
        else:
            kb = self._key_slow(key)
        vb = vbuf_t()
        ret = look(self._fd, kb, vb)
        if not ret:
            out = self._out
            if not out:
                return vb[0]
            if out == 1:
                return vb.raw
            return self._layout.decode_value(vb.raw)
        raise self._error(-ret, "lookup", key)

    return lookup


def unguarded_update(m: Any) -> Optional[Callable[..., Any]]:
    """``m.update`` for int keys and values minus the in-flight guard (no
    token, no settle check); None for trees without the guard."""
    if not hasattr(m, "_idle") or not hasattr(m, "_pack_key"):
        return None
    from ebpf import maps as M

    pk, pv, upd, zero = m._pack_key, m._pack_value, M._update_elem, M._U64_ZERO

    def update(key: Any, value: Any, flags: int = 0, self: Any = m) -> None:
        kt = type(key)
        if kt is int:
            kb = pk(key)
        elif kt is bytes and len(key) == self._key_len:
            kb = key
        else:
            kb = self._key_slow(key)
        vt = type(value)
        if vt is int:
            vb = pv(value)
        elif vt is bytes and len(value) == self._value_len:
            vb = value
        else:
            vb = self._value_slow(value)
        ret = upd(self._fd, kb, vb, M._u64(flags) if flags else zero)
        if ret:
            raise self._error(-ret, "update", key)

    return update


def bench_ops(
    floor: Floor, flavours: Dict[str, Dict[str, Any]], chunk: int, rounds: int
) -> Tuple[Dict[str, float], Dict[str, float], Dict[str, Dict[str, float]], Dict[str, float]]:
    c_ops = ("array_lookup", "array_update", "hash_lookup", "hash_update", "hash_delete")
    c = {op: float("inf") for op in c_ops}
    bare = bare_jobs(flavours["plain"], chunk)
    bare_best = {k: float("inf") for k in bare}
    jobs = {f: op_jobs(ms, chunk) for f, ms in flavours.items()}
    ours = {f: {k: float("inf") for k in j} for f, j in jobs.items()}
    guard_keys = _keys("int", chunk, SMALL)
    guard_pairs = list(zip(guard_keys, _values("int", chunk)))
    guard: Dict[str, float] = {}
    plain_arr = flavours["plain"]["arr"]
    ung = unguarded_lookup(plain_arr)
    ungu = unguarded_update(plain_arr)
    if ung is not None and ungu is not None:
        guard = {k: float("inf") for k in ("lookup", "lookup_bare", "update", "update_bare")}
    for _ in range(rounds):
        for op in c_ops:
            c[op] = min(c[op], floor(op, chunk))
        for name, job in bare.items():
            bare_best[name] = min(bare_best[name], job.run())
        for f, fj in jobs.items():
            for name, job in fj.items():
                try:
                    ours[f][name] = min(ours[f][name], job.run())
                except Exception:
                    ours[f][name] = float("nan")  # the tree cannot do this
        if guard:
            guard["lookup"] = min(guard["lookup"], _per_op(plain_arr.lookup, guard_keys, False))
            guard["lookup_bare"] = min(guard["lookup_bare"], _per_op(ung, guard_keys, False))
            guard["update"] = min(guard["update"], _per_op(plain_arr.update, guard_pairs, True))
            guard["update_bare"] = min(guard["update_bare"], _per_op(ungu, guard_pairs, True))
    return c, bare_best, ours, guard


# -- bulk writes ----------------------------------------------------------------


def bench_bulk(flavours: Dict[str, Any], n: int, rounds: int) -> Dict[str, Dict[str, float]]:
    out: Dict[str, Dict[str, float]] = {}
    for f, m in flavours.items():
        keys = list(range(n))
        values = [i * 3 for i in range(n)] if f == "btf" else [(i * 3).to_bytes(8, ORDER) for i in range(n)]
        mapping = dict(zip(keys, values))
        r = {"loop": float("inf"), "batch_update": float("inf"), "update(mapping)": float("inf")}
        for _ in range(rounds):
            _clear(m)
            t0 = time.thread_time_ns()
            for k, v in zip(keys, values):
                m[k] = v
            r["loop"] = min(r["loop"], time.thread_time_ns() - t0)
            _check(m, n, f)
            _clear(m)
            t0 = time.thread_time_ns()
            m.batch_update(keys, values)
            r["batch_update"] = min(r["batch_update"], time.thread_time_ns() - t0)
            _check(m, n, f)
            _clear(m)
            try:
                t0 = time.thread_time_ns()
                m.update(mapping)
                r["update(mapping)"] = min(r["update(mapping)"], time.thread_time_ns() - t0)
                _check(m, n, f)
            except TypeError:
                r["update(mapping)"] = float("nan")
        out[f] = r
    return out


def _clear(m: Any) -> None:
    ks = list(m.keys())
    if ks:
        m.batch_delete(ks)


def _check(m: Any, n: int, flavour: str) -> None:
    got = m.lookup(n - 1)
    want = (n - 1) * 3
    assert (got if flavour == "btf" else int.from_bytes(got, ORDER)) == want, got


# -- iteration ------------------------------------------------------------------


def fill_big(m: Any, n: int) -> None:
    chunk = 65536
    for base in range(0, n, chunk):
        ks = [(base + i).to_bytes(4, ORDER) for i in range(min(chunk, n - base))]
        vs = [((base + i) * 3).to_bytes(8, ORDER) for i in range(min(chunk, n - base))]
        m.batch_update(ks, vs)


def _iter_list(m: Any, n: int, as_bytes: bool) -> float:
    t0 = time.perf_counter_ns()
    items = list(m.items())
    ns = time.perf_counter_ns() - t0
    assert len(items) == n, len(items)
    k, v = items[-1]
    if as_bytes:
        assert int.from_bytes(k, ORDER) * 3 == int.from_bytes(v, ORDER)
    else:
        assert k * 3 == v, (k, v)
    return ns


def _iter_for(m: Any, n: int) -> float:
    t0 = time.perf_counter_ns()
    count = 0
    # Unpacking each pair is part of what a for-loop over items() costs.
    for _k, _v in m.items():
        count += 1
    ns = time.perf_counter_ns() - t0
    assert count == n
    return ns


BATCH_SIZES = (4096, 16384, 65536, 262144)


def bench_iter(
    floor: Floor, flavours: Dict[str, Any], n: int, rounds: int
) -> Tuple[Dict[int, float], Dict[str, Dict[str, float]]]:
    floor("big", n)
    for m in flavours.values():
        fill_big(m, n)
    c = {b: float("inf") for b in BATCH_SIZES}
    ours = {v: {"iter_list": float("inf"), "iter_for": float("inf")} for v in flavours}
    for _ in range(rounds):
        for b in BATCH_SIZES:
            c[b] = min(c[b], floor("iter", b))
        for vname, m in flavours.items():
            r = ours[vname]
            r["iter_list"] = min(r["iter_list"], _iter_list(m, n, vname == "plain"))
            r["iter_for"] = min(r["iter_for"], _iter_for(m, n))
    return c, ours


def import_time(runs: int, tree: str) -> Tuple[float, float]:
    """Median wall time of ``import ebpf, ebpf.link`` in a fresh interpreter,
    minus ``pass``; and the median cumulative figure from ``-X importtime``."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    # From bytecode, as users import it (the first run writes __pycache__).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    code = "import ebpf, ebpf.link"

    def wall(c: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", c], cwd=tree, env=env, check=True)
        return time.perf_counter() - t0

    wall(code)  # warm the page cache and __pycache__
    base = statistics.median(wall("pass") for _ in range(runs))
    imp = statistics.median(wall(code) for _ in range(runs))
    cum = []
    for _ in range(runs):
        err = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=tree, env=env,
                             check=True, capture_output=True, text=True).stderr
        total = 0
        for line in err.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) == 3 and parts[2] in ("ebpf", "ebpf.link"):
                total += int(parts[1])
        cum.append(total / 1000.0)
    return (imp - base) * 1000.0, statistics.median(cum) if cum else float("nan")


def _mark(ok: bool) -> str:
    return "  " if ok else " !"


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer ops and smaller maps (smoke test)")
    ap.add_argument("--tree", default=ROOT, help="the checkout whose ebpf package to measure (default: this one)")
    args = ap.parse_args()
    chunk, rounds, bulk, big, iter_rounds = (
        (5_000, 3, 20_000, 100_000, 2) if args.quick else (20_000, 10, 200_000, 1_000_000, 3))
    tree = os.path.abspath(args.tree)
    sys.path.insert(0, tree)
    import ebpf

    if os.geteuid() != 0:
        print("bench/maps.py needs root (map creation)", file=sys.stderr)
        return 0
    if not os.path.ismount("/sys/fs/bpf"):
        subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], check=False)
    try:  # kernels >= 5.11 account map memory to the cgroup; older ones need this
        ebpf.rlimit.remove_memlock()
    except Exception:
        pass

    tmp = tempfile.mkdtemp(prefix="ebpf-bench-")
    try:
        cfloor, obj = build(tmp, SMALL, chunk, bulk, big)
        t_start = time.time()
        floor = Floor(cfloor)
        spec = ebpf.load_collection_spec(obj)

        def plain(name: str, t: Any, n: int) -> Any:
            return ebpf.Map(ebpf.MapSpec(name=name, type=t, key_size=4, value_size=8, max_entries=n))

        H, A = ebpf.MapType.HASH, ebpf.MapType.ARRAY
        with ebpf.Collection(spec) as coll:
            pl = {"arr": plain("b_arr", A, SMALL), "hsh": plain("b_hsh", H, SMALL), "del": plain("b_del", H, chunk),
                  "bulk": plain("b_bulk", H, bulk), "big": plain("b_big", H, big)}
            btf = {k: coll.maps[k] for k in ("arr", "hsh", "del", "bulk", "big")}
            try:
                c_ops, bare, ours, guard = bench_ops(floor, {"btf": btf, "plain": pl}, chunk, rounds)
                bulk_r = bench_bulk({"btf": btf["bulk"], "plain": pl["bulk"]}, bulk, max(2, rounds // 3))
                c_iter, ours_iter = bench_iter(floor, {"btf": btf["big"], "plain": pl["big"]}, big, iter_rounds)
            finally:
                for m in pl.values():
                    m.close()
        floor.close()
        imp_wall, imp_cum = import_time(7, tree)
        elapsed = time.time() - t_start
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"ebpf map benchmark ({'this tree' if tree == ROOT else tree}): best of {rounds} interleaved runs of "
          f"{chunk:,} ops; bulk {bulk:,} entries; big hash map {big:,} entries, best of {iter_rounds}")
    print(f"libbpf {ebpf._libbpf.version_string()}, Python {sys.version.split()[0]}, kernel {os.uname().release}")
    print()
    print(f"{'operation (ns/op)':<28}{'C':>6} {'bare':>6}   "
          f"{'BTF map':>8} {'/bare':>7}   {'plain map':>9} {'/bare':>7}")
    for op in ("lookup", "update", "delete", "m[k]", "m[k] = v"):
        for mk in ("array", "hash"):
            if op == "delete" and mk == "array":
                continue
            base = {"m[k]": "lookup", "m[k] = v": "update"}.get(op, op)
            bname = f"{mk} {base}"
            for kind in KEY_KINDS:
                name = f"{mk} {op} {kind}"
                if name not in ours["btf"]:
                    continue
                cv, bv = c_ops[f"{mk}_{base}"], bare[bname]
                cells = []
                for f in ("btf", "plain"):
                    v = ours[f][name]
                    r = v / bv
                    cells.append(f"{v:8.0f} {r:6.2f}x{_mark(r <= TARGET_OP)}" if v == v else f"{'n/a':>8} {'':>9}")
                print(f"{name:<28}{cv:6.0f} {bv:6.0f}   {cells[0]}  {cells[1]}")
    print("(bare: one ctypes call per op, key bytes ready, fresh buffer, no checks; array elements cannot be deleted)")
    if guard:
        for op in ("lookup", "update"):
            w, wo = guard[op], guard[op + "_bare"]
            print(f"in-flight guard (ebpf/_fd.py), plain array {op}, int keys: {w:.0f} ns with, {wo:.0f} ns without"
                  f" ({(w / wo - 1) * 100:+.1f}%{'; its token is the value buffer' if op == 'lookup' else ''})")
    print()
    print(f"{'bulk write, ' + format(bulk, ',') + ' pairs (ms)':<28}"
          f"{'BTF map':>9} {'loop/x':>7}   {'plain map':>9} {'loop/x':>7}")
    for name in ("loop", "batch_update", "update(mapping)"):
        cells = []
        for f in ("btf", "plain"):
            v, loop = bulk_r[f][name], bulk_r[f]["loop"]
            if v != v:
                cells.append(f"{'n/a':>9} {'':>9}")
                continue
            sp = loop / v
            cells.append(f"{v / 1e6:9.1f} {sp:6.2f}x{_mark(name == 'loop' or sp >= TARGET_BULK)}")
        print(f"{name:<28}{cells[0]}  {cells[1]}")
    print("(loop: for k, v in pairs: m[k] = v; loop/x: how many times faster than the loop)")
    print()
    best_c = min(c_iter.values())
    sizes = ", ".join(f"{k}: {v / 1e6:.0f}" for k, v in c_iter.items())
    print(f"iterate {big:,}-entry hash: C lookup_batch best = {best_c / 1e6:.0f} ms  (per batch size: {sizes})")
    print(f"{'(ms; throughput vs C)':<28}{'BTF map':>9} {'C/ours':>7}   {'plain map':>9} {'C/ours':>7}")
    for name, label in (("iter_list", "list(m.items())"), ("iter_for", "for k, v in m.items()")):
        cells = []
        for f in ("btf", "plain"):
            v = ours_iter[f][name]
            t = best_c / v
            cells.append(f"{v / 1e6:9.0f} {t:6.2f}x{_mark(t >= TARGET_ITER)}")
        print(f"{label:<28}{cells[0]}  {cells[1]}")
    print()
    ok = _mark(imp_cum <= TARGET_IMPORT_MS).strip()
    print(f"import ebpf, ebpf.link: -X importtime cumulative {imp_cum:.1f} ms{(' ' + ok) if ok else ''} "
          f"(wall {imp_wall:.1f} ms, median, minus 'python3 -c pass')")
    print()
    print(f"targets: per-op <= {TARGET_OP}x bare, iteration >= {TARGET_ITER}x C throughput, "
          f"bulk >= {TARGET_BULK}x the loop,"
          f" import <= {TARGET_IMPORT_MS:.0f} ms; '!' marks a miss.  ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
