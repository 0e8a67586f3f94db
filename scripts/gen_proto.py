"""Regenerate generated/ from proto/: Python messages, .pyi stubs and typed gRPC stubs."""

from __future__ import annotations

import pathlib
import shutil
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
OUT = ROOT / "generated"
# The google/api protos the contract imports, vendored (see its README.md); the
# same files buf uses. Their compiled *_pb2 modules, which the generated code
# imports, come from the googleapis-common-protos package.
GOOGLEAPIS = ROOT / "third_party" / "googleapis"
WELL_KNOWN = pathlib.Path(protoc.__file__).parent / "_proto"
# mypy-protobuf's plugins live beside this interpreter, which may not be on PATH.
BIN = pathlib.Path(sys.executable).parent


def generate(out: pathlib.Path = OUT) -> None:
    """Compile every proto under proto/ into out/, replacing what was there."""
    package = out / "agentq"
    if package.exists():
        shutil.rmtree(package)
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO}",
        f"-I{GOOGLEAPIS}",
        f"-I{WELL_KNOWN}",
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--mypy_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for folder in [package, *[p for p in package.rglob("*") if p.is_dir()]]:
        (folder / "__init__.py").touch()
    (package / "py.typed").touch()


if __name__ == "__main__":
    generate(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
