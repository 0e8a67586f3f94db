"""The live shim publishes an OpenAPI document a client can generate a working SDK from."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from rest_shim import rules
from server import paging, validation
from server.auth import principal as auth
from server.errors import InvalidArgument
from server.ratelimit import DEFAULT_TIERS
from server.service import access
from tests.e2e.harness import RestThread, running_rest, running_server, settings_for

ERROR_BODY = "#/components/schemas/ErrorBody"
API_OPERATIONS = [
    ("post", "/api/v1/agents"),
    ("get", "/api/v1/agents/{agent_id}"),
    ("post", "/api/v1/agents/{agent_id}/execute"),
    ("get", "/api/v1/jobs/{job_id}"),
]
# The token exchange: an API key in, a JWT out; a JWT is not accepted there.
TOKEN_OPERATION = ("post", "/api/v1/tokens")
ADMIN_OPERATIONS = [
    ("post", "/admin/api-keys"),
    ("get", "/admin/api-keys"),
    ("delete", "/admin/api-keys/{key_id}"),
    ("put", "/admin/tenants/{tenant_id}/limits"),
    ("get", "/admin/tenants/{tenant_id}/limits"),
]
API_KEY_HEADER = "X-API-Key"
ADMIN_KEY_HEADER = "X-Admin-API-Key"
# Path parameters that are not resource ids but names chosen by the operator: any
# string, and never a 404 (a tenant without limits of its own has the defaults).
FREE_FORM_PATH_PARAMETERS = {"tenant_id"}

# An API key's metadata (issue 5): never the key itself, except once when it is created.
API_KEY_FIELDS = {
    "id",
    "tenant_id",
    "name",
    "role",
    "scopes",
    "prefix",
    "created_at",
    "last_used_at",
    "expires_at",
    "revoked_at",
}
LIMITS_FIELDS = {"tenant_id", "tier", "rate_per_second", "burst", "max_unfinished_jobs"}

# The success status and body of each route of docs/contract.md §3 and of access control, with the
# fields promised in that body (all of them always present, some maybe null).
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
    ("post", "/admin/api-keys"): ("201", "CreatedApiKeyOut", API_KEY_FIELDS | {"key"}),
    ("get", "/admin/api-keys"): ("200", "ApiKeyList", {"data"}),
    ("put", "/admin/tenants/{tenant_id}/limits"): ("200", "TenantLimitsOut", LIMITS_FIELDS),
    ("get", "/admin/tenants/{tenant_id}/limits"): ("200", "TenantLimitsOut", LIMITS_FIELDS),
    ("post", "/api/v1/tokens"): (
        "200",
        "TokenOut",
        {"access_token", "token_type", "expires_in", "expires_at"},
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


def _header_key_schemes(spec: dict[str, Any], header: str) -> set[str]:
    """The names of the apiKey schemes that send a key in this header."""
    schemes = spec.get("components", {}).get("securitySchemes", {})
    return {
        name
        for name, scheme in schemes.items()
        if scheme.get("type") == "apiKey"
        and scheme.get("in") == "header"
        and str(scheme.get("name", "")).lower() == header.lower()
    }


def _security(spec: dict[str, Any], operation: dict[str, Any]) -> list[dict[str, Any]]:
    """The operation's security alternatives; `[{}]` when it needs none."""
    return operation.get("security", spec.get("security")) or [{}]


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


def test_the_spec_declares_the_api_key_and_the_admin_key_header_schemes(
    spec: dict[str, Any],
) -> None:
    schemes = spec.get("components", {}).get("securitySchemes", {})
    assert _header_key_schemes(spec, API_KEY_HEADER), schemes
    assert _header_key_schemes(spec, ADMIN_KEY_HEADER), (
        f"no apiKey scheme sends the admin token in {ADMIN_KEY_HEADER}: {schemes}"
    )


