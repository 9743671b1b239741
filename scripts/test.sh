#!/usr/bin/env bash
# Sets everything up (packages, fixtures) and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec python3 -m pytest -q "$@"
