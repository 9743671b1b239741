"""Time of the first ``load_kernel_spec().type_by_name("task_struct")`` (target <= 50 ms).

Each run is a fresh interpreter so nothing is cached; the figure printed is
the median of the runs, with the import of ``ebpf.btf`` reported separately.
"""

import statistics
import subprocess
import sys

CODE = r"""
import time
t0 = time.perf_counter()
import ebpf.btf as btf
t1 = time.perf_counter()
ts = btf.load_kernel_spec().type_by_name("task_struct")
t2 = time.perf_counter()
assert ts.member("pid")
print((t1 - t0) * 1e3, (t2 - t1) * 1e3, len(btf.load_kernel_spec()))
"""


def main(runs: int = 7) -> None:
    imports, lookups = [], []
    ntypes = 0
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", CODE], check=True, capture_output=True, text=True,
                             env={"PYTHONPATH": ".", "PATH": "/usr/bin:/bin"}).stdout.split()
        imports.append(float(out[0]))
        lookups.append(float(out[1]))
        ntypes = int(out[2])
    print(f"kernel BTF: {ntypes} types")
    print(f"import ebpf.btf: {statistics.median(imports):.1f} ms (median of {runs})")
    print(f"first load_kernel_spec().type_by_name('task_struct'): "
          f"{statistics.median(lookups):.1f} ms median, {min(lookups):.1f} ms best (target 50 ms)")


if __name__ == "__main__":
    main()
