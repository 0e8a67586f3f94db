#!/usr/bin/env bash
# Set up .venv and run the whole test suite: `bash scripts/test.sh [pytest args]`.
#
# The suite runs in steps, each one pytest run with the given args:
#   static    ruff, mypy --strict and the import contracts (tests/test_code_quality.py)
#   tests     every test not marked `gate`, in two processes (pytest-xdist)
#   proto     buf lint, build and breaking through npx (tests/test_proto_lint.py)
#   polyglot  the Node.js client through npm (tests/e2e/test_polyglot_client.py)
#   ts-stubs  a TypeScript client on the stubs of `buf generate`, through npm
#             (tests/e2e/test_typescript_client.py)
#   console   the web console in Debian's Chromium through Playwright
#             (tests/e2e/test_console.py; .ci/run installs Chromium)
#   client    the Python client installed alone into a fresh venv from the registry
#             (tests/client/test_fresh_install.py; the rest of tests/client runs in `tests`)
#   bench     the quick benchmark run (tests/test_bench_smoke.py)
# Every step runs, and the summary at the end names those that failed; with -x
# (--exitfirst) the first failed step ends the run. Args that pick tests (a test
# path or node id, -k, -m, --lf, --collect-only) make it one pytest run over
# exactly those, gates included. With CI set, each step has a time limit.
#
# Works from any directory; pytest runs from the repo root, so give test paths
# relative to it. Needs only python3 >= 3.11 and the package registries. Exits
# non-zero when a step fails; pytest's 5 (no tests collected) counts as a
# failure too, with a note saying why.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh

# Each step: its name, its time limit under CI, and the file of its gate tests
# ("-" for the step of all the other tests). A test marked `gate` runs in the
# step that names its file, and nowhere else.
STEPS=(
  "static   5m  tests/test_code_quality.py"
  "tests   12m  -"
  "proto    6m  tests/test_proto_lint.py"
  "polyglot 5m  tests/e2e/test_polyglot_client.py"
  "ts-stubs 5m  tests/e2e/test_typescript_client.py"
  "console  5m  tests/e2e/test_console.py"
  "client   5m  tests/client/test_fresh_install.py"
  "bench    6m  tests/test_bench_smoke.py"
)

# The `tests` step runs in this many pytest processes (pytest-xdist): its tests spend
# much of their time waiting on the servers, workers and subprocesses they start, so two
# processes keep two cores busy. Each test makes its own databases, Redis namespace and
# ports, so they never share state. A file's tests run together in one process
# (--dist loadfile): a server a module starts for its tests runs beside no other file's
# tests, whose process-wide counters (the metrics) it would otherwise move.
TESTS_PROCESSES=2

# The pytest exit status of one run, with a note when it collected nothing.
pytest_status() {
  local status=0
  "$@" || status=$?
  if [[ $status -eq 5 ]]; then
    echo "test.sh: pytest collected no tests; that counts as a failure" >&2
  fi
  return "$status"
}

picks_tests=false
stop_early=false
for arg in "$@"; do
  case $arg in
    -x | --exitfirst) stop_early=true ;;
    -k* | -m* | --lf | --last-failed | --co | --collect-only) picks_tests=true ;;
    -*) ;;
    *) if [[ -e ${arg%%::*} ]]; then picks_tests=true; fi ;;
  esac
done

if $picks_tests; then
  status=0
  pytest_status .venv/bin/python -m pytest "$@" || status=$?
  exit "$status"
fi

# A file that marks gate tests but is no step's would never run.
gate_files="$(grep -rlE --include='*.py' 'pytest\.mark\.gate\b' tests | sort)"
for file in $gate_files; do
  if ! printf '%s\n' "${STEPS[@]}" | grep -qE " $file\$"; then
    echo "test.sh: $file marks gate tests but no step of scripts/test.sh runs it" >&2
    exit 1
  fi
done

summary=()
failed=()
stopped=false
for step in "${STEPS[@]}"; do
  read -r name limit gates <<<"$step"
  if $stopped; then
    summary+=("$(printf '%-9s not run  (-x)' "$name")")
    continue
  fi
  if [[ $gates == - ]]; then
    selection=(-m "not gate" --numprocesses "$TESTS_PROCESSES" --dist loadfile)
  else
    selection=(-m gate "$gates")
  fi
  echo
  echo "==== test.sh: step $name: pytest ${selection[*]} $* ===="
  command=(.venv/bin/python -m pytest "${selection[@]}" "$@")
  if [[ -n ${CI:-} ]]; then
    command=(timeout --kill-after=30s "$limit" "${command[@]}")
  fi
  started=$SECONDS
  status=0
  pytest_status "${command[@]}" || status=$?
  took=$((SECONDS - started))
  if [[ $status -eq 0 ]]; then
    summary+=("$(printf '%-9s passed   %4ds' "$name" "$took")")
  else
    failed+=("$name")
    if [[ $status -eq 124 ]]; then
      summary+=("$(printf '%-9s FAILED   %4ds  (stopped at its %s limit)' "$name" "$took" "$limit")")
    else
      summary+=("$(printf '%-9s FAILED   %4ds  (exit %d)' "$name" "$took" "$status")")
    fi
    if $stop_early; then
      stopped=true
      continue
    fi
  fi
done

echo
echo "==== test.sh: summary ===="
printf 'test.sh: %s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "test.sh: failed steps: ${failed[*]}" >&2
  exit 1
fi
