"""generated/ is exactly what scripts/gen_proto.py makes of proto/, and imports once installed."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
GENERATED = ROOT / "generated"
GEN_PROTO = ROOT / "scripts" / "gen_proto.py"


def _files(folder: pathlib.Path) -> dict[str, bytes]:
    """Every file under folder by relative path, leaving out bytecode caches."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_generated_code_is_byte_identical_to_a_fresh_regeneration(
    tmp_path: pathlib.Path,
) -> None:
    result = subprocess.run(
        [sys.executable, str(GEN_PROTO), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"gen_proto.py failed:\n{result.stdout}\n{result.stderr}"

    fresh, committed = _files(tmp_path), _files(GENERATED)
    assert fresh, "gen_proto.py wrote no files"
    drift = sorted(
        [f"missing from generated/: {name}" for name in fresh.keys() - committed.keys()]
        + [f"stale in generated/: {name}" for name in committed.keys() - fresh.keys()]
        + [
            f"differs: {name}"
            for name in fresh.keys() & committed.keys()
            if fresh[name] != committed[name]
        ]
    )
    assert not drift, (
        "generated/ is out of date with proto/; run `python scripts/gen_proto.py` "
        "and commit the result:\n  " + "\n  ".join(drift)
    )


def test_generated_modules_import_from_the_installed_package(tmp_path: pathlib.Path) -> None:
    modules = sorted(
        f"agentq.v1.{path.stem}" for path in (GENERATED / "agentq" / "v1").glob("*_pb2*.py")
    )
    assert "agentq.v1.agent_service_pb2_grpc" in modules
    script = "\n".join(
        [
            "import importlib",
            *[f"importlib.import_module({name!r})" for name in modules],
            "from agentq.v1 import agent_service_pb2, agent_service_pb2_grpc, job_service_pb2",
            "print(*agent_service_pb2.DESCRIPTOR.services_by_name)",
            "print(*job_service_pb2.DESCRIPTOR.services_by_name)",
            "print(agent_service_pb2_grpc.AgentServiceStub.__name__)",
        ]
    )
    # A temp cwd and no PYTHONPATH: only the installed package can satisfy the imports.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"import failed:\n{result.stderr}"
    assert result.stdout.split() == ["AgentService", "JobService", "AgentServiceStub"]
