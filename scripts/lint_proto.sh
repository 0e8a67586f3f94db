#!/usr/bin/env bash
# Lint, build and breaking-check proto/ with buf, offline: `bash scripts/lint_proto.sh`.
#
#   lint      STANDARD + COMMENTS (buf.yaml); third_party/googleapis is left out
#   build     every module compiles, imports resolved from third_party/googleapis
#   breaking  proto/ against the image of the released agentq.v1 in
#             proto/releases/agentq-v1.binpb (FILE rules), so an incompatible
#             change to the contract fails here and in CI
#
# Needs only npx (Node.js and npm): buf comes from the npm registry, pinned
# below; the googleapis protos it imports are vendored, so nothing is copied or
# fetched from the Buf Schema Registry.
set -euo pipefail

# Pinned so every machine lints with the same rules; bump it on purpose.
BUF_VERSION=1.75.0
# The descriptor set image of the released agentq.v1; see proto/releases/README.md.
RELEASED_IMAGE=proto/releases/agentq-v1.binpb

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if ! command -v npx >/dev/null 2>&1; then
  echo "lint_proto.sh: npx not found; install Node.js and npm to run buf" >&2
  exit 127
fi

buf() { npx --yes "@bufbuild/buf@$BUF_VERSION" "$@"; }
buf lint
buf build -o /dev/null
# --exclude-imports: only agentq.v1 is our contract, not the vendored google/api files.
buf breaking proto --against "$RELEASED_IMAGE" --exclude-imports
echo "buf $BUF_VERSION: lint, build and breaking (against $RELEASED_IMAGE) passed"
