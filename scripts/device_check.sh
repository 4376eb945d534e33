#!/usr/bin/env bash
# One budgeted device call: build, GPU tests and benchmarks in under 9 minutes, results in
# $OUT (at most 8 files). Stages, budgets and files: scripts/device_check.py's docstring.
#   bash scripts/device_check.sh --plan | --cpu-smoke | --command | [--only S1,S2] [--out DIR]
# PYTHON selects the interpreter (default python3: the device machine's own).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/device_check.py "$@"
