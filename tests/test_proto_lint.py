"""The proto contract passes buf lint (STANDARD + COMMENTS), builds, and is not broken.

`scripts/lint_proto.sh` runs buf lint, build and breaking (against the released image in
proto/releases/), offline. The breaking tests prove the guard bites: a copy of the contract
with one incompatible change fails the script, naming the field, and an unchanged copy
passes. They live here, not in a file of their own, because scripts/test.sh runs this file
as its `proto` step: the one with npx and buf.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINT_PROTO = pathlib.Path("scripts") / "lint_proto.sh"
# What the script needs to run on a copy of the contract.
CONTRACT = ["proto", "third_party", "buf.yaml", str(LINT_PROTO)]
# It needs npx and buf: scripts/test.sh runs it as a step of its own.
pytestmark = [
    pytest.mark.gate,
    # The first run on a machine downloads buf through npx, which can be slow.
    pytest.mark.timeout(600),
]


def _lint_proto(root: pathlib.Path) -> subprocess.CompletedProcess[str]:
    """scripts/lint_proto.sh run in `root`; skipped (failed under CI) without npx."""
    if shutil.which("npx") is None:
        reason = "npx not found: install Node.js and npm to run buf on proto/"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return subprocess.run(
        ["bash", str(LINT_PROTO)],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def contract_copy(tmp_path: pathlib.Path) -> pathlib.Path:
    """A copy of the contract, its vendored imports, buf.yaml and the lint script."""
    for name in CONTRACT:
        source, target = ROOT / name, tmp_path / name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    return tmp_path


def _edit(path: pathlib.Path, old: str, new: str) -> None:
    """Replace the one occurrence of `old` in the file at `path`."""
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {path.name} exactly once"
    path.write_text(text.replace(old, new))


def test_protos_pass_buf_lint_build_and_breaking() -> None:
    result = _lint_proto(ROOT)

    assert result.returncode == 0, (
        f"scripts/lint_proto.sh exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )


def test_an_unchanged_copy_of_the_contract_passes_buf_breaking(
    contract_copy: pathlib.Path,
) -> None:
    result = _lint_proto(contract_copy)

    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "breaking (against proto/releases/agentq-v1.binpb) passed" in result.stdout


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        pytest.param(
            "agent_service.proto",
            "string prompt = 2 [",
            "string prompt = 12 [",
            'field "2" with name "prompt" on message "ExecuteRequest" was deleted',
            id="renumbered",
        ),
        pytest.param(
            "job.proto",
            "  int32 attempts = 9 [(google.api.field_behavior) = OUTPUT_ONLY];\n",
            "",
            'field "9" with name "attempts" on message "Job" was deleted',
            id="deleted",
        ),
    ],
)
def test_an_incompatible_change_to_a_field_fails_buf_breaking_naming_it(
    contract_copy: pathlib.Path, file: str, old: str, new: str, expected: str
) -> None:
    _edit(contract_copy / "proto" / "agentq" / "v1" / file, old, new)

    result = _lint_proto(contract_copy)

    assert result.returncode != 0, f"buf breaking let the change through:\n{result.stdout}"
    assert expected in result.stdout, f"{result.stdout}\n{result.stderr}"
