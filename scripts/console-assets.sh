#!/usr/bin/env bash
# Re-fetch the web console's front-end libraries from the npm registry and copy them into
# rest_shim/console/static/vendor: `bash scripts/console-assets.sh`.
#
# The versions are the exact ones of rest_shim/console/package.json and its lock file;
# change them there, run this, and commit what it wrote. The console has no build step:
# the browser loads these ES modules as they are, so the only change made to a file is
# pointing Preact's hooks at the vendored Preact (the browser cannot resolve "preact"
# without an import map, which the console's Content-Security-Policy would have to allow).
# Each library's license file is copied beside it. Needs Node.js and npm.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONSOLE="$ROOT/rest_shim/console"
VENDOR="$CONSOLE/static/vendor"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$CONSOLE/package.json" "$CONSOLE/package-lock.json" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
modules="$work/node_modules"

rm -rf "$VENDOR"
mkdir -p "$VENDOR"
cp "$modules/preact/dist/preact.mjs" "$VENDOR/preact.mjs"
sed 's|from"preact"|from"./preact.mjs"|g' "$modules/preact/hooks/dist/hooks.mjs" >"$VENDOR/hooks.mjs"
cp "$modules/htm/dist/htm.mjs" "$VENDOR/htm.mjs"
cp "$modules/uplot/dist/uPlot.esm.js" "$VENDOR/uPlot.esm.js"
cp "$modules/uplot/dist/uPlot.min.css" "$VENDOR/uPlot.min.css"
for package in preact htm uplot; do
  cp "$modules/$package/LICENSE" "$VENDOR/LICENSE.$package"
done

# Every bare import must have been rewritten, or the page fails to load in the browser.
if grep -lE '(import|export)[^;]*from ?"[^./"]' "$VENDOR"/*.mjs "$VENDOR"/*.js; then
  echo "console-assets.sh: a vendored module still imports a bare package name" >&2
  exit 1
fi
echo "console-assets.sh: vendored into ${VENDOR#"$ROOT"/}:"
ls -l "$VENDOR"
