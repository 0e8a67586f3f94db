#!/usr/bin/env bash
# Set up .venv and run the whole test suite: `bash scripts/test.sh [pytest args]`.
#
# Works from any directory; pytest runs from the repo root, so give test paths
# relative to it. Needs only python3 >= 3.11 and the package registries. The
# exit code is pytest's; pytest's 5 (no tests collected) is non-zero, so it
# fails too, with a note saying why.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh

status=0
.venv/bin/python -m pytest "$@" || status=$?
if [[ $status -eq 5 ]]; then
  echo "test.sh: pytest collected no tests; that counts as a failure" >&2
fi
exit "$status"
