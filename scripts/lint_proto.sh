#!/usr/bin/env bash
# Lint and build proto/ with buf, offline: `bash scripts/lint_proto.sh`.
#
#   lint      STANDARD + COMMENTS (buf.yaml); third_party/googleapis is left out
#   build     every module compiles, imports resolved from third_party/googleapis
#
# Needs only npx (Node.js and npm): buf comes from the npm registry, pinned
# below; the googleapis protos it imports are vendored, so nothing is copied or
# fetched from the Buf Schema Registry.
set -euo pipefail

# Pinned so every machine lints with the same rules; bump it on purpose.
BUF_VERSION=1.75.0

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if ! command -v npx >/dev/null 2>&1; then
  echo "lint_proto.sh: npx not found; install Node.js and npm to run buf" >&2
  exit 127
fi

buf() { npx --yes "@bufbuild/buf@$BUF_VERSION" "$@"; }
buf lint
buf build -o /dev/null
echo "buf $BUF_VERSION: lint and build passed"
