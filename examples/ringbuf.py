"""Watch execve() calls through a BPF ring buffer, decoding each event with
the object's BTF.

    clang -O2 -g -target bpf -I/usr/include/$(gcc -dumpmachine) \\
          -c examples/ringbuf.bpf.c -o examples/build/ringbuf.o
    sudo python3 examples/ringbuf.py examples/build/ringbuf.o

It starts a few processes itself so that there is something to see.
"""

import os
import subprocess
import sys

import ebpf
from ebpf import link, ringbuf


def main(path: str) -> None:
    spec = ebpf.load_collection_spec(path)
    event_type = spec.types.type_by_name("exec_event")
    with ebpf.Collection(spec) as coll, \
            link.attach_tracepoint("syscalls", "sys_enter_execve", coll.programs["on_execve"]), \
            ringbuf.Reader(coll.maps["exec_events"], value_type=event_type) as events:
        children = set()
        for _ in range(3):
            p = subprocess.Popen(["/bin/true"])
            children.add(p.pid)
            p.wait()
        seen = set()
        while not children <= seen:
            try:
                record = events.read(timeout=5)
            except TimeoutError:
                sys.exit(f"no execve event for {sorted(children - seen)} within 5 s")
            e = record.value
            # comm is still the caller's name: the tracepoint fires before the exec
            print(f"execve by pid {e.pid:>7}  uid {e.uid:>5}  comm {e.comm.decode(errors='replace')}")
            seen.add(e.pid)
        print(f"saw the execve() of all {len(children)} children of pid {os.getpid()}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "examples/build/ringbuf.o")
