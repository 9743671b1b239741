#!/usr/bin/env bash
# Sets everything up on a fresh Debian 12 machine (as root) and runs the example.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p examples/build
clang -O2 -g -target bpf -I/usr/include/$(gcc -dumpmachine) -c examples/counter.bpf.c -o examples/build/counter.o
python3 examples/counter.py examples/build/counter.o
clang -O2 -g -target bpf -I/usr/include/$(gcc -dumpmachine) -c examples/ringbuf.bpf.c -o examples/build/ringbuf.o
python3 examples/ringbuf.py examples/build/ringbuf.o