def test_every_api_operation_accepts_the_bearer_token_or_an_api_key_and_nothing_less(
    spec: dict[str, Any],
) -> None:
    bearer = _bearer_schemes(spec)
    credential = bearer | _header_key_schemes(spec, API_KEY_HEADER)
    api = [
        (m, p, op)
        for m, p, op in _all_operations(spec)
        if p.startswith("/api/") and (m, p) != TOKEN_OPERATION
    ]
    assert {(m, p) for m, p, _ in api} >= set(API_OPERATIONS)
    weak, no_bearer = {}, {}
    for method, path, operation in api:
        security = _security(spec, operation)
        # Each alternative must need a credential; an empty one makes auth optional.
        if not all(set(alternative) & credential for alternative in security):
            weak[f"{method.upper()} {path}"] = security
        # vex-api clients send a bearer JWT: it must stay one of the ways in.
        if not any(set(alternative) & bearer for alternative in security):
            no_bearer[f"{method.upper()} {path}"] = security
    assert not weak, f"API operations that do not require a credential: {weak}"
    assert not no_bearer, f"API operations that do not accept the bearer token: {no_bearer}"


def test_the_token_exchange_requires_an_api_key(spec: dict[str, Any]) -> None:
    api_key = _header_key_schemes(spec, API_KEY_HEADER)
    security = _security(spec, _operation(spec, *TOKEN_OPERATION))
    assert all(set(alternative) & api_key for alternative in security), (
        f"POST /api/v1/tokens is documented as needing {security}, not an {API_KEY_HEADER}"
    )


