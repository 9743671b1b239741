#!/usr/bin/env bash
# Builds fixtures/*.bpf.c into fixtures/build/ (little- and big-endian objects)
# and the helper user-space binaries in fixtures/*.c that tests probe.
set -euo pipefail
cd "$(dirname "$0")/.."
CLANG=${CLANG:-clang}
out=fixtures/build
mkdir -p "$out"
arch_inc=/usr/include/$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)
for src in fixtures/*.bpf.c; do
  [ -e "$src" ] || continue
  name=$(basename "$src" .bpf.c)
  for target in bpfel bpfeb; do
    obj="$out/$name.$target.o"
    if [ ! -e "$obj" ] || [ "$src" -nt "$obj" ] || [ fixtures/common.h -nt "$obj" ]; then
      "$CLANG" -O2 -g -target "$target" -I"$arch_inc" -Ifixtures -c "$src" -o "$obj"
    fi
  done
  cp "$out/$name.bpfel.o" "$out/$name.o"
done
for src in fixtures/*.c; do
  case "$src" in *.bpf.c) continue ;; esac
  [ -e "$src" ] || continue
  bin="$out/$(basename "$src" .c)"
  if [ ! -e "$bin" ] || [ "$src" -nt "$bin" ]; then
    cc -O1 -g -o "$bin" "$src" -I"$out"
  fi
done

# uprobe_target variants: non-PIE, and the shared library it dlopen()s.
ut=fixtures/uprobe_target.c
if [ -e "$ut" ]; then
  if [ ! -e "$out/uprobe_target_nopie" ] || [ "$ut" -nt "$out/uprobe_target_nopie" ]; then
    cc -O1 -g -no-pie -fno-pie -o "$out/uprobe_target_nopie" "$ut"
  fi
  if [ ! -e "$out/libuprobe_target.so" ] || [ "$ut" -nt "$out/libuprobe_target.so" ]; then
    cc -O1 -g -shared -fPIC -DUPROBE_TARGET_LIB -o "$out/libuprobe_target.so" "$ut"
  fi
fi
