#!/usr/bin/env bash
# Create .venv (python3 >= 3.11) and install agentq into it:
#   bash scripts/setup.sh         agentq with its dev extra: tests, linters, proto tools
#   bash scripts/setup.sh serve   agentq alone, what `agentq serve` needs: a quicker first start
# Either way the client distribution, agentq-client (clients/python: the SDK and the
# generated stubs the server imports as `agentq.v1`), is installed with it, editable.
#
# Idempotent and quick when nothing changed: it reinstalls only when pyproject.toml or
# the interpreter changed since the last install, the install went missing, or the dev
# extra is asked for after a serving install (pip's own no-op check costs seconds).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

profile=${1:-dev}
case $profile in
  dev) target='.[dev]' && needed=(agentq agentq-client pytest) && what='agentq with its dev extra' ;;
  serve) target='.' && needed=(agentq agentq-client) && what='agentq and what serving needs' ;;
  *)
    echo "setup.sh: unknown profile '$profile': use dev (the default) or serve" >&2
    exit 2
    ;;
esac

PY=.venv/bin/python
if [[ ! -x $PY ]]; then
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup.sh: python3 >= 3.11 is needed, found $(python3 --version 2>&1)" >&2
    exit 1
  fi
  echo "setup.sh: creating .venv" >&2
  python3 -m venv .venv
fi

# The stamp holds the hash of what was installed from and the profile installed;
# a dev install serves too.
STAMP=.venv/.agentq-install
want="$( (cat pyproject.toml clients/python/pyproject.toml; "$PY" -VV) | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ $have == "$want dev" || $have == "$want $profile" ]] \
  && "$PY" -c 'import importlib.metadata as m, sys; [m.version(p) for p in sys.argv[1:]]' \
    "${needed[@]}" >/dev/null 2>&1; then
  exit 0
fi

echo "setup.sh: installing $what into .venv" >&2
started=$SECONDS
# pip is quiet (its verbose output carries every index warning of the machine's pip
# configuration), so a line every few seconds shows the install is still going.
(while sleep 5; do echo "setup.sh: still installing ($((SECONDS - started)) s)" >&2; done) &
ticker=$!
trap 'kill "$ticker" 2>/dev/null || true' EXIT
status=0
# One resolve for both: the server's dependency on agentq-client is met by the local copy.
"$PY" -m pip install --quiet --disable-pip-version-check -e ./clients/python -e "$target" \
  || status=$?
kill "$ticker" 2>/dev/null || true
if ((status)); then
  echo "setup.sh: pip install failed (exit $status); the lines above say why" >&2
  exit "$status"
fi
echo "$want $profile" >"$STAMP"
echo "setup.sh: installed in $((SECONDS - started)) s" >&2
