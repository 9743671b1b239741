#!/usr/bin/env bash
# Sets the project up on a Debian 12 (or newer) machine, as root, no sudo
# needed: the system packages (libbpf, clang/llvm for the fixtures, bpftool,
# third-party BPF objects), a project virtual environment with the test and
# dev tools and the package itself (editable), and the fixtures.
#
# Idempotent: a second run with everything in place takes seconds (it checks
# dpkg, compares a stamp of the requirements and interpreter, and rebuilds
# only fixtures whose sources changed).
#
#   PYTHON=python3.9 bash scripts/setup.sh     # interpreter to build the venv from
#   VENV=.venv-3.9 bash scripts/setup.sh       # where the venv goes (default .venv)
#
# The interpreter is the first python3 in PATH unless PYTHON says otherwise;
# it must be 3.9 or newer.  Nothing is installed into its own site-packages:
# Debian's python3 refuses that (PEP 668), and another interpreter's
# environment is not ours to change.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

log() { printf 'setup: %s\n' "$*" >&2; }
started=$(date +%s%N)

# -- system packages -----------------------------------------------------------
pkgs=(libbpf1 libbpf-dev clang llvm clang-19 llvm-19 bpftool iproute2 linux-libc-dev
      golang-github-cilium-ebpf-dev gcc make systemtap-sdt-dev python3-venv
      libbpf-tools libxdp1)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing Debian packages: ${missing[*]}; run this script as root (it uses apt-get)"
    exit 1
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# -- the project's virtual environment ---------------------------------------
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  log "no $PYTHON in PATH"
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))'; then
  log "$("$PYTHON" --version 2>&1) is too old: ebpf needs Python 3.9 or newer"
  exit 1
fi
base=$("$PYTHON" -c 'import sys, os; print(os.path.realpath(sys.executable), sys.version.split()[0])')
stamp=$( { echo "$base"; cat requirements-dev.txt setup.cfg pyproject.toml; } | sha256sum | cut -d' ' -f1)

if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.ebpf-base" 2>/dev/null)" != "$base" ]; then
  log "$VENV was made from another interpreter; making it anew from $base"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV from $base"
  "$PYTHON" -m venv "$VENV"
  echo "$base" > "$VENV/.ebpf-base"
fi
if [ "$(cat "$VENV/.ebpf-stamp" 2>/dev/null)" != "$stamp" ]; then
  log "installing the test tools and ebpf (editable) into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-dev.txt
  # compat mode: a plain path entry, which type checkers follow (the
  # default import-hook mode hides the package from mypy and pyright).
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps \
    --config-settings editable_mode=compat -e .
  echo "$stamp" > "$VENV/.ebpf-stamp"
fi

# -- fixtures ------------------------------------------------------------------
bash scripts/build_fixtures.sh
ms=$(( ($(date +%s%N) - started) / 1000000 ))
log "ready in $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s ($VENV: $("$VENV/bin/python" --version 2>&1))"
