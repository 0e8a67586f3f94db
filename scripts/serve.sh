#!/usr/bin/env bash
# Set up .venv with what serving needs and run agentq: `bash scripts/serve.sh [agentq serve args]`.
#
# With no VEX_JWT_SECRET in the environment it says so and starts in development
# mode: on 127.0.0.1 only, signing with a secret kept beside the SQLite database.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh" serve

if [[ -z ${VEX_JWT_SECRET:-} ]]; then
  echo "serve.sh: VEX_JWT_SECRET is not set: starting in development mode (agentq serve --dev)" >&2
  set -- --dev "$@"
fi
exec "$ROOT/.venv/bin/agentq" serve "$@"
