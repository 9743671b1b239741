#!/usr/bin/env bash
# Sets everything up (packages, the project venv, fixtures) and runs the test
# suite in the project venv.  Arguments go to pytest.  As root, kernel tests
# run; EBPF_REQUIRE_KERNEL=1 turns their "kernel not available" skips into
# failures.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${VENV:-.venv}/bin/python" -m pytest -q "$@"
