"""The REST shim never imports the server: it knows JSON and gRPC stubs only."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIM = ROOT / "rest_shim"

# Imports the shim's modules, builds its app and its uvicorn server (which
# touches every module a deployment of `agentq rest` loads), then reports
# every module that was loaded.
_LOAD_THE_SHIM = """
import json, sys
import rest_shim.app, rest_shim.serving
from rest_shim.settings import RestSettings
settings = RestSettings(grpc_target="127.0.0.1:9", http_addr="127.0.0.1:0")
app = rest_shim.app.create_app(settings)
app.openapi()
rest_shim.serving.http_server(settings, embedded=True)
print(json.dumps(sorted(sys.modules)))
"""


def _is_server(module: str) -> bool:
    return module == "server" or module.startswith("server.")


def _server_imports(path: Path) -> list[str]:
    """`line: statement` of each absolute import of `server` in one source file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and ast.unparse(node.func) in ("importlib.import_module", "import_module", "__import__")
        ):
            names = [node.args[0].value]
        else:
            continue
        found += [f"{node.lineno}: {ast.unparse(node)}" for name in names if _is_server(name)]
    return found


def test_no_shim_source_file_imports_the_server() -> None:
    sources = sorted(SHIM.rglob("*.py"))
    assert {"app.py", "routes.py", "serving.py"} <= {p.name for p in sources}
    offenders = {
        str(path.relative_to(ROOT)): lines for path in sources if (lines := _server_imports(path))
    }
    assert not offenders, f"rest_shim imports server/: {offenders}"


def test_the_import_check_recognises_every_spelling_of_a_server_import(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "import server\n"
        "import os, server.auth as auth\n"
        "from server.errors import AgentQError\n"
        "from server import settings\n"
        "importlib.import_module('server.store.migrate')\n"
        "from . import server as local_server\n"
        "import serverless\n"
        "from rest_shim import server_name\n",
        encoding="utf-8",
    )
    assert [line.split(":")[0] for line in _server_imports(source)] == ["1", "2", "3", "4", "5"]


def test_loading_and_building_the_shim_loads_no_server_module() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTQ_")}
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_THE_SHIM],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"rest_shim.app", "rest_shim.routes", "rest_shim.serving", "agentq.v1"} <= set(modules)
    loaded = [m for m in modules if _is_server(m)]
    assert not loaded, f"building the REST shim loaded server modules: {loaded}"
