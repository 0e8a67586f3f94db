#!/usr/bin/env bash
# Create .venv (python3 >= 3.11) and install agentq with its dev extra into it.
#
# Idempotent and quick when nothing changed: it reinstalls only when
# pyproject.toml or the interpreter changed since the last install, or the
# install went missing (pip's own no-op check costs seconds).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PY=.venv/bin/python
if [[ ! -x $PY ]]; then
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup.sh: python3 >= 3.11 is needed, found $(python3 --version 2>&1)" >&2
    exit 1
  fi
  echo "setup.sh: creating .venv" >&2
  python3 -m venv .venv
fi

STAMP=.venv/.agentq-dev-install
want="$( (cat pyproject.toml; "$PY" -VV) | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ $want != "$have" ]] \
  || ! "$PY" -c 'import importlib.metadata as m; m.version("agentq"); m.version("pytest")' \
    >/dev/null 2>&1; then
  echo "setup.sh: installing agentq[dev] into .venv" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
  echo "$want" >"$STAMP"
fi
