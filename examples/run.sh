#!/usr/bin/env bash
# Sets everything up on a Debian 12 machine (as root) and runs the examples:
# a packet counter run with BPF_PROG_TEST_RUN, and execve() events through a
# tracepoint and a ring buffer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
py=${VENV:-.venv}/bin/python
mkdir -p examples/build
arch_inc=/usr/include/$(gcc -dumpmachine)
for ex in counter ringbuf; do
  clang -O2 -g -target bpf -I"$arch_inc" -c "examples/$ex.bpf.c" -o "examples/build/$ex.o"
  "$py" "examples/$ex.py" "examples/build/$ex.o"
done
