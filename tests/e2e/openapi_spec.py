"""The OpenAPI document of a live shim, and readers of its parts for the tests of it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.e2e.harness import RestThread, running_rest, running_server, settings_for

ERROR_BODY = "#/components/schemas/ErrorBody"
# The token exchange: an API key in, a JWT out; a JWT is not accepted there.
TOKEN_OPERATION = ("post", "/api/v1/tokens")
API_KEY_HEADER = "X-API-Key"
ADMIN_KEY_HEADER = "X-Admin-API-Key"


@contextmanager
def live_shim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestThread]:
    """An embedded server and a shim in front of it, for a module whose tests only read."""
    database = tmp_path_factory.mktemp("openapi") / "agentq.db"
    settings = settings_for(database_url=f"sqlite:///{database}")
    with (
        running_server(settings, in_process_workers=True) as server,
        running_rest(f"127.0.0.1:{server.port}") as rest,
    ):
        yield rest


def served_spec(shim: RestThread) -> dict[str, Any]:
    """The OpenAPI document as the live shim serves it."""
    response = httpx.get(f"{shim.url}/openapi.json", timeout=10)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def operation_of(spec: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    assert path in spec["paths"], f"{path} is not in the spec: {sorted(spec['paths'])}"
    operations: dict[str, Any] = spec["paths"][path]
    assert method in operations, f"{method.upper()} {path} is not in the spec"
    operation: dict[str, Any] = operations[method]
    return operation


def all_operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
    ]


def json_schema_ref(container: dict[str, Any]) -> str | None:
    schema = container.get("content", {}).get("application/json", {}).get("schema", {})
    ref: str | None = schema.get("$ref")
    return ref


def component(spec: dict[str, Any], name: str) -> dict[str, Any]:
    schemas = spec.get("components", {}).get("schemas", {})
    assert name in schemas, f"schema {name} is missing: {sorted(schemas)}"
    schema: dict[str, Any] = schemas[name]
    return schema


def json_types(schema: dict[str, Any]) -> set[str | None]:
    """The JSON types a (possibly anyOf) property schema allows; None for an untyped one."""
    if "anyOf" in schema:
        return set().union(*(json_types(s) for s in schema["anyOf"]))
    declared: str | list[str] | None = schema.get("type")
    return set(declared) if isinstance(declared, list) else {declared}


def bearer_schemes(spec: dict[str, Any]) -> set[str]:
    schemes = spec.get("components", {}).get("securitySchemes", {})
    return {
        name
        for name, scheme in schemes.items()
        if scheme.get("type") == "http" and str(scheme.get("scheme", "")).lower() == "bearer"
    }


def header_key_schemes(spec: dict[str, Any], header: str) -> set[str]:
    """The names of the apiKey schemes that send a key in this header."""
    schemes = spec.get("components", {}).get("securitySchemes", {})
    return {
        name
        for name, scheme in schemes.items()
        if scheme.get("type") == "apiKey"
        and scheme.get("in") == "header"
        and str(scheme.get("name", "")).lower() == header.lower()
    }


def security_of(spec: dict[str, Any], operation: dict[str, Any]) -> list[dict[str, Any]]:
    """The operation's security alternatives; `[{}]` when it needs none."""
    alternatives: list[dict[str, Any]] = operation.get("security", spec.get("security")) or [{}]
    return alternatives
