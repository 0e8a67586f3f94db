#!/usr/bin/env bash
# Lint and build proto/ with buf, offline: `bash scripts/lint_proto.sh`.
#
# buf.yaml lists build/buf-deps/ as a second module that holds the googleapis
# files our protos import (google/api/annotations.proto, google/api/http.proto).
# The Buf Schema Registry is out of reach here, so instead of a `deps:` entry
# this script copies them out of the installed googleapis-common-protos Python
# package, which the project already depends on. build/ is git-ignored.
#
# Python: $PYTHON if set, else the repo's .venv, else python3. It must have
# googleapis-common-protos installed (scripts/test.sh sets that up).
set -euo pipefail

# Pinned so every machine lints with the same rules; bump it on purpose.
BUF_VERSION=1.75.0

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ -z ${PYTHON:-} ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! command -v npx >/dev/null 2>&1; then
  echo "lint_proto.sh: npx not found; install Node.js and npm to run buf" >&2
  exit 127
fi

# The folder of google/api inside googleapis-common-protos that has the .proto
# sources (google.api is a namespace package, so look through __path__).
GOOGLE_API="$("$PYTHON" - <<'PY'
import os
import google.api

for folder in google.api.__path__:
    if os.path.isfile(os.path.join(folder, "annotations.proto")):
        print(folder)
        break
else:
    raise SystemExit("google/api/annotations.proto not found; install googleapis-common-protos")
PY
)"

DEPS=build/buf-deps/google/api
mkdir -p "$DEPS"
for name in annotations.proto http.proto; do
  # Copy then rename, so a concurrent run never reads a half-written file.
  cp "$GOOGLE_API/$name" "$DEPS/$name.tmp.$$"
  mv -f "$DEPS/$name.tmp.$$" "$DEPS/$name"
done

buf() { npx --yes "@bufbuild/buf@$BUF_VERSION" "$@"; }
buf lint
buf build -o /dev/null
echo "buf $BUF_VERSION: lint and build passed"
