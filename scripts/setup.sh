#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian 12 machine (as root):
# libbpf, clang/llvm for the fixtures, bpftool, cilium/ebpf's test objects,
# the test tools, and the package itself (editable). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(libbpf1 libbpf-dev clang llvm clang-19 llvm-19 bpftool iproute2 linux-libc-dev golang-github-cilium-ebpf-dev gcc make systemtap-sdt-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${missing[@]}"
fi

python3 -m pip install -q --disable-pip-version-check pytest hypothesis
python3 -m pip install -q --disable-pip-version-check -e . 

bash scripts/build_fixtures.sh
