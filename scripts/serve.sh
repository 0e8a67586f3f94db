#!/usr/bin/env bash
# Set up .venv and run agentq: `bash scripts/serve.sh [agentq serve args]`.
#
# With no VEX_JWT_SECRET in the environment it starts in development mode,
# which makes a secret for this run and prints how to mint tokens with it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"

if [[ -z ${VEX_JWT_SECRET:-} ]]; then
  set -- --dev "$@"
fi
exec "$ROOT/.venv/bin/agentq" serve "$@"
