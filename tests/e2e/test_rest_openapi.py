"""The live shim publishes an OpenAPI document a client can generate a working SDK from."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.harness import RestThread, running_rest, running_server, settings_for

ERROR_BODY = "#/components/schemas/ErrorBody"
API_OPERATIONS = [
    ("post", "/api/v1/agents"),
    ("get", "/api/v1/agents/{agent_id}"),
    ("post", "/api/v1/agents/{agent_id}/execute"),
    ("get", "/api/v1/jobs/{job_id}"),
]

# The success status and body of each route of contract §3, with the fields the
# contract promises in that body (all of them always present, some maybe null).
SUCCESS = {
    ("get", "/health"): ("200", "HealthOut", {"status", "version", "timestamp", "db_type"}),
    ("post", "/api/v1/agents"): (
        "201",
        "AgentOut",
        {"id", "name", "role", "max_depth", "spawn_shadow", "generation", "fitness", "created_at"},
    ),
    ("get", "/api/v1/agents/{agent_id}"): (
        "200",
        "AgentOut",
        {"id", "name", "role", "max_depth", "spawn_shadow", "generation", "fitness", "created_at"},
    ),
    ("post", "/api/v1/agents/{agent_id}/execute"): (
        "202",
        "ExecuteAck",
        {
            "agent_id",
            "job_id",
            "status",
            "response",
            "verified",
            "confidence",
            "context_hash",
            "merkle_root",
            "latency_ms",
        },
    ),
    ("get", "/api/v1/jobs/{job_id}"): (
        "200",
        "JobOut",
        {
            "job_id",
            "agent_id",
            "status",
            "result",
            "error",
            "queued_at",
            "started_at",
            "completed_at",
            "attempts",
        },
    ),
}

# Request bodies of contract §3: field → JSON type(s), and which fields are required.
REQUEST_BODIES = {
    ("post", "/api/v1/agents"): (
        "CreateAgentBody",
        {
            "name": {"string"},
            "role": {"string"},
            "max_depth": {"integer"},
            "spawn_shadow": {"boolean"},
        },
        {"name", "role"},
    ),
    ("post", "/api/v1/agents/{agent_id}/execute"): (
        "ExecuteBody",
        {
            "prompt": {"string"},
            "context_id": {"string", "null"},
            "enable_adversarial": {"boolean"},
            "enable_self_correction": {"boolean"},
            "max_debate_rounds": {"integer"},
        },
        {"prompt"},
    ),
}


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestThread]:
    """One embedded server and shim for the whole module: every test only reads."""
    database = tmp_path_factory.mktemp("openapi") / "agentq.db"
    settings = settings_for(database_url=f"sqlite:///{database}")
    with (
        running_server(settings, in_process_workers=True) as server,
        running_rest(f"127.0.0.1:{server.port}") as rest,
    ):
        yield rest


@pytest.fixture(scope="module")
def spec(shim: RestThread) -> dict[str, Any]:
    """The OpenAPI document as the live shim serves it."""
    response = httpx.get(f"{shim.url}/openapi.json", timeout=10)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def _operation(spec: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    assert path in spec["paths"], f"{path} is not in the spec: {sorted(spec['paths'])}"
    operations: dict[str, Any] = spec["paths"][path]
    assert method in operations, f"{method.upper()} {path} is not in the spec"
    operation: dict[str, Any] = operations[method]
    return operation


def _all_operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
    ]


def _json_schema_ref(container: dict[str, Any]) -> str | None:
    schema = container.get("content", {}).get("application/json", {}).get("schema", {})
    ref: str | None = schema.get("$ref")
    return ref


def _component(spec: dict[str, Any], name: str) -> dict[str, Any]:
    schemas = spec.get("components", {}).get("schemas", {})
    assert name in schemas, f"schema {name} is missing: {sorted(schemas)}"
    schema: dict[str, Any] = schemas[name]
    return schema


def _types(schema: dict[str, Any]) -> set[str]:
    """The JSON types a (possibly anyOf) property schema allows."""
    if "anyOf" in schema:
        return set().union(*(_types(s) for s in schema["anyOf"]))
    declared = schema.get("type")
    return set(declared) if isinstance(declared, list) else {declared}


def _bearer_schemes(spec: dict[str, Any]) -> set[str]:
    schemes = spec.get("components", {}).get("securitySchemes", {})
    return {
        name
        for name, scheme in schemes.items()
        if scheme.get("type") == "http" and str(scheme.get("scheme", "")).lower() == "bearer"
    }


def test_the_spec_is_served_as_openapi_json(shim: RestThread) -> None:
    response = httpx.get(f"{shim.url}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "agentq"
    assert set(SUCCESS) <= {
        (method, path) for path, ops in document["paths"].items() for method in ops
    }


def test_the_interactive_docs_page_loads_the_spec(shim: RestThread) -> None:
    response = httpx.get(f"{shim.url}/docs", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text
    assert "swagger-ui" in response.text.lower()


def test_the_spec_declares_an_http_bearer_scheme(spec: dict[str, Any]) -> None:
    assert _bearer_schemes(spec), spec.get("components", {}).get("securitySchemes")


def test_every_api_operation_requires_the_bearer_token(spec: dict[str, Any]) -> None:
    bearer = _bearer_schemes(spec)
    api = [(m, p, op) for m, p, op in _all_operations(spec) if p.startswith("/api/")]
    assert {(m, p) for m, p, _ in api} >= set(API_OPERATIONS)
    weak = {}
    for method, path, operation in api:
        security = operation.get("security", spec.get("security")) or [{}]
        # Each alternative must need a bearer token; an empty one makes auth optional.
        if not all(set(alternative) & bearer for alternative in security):
            weak[f"{method.upper()} {path}"] = security
    assert not weak, f"API operations that do not require the bearer token: {weak}"


def test_health_needs_no_token(spec: dict[str, Any]) -> None:
    security = _operation(spec, "get", "/health").get("security", spec.get("security"))
    assert not security, f"/health is documented as needing {security}"


@pytest.mark.parametrize(("method", "path"), list(REQUEST_BODIES))
def test_request_bodies_are_documented_with_their_fields(
    spec: dict[str, Any], method: str, path: str
) -> None:
    name, fields, required = REQUEST_BODIES[(method, path)]
    body = _operation(spec, method, path).get("requestBody")
    assert body is not None, f"{method.upper()} {path} documents no request body"
    assert body.get("required") is True
    assert _json_schema_ref(body) == f"#/components/schemas/{name}"
    schema = _component(spec, name)
    properties = schema["properties"]
    assert set(fields) <= set(properties), f"{name} lacks {set(fields) - set(properties)}"
    for field, types in fields.items():
        assert _types(properties[field]) == types, (name, field, properties[field])
    assert set(schema.get("required", [])) == required


@pytest.mark.parametrize(("method", "path"), list(SUCCESS))
def test_success_responses_are_documented_with_their_fields(
    spec: dict[str, Any], method: str, path: str
) -> None:
    status, name, fields = SUCCESS[(method, path)]
    responses = _operation(spec, method, path)["responses"]
    documented_2xx = {code for code in responses if code.startswith("2")}
    assert documented_2xx == {status}, f"{method.upper()} {path} documents {documented_2xx}"
    assert _json_schema_ref(responses[status]) == f"#/components/schemas/{name}"
    schema = _component(spec, name)
    assert fields <= set(schema["properties"]), f"{name} lacks {fields - set(schema['properties'])}"
    optional = fields - set(schema.get("required", []))
    assert not optional, f"{name} documents {sorted(optional)} as optional; they are always sent"


def _expected_errors(path: str, operation: dict[str, Any]) -> set[str]:
    """The statuses of contract §2 an operation of this shape can answer with."""
    expected = {"503", "504"}  # the backend is down or too slow
    if path.startswith("/api/"):
        expected |= {"401", "403"}  # every API route needs a token and a role
    where = {parameter["in"] for parameter in operation.get("parameters", [])}
    if "path" in where:
        expected |= {"404", "422"}  # an unknown id, or one that is not a UUID
    if where & {"query", "header"}:
        expected |= {"422"}
    if "requestBody" in operation:
        expected |= {"400", "413", "415", "422"}
    return expected


def test_every_operation_documents_the_errors_it_can_answer_with(spec: dict[str, Any]) -> None:
    operations = _all_operations(spec)
    assert {(method, path) for method, path, _ in operations} >= set(SUCCESS)
    undocumented = {
        f"{method.upper()} {path}": sorted(missing)
        for method, path, operation in operations
        if (missing := _expected_errors(path, operation) - set(operation["responses"]))
    }
    assert not undocumented, f"errors the spec does not document: {undocumented}"


def test_every_error_response_is_documented_with_the_error_body(spec: dict[str, Any]) -> None:
    wrong = {
        f"{method.upper()} {path} {code}": _json_schema_ref(response)
        for method, path, operation in _all_operations(spec)
        for code, response in operation["responses"].items()
        if code[0] in "45" and _json_schema_ref(response) != ERROR_BODY
    }
    assert not wrong, f"error responses without the ErrorBody schema: {wrong}"


def test_every_operation_documents_exactly_one_success_status(spec: dict[str, Any]) -> None:
    ambiguous = {
        f"{method.upper()} {path}": codes
        for method, path, operation in _all_operations(spec)
        if len(codes := sorted(c for c in operation["responses"] if c.startswith("2"))) != 1
    }
    assert not ambiguous, f"operations without exactly one 2xx: {ambiguous}"


def test_the_error_body_schema_has_detail_and_error(spec: dict[str, Any]) -> None:
    schema = _component(spec, "ErrorBody")
    assert set(schema["required"]) == {"detail", "error"}
    assert _types(schema["properties"]["detail"]) == {"string", "array"}
    info_ref = schema["properties"]["error"]["$ref"]
    info = _component(spec, info_ref.rsplit("/", 1)[-1])
    assert set(info["required"]) == {"code", "message", "status"}
    assert _types(info["properties"]["status"]) == {"integer"}


def test_validation_errors_are_documented_with_the_error_body_not_fastapis(
    spec: dict[str, Any],
) -> None:
    schemas = spec.get("components", {}).get("schemas", {})
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas
    assert "HTTPValidationError" not in json.dumps(spec)
    documented_422 = [
        _json_schema_ref(operation["responses"]["422"])
        for operations in spec["paths"].values()
        for operation in operations.values()
        if "422" in operation["responses"]
    ]
    assert len(documented_422) >= 4
    assert set(documented_422) == {ERROR_BODY}


def test_every_path_id_is_documented_as_a_uuid(spec: dict[str, Any]) -> None:
    path_parameters = {
        f"{method.upper()} {path} {parameter['name']}": parameter
        for method, path, operation in _all_operations(spec)
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "path"
    }
    assert len(path_parameters) >= 3, path_parameters
    not_uuids = {
        where: parameter["schema"]
        for where, parameter in path_parameters.items()
        if not parameter["required"]
        or parameter["schema"].get("type") != "string"
        or parameter["schema"].get("format") != "uuid"
    }
    assert not not_uuids, f"path ids not documented as required UUIDs: {not_uuids}"
