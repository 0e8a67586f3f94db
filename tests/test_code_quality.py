"""The hand-written code stays clean: ruff lint and format, mypy --strict, and the layers."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Console scripts are installed beside the interpreter that runs the tests.
LINT_IMPORTS = str(pathlib.Path(sys.executable).with_name("lint-imports"))
# Checks of the source, not of behaviour: scripts/test.sh runs them first, as a step of their own.
pytestmark = pytest.mark.gate


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "ruff", "check", "."],
        [sys.executable, "-m", "ruff", "format", "--check", "."],
        [sys.executable, "-m", "mypy"],
        # The contracts are [tool.importlinter] in pyproject.toml; no cache left in the tree.
        [LINT_IMPORTS, "--no-cache", "--no-logo"],
    ],
    ids=["ruff-lint", "ruff-format", "mypy-strict", "import-contracts"],
)
def test_the_code_passes(command: list[str]) -> None:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
