#!/usr/bin/env bash
# The benchmark's one command: `bash bench/run.sh [--quick] [options]` (bench/README.md).
#
# Sets up .venv like the test suite does, then runs every baseline and workload on
# this machine's loopback and writes bench/results/. It stops everything it started,
# and the whole run is capped in time whatever happens.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh

# The harness ends itself past its own limit; this cap is the backstop.
exec timeout --kill-after=60s 90m .venv/bin/python -m bench "$@"
