"""``ebpf btf dump --kernel --format c`` (a vmlinux.h) against bpftool, in one run.

Each round runs both commands as fresh processes writing to /dev/null,
alternating which goes first; the figures are medians of wall time and of
CPU time (user + system, from the children's rusage), so that other load on
the machine counts against both alike.  The target is at most 2x bpftool.
Python runs as an installed package would: with its bytecode cache (kept in
a temporary directory, so the checkout stays clean, and warmed first).
``--python-formatter`` also times ``ebpf.btf.format_c()`` of the kernel's
BTF once (the pure-Python formatter the command does not use).
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

OURS = [sys.executable, "-m", "ebpf", "btf", "dump", "--kernel", "--format", "c"]
BPFTOOL = ["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"]


ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV["PYTHONPYCACHEPREFIX"] = os.path.join(tempfile.gettempdir(), "ebpf-bench-pycache")


def timed(cmd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(os.devnull, "w") as null:
        subprocess.run(cmd, stdout=null, check=True, env=ENV)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--python-formatter", action="store_true")
    opts = ap.parse_args()
    if shutil.which("bpftool") is None:
        sys.exit("bpftool is not installed (apt-get install bpftool)")
    env_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.chdir(env_root)
    timed(OURS), timed(BPFTOOL)  # warm the page cache
    ours, theirs = [], []
    for i in range(opts.rounds):
        pair = (("ours", OURS), ("bpftool", BPFTOOL)) if i % 2 == 0 else (("bpftool", BPFTOOL), ("ours", OURS))
        for name, cmd in pair:
            (ours if name == "ours" else theirs).append(timed(cmd))
    ow, oc = statistics.median(w for w, _ in ours), statistics.median(c for _, c in ours)
    bw, bc = statistics.median(w for w, _ in theirs), statistics.median(c for _, c in theirs)
    print(f"vmlinux.h from the running kernel's BTF, median of {opts.rounds} runs each:")
    print(f"  bpftool btf dump ... format c   wall {bw * 1e3:7.1f} ms   cpu {bc * 1e3:7.1f} ms")
    print(f"  ebpf btf dump --kernel -f c     wall {ow * 1e3:7.1f} ms   cpu {oc * 1e3:7.1f} ms")
    print(f"  ratio (ours / bpftool)          wall {ow / bw:7.2f}x     cpu {oc / bc:7.2f}x   (target <= 2x)")
    if opts.python_formatter:
        code = ("import time, ebpf.btf as b; s = b.load_kernel_spec(); t = time.perf_counter(); "
                "b.format_c(s); print(time.perf_counter() - t)")
        secs = float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                    text=True, env=ENV).stdout)
        print(f"  ebpf.btf.format_c() (pure Python, for comparison): {secs:.2f} s")


if __name__ == "__main__":
    main()
