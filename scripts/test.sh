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

PY=.venv/bin/python
if [[ ! -x $PY ]]; then
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "test.sh: python3 >= 3.11 is needed, found $(python3 --version 2>&1)" >&2
    exit 1
  fi
  echo "test.sh: creating .venv" >&2
  python3 -m venv .venv
fi

# Reinstall only when pyproject.toml or the interpreter changed since the last
# install (or the install went missing): pip's own no-op check costs seconds.
STAMP=.venv/.agentq-dev-install
want="$( (cat pyproject.toml; "$PY" -VV) | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ $want != "$have" ]] \
  || ! "$PY" -c 'import importlib.metadata as m; m.version("agentq"); m.version("pytest")' \
    >/dev/null 2>&1; then
  echo "test.sh: installing agentq[dev] into .venv" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
  echo "$want" >"$STAMP"
fi

status=0
"$PY" -m pytest "$@" || status=$?
if [[ $status -eq 5 ]]; then
  echo "test.sh: pytest collected no tests; that counts as a failure" >&2
fi
exit "$status"