def test_every_admin_operation_requires_the_admin_key_header(spec: dict[str, Any]) -> None:
    admin_key = _header_key_schemes(spec, ADMIN_KEY_HEADER)
    admin = [(m, p, op) for m, p, op in _all_operations(spec) if p.startswith("/admin/")]
    assert {(m, p) for m, p, _ in admin} >= set(ADMIN_OPERATIONS)
    weak = {
        f"{method.upper()} {path}": _security(spec, operation)
        for method, path, operation in admin
        if not all(set(alt) & admin_key for alt in _security(spec, operation))
    }
    schemes = spec.get("components", {}).get("securitySchemes", {})
    assert not weak, (
        f"admin operations not documented as needing {ADMIN_KEY_HEADER}: {weak}; "
        f"the schemes are {schemes}"
    )


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
    operations = _all_operations(spec)
    assert {(method, path) for method, path, _ in operations} >= set(SUCCESS)
    undocumented = {
        f"{method.upper()} {path}": sorted(missing)
        for method, path, operation in operations
        if (missing := _expected_errors(method, path, operation) - set(operation["responses"]))
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
        if parameter["in"] == "path" and parameter["name"] not in FREE_FORM_PATH_PARAMETERS
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
        for method, path, operation in _all_operations(spec)
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


def _property(spec: dict[str, Any], model: str, name: str) -> dict[str, Any]:
    """A body property's schema; the non-null one of a nullable property."""
    schema: dict[str, Any] = _component(spec, model)["properties"][name]
    return next((s for s in schema.get("anyOf", []) if s.get("type") != "null"), schema)


def _parameter(spec: dict[str, Any], method: str, path: str, name: str) -> dict[str, Any]:
    parameters = _operation(spec, method, path)["parameters"]
    schema: dict[str, Any] = next(p["schema"] for p in parameters if p["name"] == name)
    return schema


def test_the_documented_limits_are_the_ones_the_server_checks(spec: dict[str, Any]) -> None:
    # The shim cannot import the server, so it states the limits again; they must agree.
    assert rules.NAME_CHARACTERS == validation.NAME_CHARACTERS
    assert (rules.MIN_NAME_CHARS, rules.MAX_NAME_CHARS) == (
        validation.MIN_NAME_CHARS,
        validation.MAX_NAME_CHARS,
    )
    assert (rules.MIN_ROLE_CHARS, rules.MAX_ROLE_CHARS) == (
        validation.MIN_ROLE_CHARS,
        validation.MAX_ROLE_CHARS,
    )
    assert (rules.MIN_PROMPT_CHARS, rules.MAX_PROMPT_CHARS) == (
        validation.MIN_PROMPT_CHARS,
        validation.MAX_PROMPT_CHARS,
    )
    assert rules.MAX_REQUEST_KEY_CHARS == validation.MAX_REQUEST_KEY_CHARS
    assert rules.MAX_TENANT_CHARS == auth.MAX_TENANT_CHARS
    assert rules.ROLES == auth.ROLES
    assert tuple(DEFAULT_TIERS) == rules.DEFAULT_TIERS
    for limit, documented in [
        (validation.MAX_DEPTH_LIMIT, _property(spec, "CreateAgentBody", "max_depth")),
        (validation.MAX_DEBATE_ROUNDS, _property(spec, "ExecuteBody", "max_debate_rounds")),
        (access.MAX_LIFETIME_S, _property(spec, "CreateApiKeyBody", "lifetime_seconds")),
        (paging.MAX_PAGE_SIZE, _parameter(spec, "get", "/api/v1/agents", "page_size")),
        (paging.MAX_PAGE_SIZE, _parameter(spec, "get", "/api/v1/jobs", "page_size")),
    ]:
        assert documented["maximum"] == limit and type(documented["maximum"]) is int, documented
    assert _property(spec, "ExecuteBody", "max_debate_rounds")["minimum"] == (
        validation.MIN_DEBATE_ROUNDS
    )
    scopes = _property(spec, "CreateApiKeyBody", "scopes")
    assert (scopes["items"]["enum"], scopes["minItems"]) == (list(access.SCOPES), 1)
    assert _property(spec, "CreateApiKeyBody", "role")["enum"] == list(auth.ROLES)
    assert _property(spec, "TenantLimitsBody", "tier")["enum"] == sorted(DEFAULT_TIERS)
    for where in ("PUT", "GET"):
        tenant = _parameter(spec, where.lower(), "/admin/tenants/{tenant_id}/limits", "tenant_id")
        assert tenant["maxLength"] == auth.MAX_TENANT_CHARS
    # A header is sent or not; it is never null.
    last_event_id = _parameter(spec, "get", "/api/v1/jobs/{job_id}/stream", "last-event-id")
    assert last_event_id == {"type": "integer", "title": "Last-Event-Id"}


def test_the_white_space_the_patterns_trim_is_what_python_strips() -> None:
    everywhere = [code for code in range(sys.maxunicode + 1) if chr(code).isspace()]
    pattern = re.compile(f"[{rules.WHITE_SPACE}]")
    assert [
        code for code in range(sys.maxunicode + 1) if pattern.fullmatch(chr(code))
    ] == everywhere


def _accepted(accepts: Any, text: str) -> bool:
    try:
        accepts(text)
    except InvalidArgument:
        return False
    return True


# Texts around each limit: padded with white space Python strips (and JSON Schema's `\s`
# does not match: U+0085, U+001C), NUL, a character a name may not hold.
_PADS = ["", " ", "\t\n", "\x85", "\x1c", "\u3000"]


def _texts(low: int, high: int, fill: str) -> list[str]:
    cores = [fill * n for n in {0, 1, low - 1, low, high, high + 1} if n >= 0]
    cores += [fill + " " + fill, fill + "\x00" + fill, "\x00", fill + "!" + fill]
    return [pad + core + pad for core in cores for pad in _PADS]


@pytest.mark.parametrize(
    ("model", "field", "accepts", "low", "high"),
    [
        pytest.param(
            "CreateAgentBody",
            "name",
            lambda v: validation.agent_spec(name=v, role="abc", max_depth=None, spawn_shadow=False),
            validation.MIN_NAME_CHARS,
            validation.MAX_NAME_CHARS,
            id="agent-name",
        ),
        pytest.param(
            "CreateAgentBody",
            "role",
            lambda v: validation.agent_spec(name="a", role=v, max_depth=None, spawn_shadow=False),
            validation.MIN_ROLE_CHARS,
            validation.MAX_ROLE_CHARS,
            id="agent-role",
        ),
        pytest.param(
            "ExecuteBody",
            "prompt",
            lambda v: validation.execution_spec(
                prompt=v,
                context_id=None,
                enable_adversarial=False,
                enable_self_correction=False,
                max_debate_rounds=None,
            ),
            validation.MIN_PROMPT_CHARS,
            validation.MAX_PROMPT_CHARS,
            id="prompt",
        ),
        pytest.param(
            "ExecuteBody",
            "request_id",
            lambda v: validation.request_key(v),
            1,
            validation.MAX_REQUEST_KEY_CHARS,
            id="request-id",
        ),
    ],
)
def test_a_documented_text_pattern_matches_exactly_what_the_server_accepts(
    spec: dict[str, Any], model: str, field: str, accepts: Any, low: int, high: int
) -> None:
    pattern = re.compile(_property(spec, model, field)["pattern"])
    wrong = [
        (text[:20], len(text))
        for text in _texts(low, high, "a")
        if bool(pattern.search(text)) != _accepted(accepts, text)
    ]
    assert not wrong, wrong
