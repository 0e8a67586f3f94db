"""The live shim publishes an OpenAPI document a client can generate a working SDK from:
its request and response bodies, its errors and its path parameters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.harness import RestThread
from tests.e2e.openapi_spec import (
    ERROR_BODY,
    TOKEN_OPERATION,
    all_operations,
    component,
    json_schema_ref,
    json_types,
    live_shim,
    operation_of,
    served_spec,
)
from tests.e2e.rest_fields import (
    ACK_FIELDS,
    AGENT_FIELDS,
    API_KEY_FIELDS,
    HEALTH_FIELDS,
    LIMITS_FIELDS,
    TOKEN_FIELDS,
    VEX_JOB_FIELDS,
)

EVENT_FIELDS = {"id", "type", "created_at", "job_id", "agent_id", "data"}

# Path parameters that are not resource ids but names: a tenant is chosen by the operator
# (any string), a context by the client (its rule's pattern). Neither is ever a 404: a
# tenant without limits of its own has the defaults, a context without turns is empty.
FREE_FORM_PATH_PARAMETERS = {"tenant_id", "context_id"}
# Resource ids of the server's own forms, not UUIDs: an event's, a webhook delivery's (a number).
OPAQUE_PATH_IDS = {"event_id", "delivery_id"}

# The success status and body of each route of docs/contract.md §3 and of access control, with the
# fields promised in that body (all of them always present, some maybe null).
SUCCESS = {
    ("get", "/health"): ("200", "HealthOut", HEALTH_FIELDS),
    ("post", "/api/v1/agents"): ("201", "AgentOut", AGENT_FIELDS),
    ("get", "/api/v1/agents/{agent_id}"): ("200", "AgentOut", AGENT_FIELDS),
    ("post", "/api/v1/agents/{agent_id}/execute"): ("202", "ExecuteAck", ACK_FIELDS),
    ("post", "/admin/api-keys"): ("201", "CreatedApiKeyOut", API_KEY_FIELDS | {"key"}),
    ("get", "/admin/api-keys"): ("200", "ApiKeyList", {"data"}),
    ("post", "/api/v1/api-keys"): ("201", "CreatedApiKeyOut", API_KEY_FIELDS | {"key"}),
    ("get", "/api/v1/api-keys"): ("200", "ApiKeyPage", {"data", "meta"}),
    ("put", "/admin/tenants/{tenant_id}/limits"): ("200", "TenantLimitsOut", LIMITS_FIELDS),
    ("get", "/admin/tenants/{tenant_id}/limits"): ("200", "TenantLimitsOut", LIMITS_FIELDS),
    ("post", "/api/v1/tokens"): ("200", "TokenOut", TOKEN_FIELDS),
    ("get", "/api/v1/jobs/{job_id}"): ("200", "JobOut", VEX_JOB_FIELDS),
    ("get", "/api/v1/contexts/{context_id}"): (
        "200",
        "ContextPage",
        {"context_id", "data", "meta"},
    ),
    ("get", "/api/v1/events"): ("200", "EventPage", {"data", "meta"}),
    ("get", "/api/v1/events/{event_id}"): ("200", "EventOut", EVENT_FIELDS),
    ("post", "/api/v1/events"): ("201", "EventOut", EVENT_FIELDS),
}

# Request bodies of docs/contract.md §3: field → JSON type(s), and which fields are required.
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
    ("post", "/admin/api-keys"): (
        "CreateApiKeyBody",
        {
            "tenant_id": {"string"},
            "name": {"string"},
            "role": {"string"},
            "scopes": {"array"},
            "lifetime_seconds": {"integer", "null"},
        },
        {"tenant_id", "name", "scopes"},
    ),
    ("put", "/admin/tenants/{tenant_id}/limits"): (
        "TenantLimitsBody",
        {"tier": {"string", "null"}, "max_unfinished_jobs": {"integer", "null"}},
        set(),
    ),
}


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestThread]:
    """One embedded server and shim for the whole module: every test only reads."""
    with live_shim(tmp_path_factory) as rest:
        yield rest


@pytest.fixture(scope="module")
def spec(shim: RestThread) -> dict[str, Any]:
    """The OpenAPI document as the live shim serves it."""
    return served_spec(shim)


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


@pytest.mark.parametrize(("method", "path"), list(REQUEST_BODIES))
def test_request_bodies_are_documented_with_their_fields(
    spec: dict[str, Any], method: str, path: str
) -> None:
    name, fields, required = REQUEST_BODIES[(method, path)]
    body = operation_of(spec, method, path).get("requestBody")
    assert body is not None, f"{method.upper()} {path} documents no request body"
    assert body.get("required") is True
    assert json_schema_ref(body) == f"#/components/schemas/{name}"
    schema = component(spec, name)
    properties = schema["properties"]
    assert set(fields) <= set(properties), f"{name} lacks {set(fields) - set(properties)}"
    for field, types in fields.items():
        assert json_types(properties[field]) == types, (name, field, properties[field])
    assert set(schema.get("required", [])) == required


@pytest.mark.parametrize(("method", "path"), list(SUCCESS))
def test_success_responses_are_documented_with_their_fields(
    spec: dict[str, Any], method: str, path: str
) -> None:
    status, name, fields = SUCCESS[(method, path)]
    responses = operation_of(spec, method, path)["responses"]
    documented_2xx = {code for code in responses if code.startswith("2")}
    assert documented_2xx == {status}, f"{method.upper()} {path} documents {documented_2xx}"
    assert json_schema_ref(responses[status]) == f"#/components/schemas/{name}"
    schema = component(spec, name)
    assert fields <= set(schema["properties"]), f"{name} lacks {fields - set(schema['properties'])}"
    optional = fields - set(schema.get("required", []))
    assert not optional, f"{name} documents {sorted(optional)} as optional; they are always sent"


def _expected_errors(method: str, path: str, operation: dict[str, Any]) -> set[str]:
    """The statuses of docs/contract.md §2 an operation of this shape can answer with."""
    # The backend is down or too slow; credentials too large, refused on every route.
    expected = {"431", "503", "504"}
    if (method, path) == TOKEN_OPERATION:
        # An unknown, revoked or expired key; the tenant's bucket. Any live key may
        # exchange, so no 403.
        expected |= {"401", "429"}
    elif path.startswith("/api/"):
        # Every API route needs a credential, a role or scope, and the tenant's bucket.
        expected |= {"401", "403", "429"}
    if path.startswith("/admin/"):
        expected |= {"403"}  # a wrong or missing admin token, or no admin API at all
    parameters = operation.get("parameters", [])
    ids = [p for p in parameters if p["in"] == "path"]
    if any(p["name"] not in FREE_FORM_PATH_PARAMETERS for p in ids):
        expected |= {"404", "422"}  # an unknown id, or one that is not a UUID
    if {parameter["in"] for parameter in parameters} & {"query", "header"}:
        expected |= {"422"}
    if "requestBody" in operation:
        expected |= {"400", "413", "415", "422"}
    return expected


def test_every_operation_documents_the_errors_it_can_answer_with(spec: dict[str, Any]) -> None:
    operations = all_operations(spec)
    assert {(method, path) for method, path, _ in operations} >= set(SUCCESS)
    undocumented = {
        f"{method.upper()} {path}": sorted(missing)
        for method, path, operation in operations
        if (missing := _expected_errors(method, path, operation) - set(operation["responses"]))
    }
    assert not undocumented, f"errors the spec does not document: {undocumented}"


def test_every_error_response_is_documented_with_the_error_body(spec: dict[str, Any]) -> None:
    wrong = {
        f"{method.upper()} {path} {code}": json_schema_ref(response)
        for method, path, operation in all_operations(spec)
        for code, response in operation["responses"].items()
        if code[0] in "45" and json_schema_ref(response) != ERROR_BODY
    }
    assert not wrong, f"error responses without the ErrorBody schema: {wrong}"


def test_every_operation_documents_exactly_one_success_status(spec: dict[str, Any]) -> None:
    ambiguous = {
        f"{method.upper()} {path}": codes
        for method, path, operation in all_operations(spec)
        if len(codes := sorted(c for c in operation["responses"] if c.startswith("2"))) != 1
    }
    assert not ambiguous, f"operations without exactly one 2xx: {ambiguous}"


def test_the_error_body_schema_has_detail_and_error(spec: dict[str, Any]) -> None:
    schema = component(spec, "ErrorBody")
    assert set(schema["required"]) == {"detail", "error"}
    assert json_types(schema["properties"]["detail"]) == {"string", "array"}
    info_ref = schema["properties"]["error"]["$ref"]
    info = component(spec, info_ref.rsplit("/", 1)[-1])
    assert set(info["required"]) == {"code", "message", "status"}
    assert json_types(info["properties"]["status"]) == {"integer"}


def test_validation_errors_are_documented_with_the_error_body_not_fastapis(
    spec: dict[str, Any],
) -> None:
    schemas = spec.get("components", {}).get("schemas", {})
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas
    assert "HTTPValidationError" not in json.dumps(spec)
    documented_422 = [
        json_schema_ref(operation["responses"]["422"])
        for operations in spec["paths"].values()
        for operation in operations.values()
        if "422" in operation["responses"]
    ]
    assert len(documented_422) >= 4
    assert set(documented_422) == {ERROR_BODY}


def test_every_path_id_is_documented_as_a_uuid(spec: dict[str, Any]) -> None:
    path_parameters = {
        f"{method.upper()} {path} {parameter['name']}": parameter
        for method, path, operation in all_operations(spec)
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "path"
        and parameter["name"] not in FREE_FORM_PATH_PARAMETERS | OPAQUE_PATH_IDS
    }
    assert len(path_parameters) >= 4, path_parameters
    assert "DELETE /admin/api-keys/{key_id} key_id" in path_parameters, sorted(path_parameters)
    not_uuids = {
        where: parameter["schema"]
        for where, parameter in path_parameters.items()
        if not parameter["required"]
        or parameter["schema"].get("type") != "string"
        or parameter["schema"].get("format") != "uuid"
    }
    assert not not_uuids, f"path ids not documented as required UUIDs: {not_uuids}"


def test_a_tenant_id_in_the_path_is_documented_as_a_required_string_not_a_uuid(
    spec: dict[str, Any],
) -> None:
    # Tenants are named by the operator (or a JWT's sub), not generated: any string.
    tenant_parameters = {
        f"{method.upper()} {path}": parameter
        for method, path, operation in all_operations(spec)
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "path" and parameter["name"] == "tenant_id"
    }
    assert set(tenant_parameters) >= {
        "PUT /admin/tenants/{tenant_id}/limits",
        "GET /admin/tenants/{tenant_id}/limits",
    }
    wrong = {
        where: parameter["schema"]
        for where, parameter in tenant_parameters.items()
        if not parameter["required"]
        or parameter["schema"].get("type") != "string"
        or "format" in parameter["schema"]
    }
    assert not wrong, f"tenant_id path parameters documented wrongly: {wrong}"


def test_a_context_id_in_the_path_is_documented_as_a_required_string_of_its_rule(
    spec: dict[str, Any],
) -> None:
    # Contexts are named by the client; the server checks the rule and answers 422.
    for method in ("get", "delete"):
        parameter = next(
            p
            for p in operation_of(spec, method, "/api/v1/contexts/{context_id}")["parameters"]
            if p["in"] == "path"
        )
        assert parameter["name"] == "context_id"
        assert parameter["required"] is True
        assert parameter["schema"]["pattern"] == "^[A-Za-z0-9._:-]{1,128}$"
    turn = component(spec, "ContextTurnOut")
    assert set(turn["required"]) == {"job_id", "prompt", "response", "created_at"}
