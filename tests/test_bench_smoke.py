"""The benchmark harness still runs end to end (`--quick`): figures are not asserted."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Minutes of load on every core: scripts/test.sh runs it as a step of its own.
pytestmark = pytest.mark.gate


def test_the_quick_benchmark_runs_every_workload_and_verifies_them(tmp_path: pathlib.Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--results-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    assert "embedded" in report["configs"]
    if os.environ.get("CI"):
        # PostgreSQL and Redis run in CI: the configuration the targets judge must be there.
        assert "postgres" in report["configs"]
    assert report["targets"], "the report names no targets"
