"""Every error of docs/contract.md §1-§3 over HTTP: status, detail, error.code/message/status."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import func, select

from server.store.models import Agent, Job
from tests.e2e.harness import (
    SECRET,
    RestThread,
    ServerThread,
    running_rest,
    running_server,
    settings_for,
    token,
)

MIB = 1024 * 1024
VALID_AGENT = {"name": "helper", "role": "You are a helpful assistant."}
SOME_ID = "6f1c2a4e-0000-4000-8000-000000000000"
MISSING = object()  # a field left out of the request body


def _assert_error(
    response: httpx.Response, status: int, code: str, message: str | None = None
) -> dict[str, Any]:
    """The one error body of docs/contract.md §2, with a string `detail` equal to the message."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"detail", "error"}, body
    assert set(body["error"]) == {"code", "message", "status"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["status"] == status, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    if status != 422:
        assert body["detail"] == body["error"]["message"], body
    if message is not None:
        assert body["error"]["message"] == message, body
    return body


def _assert_validation_error(
    response: httpx.Response, violations: list[tuple[list[str], str | None]]
) -> None:
    """422 with FastAPI's detail list: each entry's loc and (when given) msg, in order."""
    body = _assert_error(response, 422, "VALIDATION_ERROR")
    detail = body["detail"]
    assert isinstance(detail, list), body
    for entry in detail:
        assert set(entry) == {"loc", "msg", "type"}, entry
        assert isinstance(entry["msg"], str) and entry["msg"], entry
        assert isinstance(entry["type"], str) and entry["type"], entry
    assert [entry["loc"] for entry in detail] == [loc for loc, _ in violations], body
    for entry, (_, msg) in zip(detail, violations, strict=True):
        if msg is not None:
            assert entry["msg"] == msg, body
    assert body["error"]["message"] == detail[0]["msg"], body


def _rows(server: ServerThread) -> tuple[int, int]:
    """How many agents and jobs the database holds."""
    with server.engine.connect() as connection:
        return (
            int(connection.execute(select(func.count()).select_from(Agent)).scalar_one()),
            int(connection.execute(select(func.count()).select_from(Job)).scalar_one()),
        )


@contextmanager
def _nothing_stored(server: ServerThread) -> Iterator[None]:
    """Asserts that the block stored no agent and no job."""
    before = _rows(server)
    yield
    assert _rows(server) == before, "a refused request stored something"


def _signed(claims: dict[str, object], *, secret: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=alg)


def _claims(**changes: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": "alice",
        "role": "user",
        "iss": "vex-api",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


# One server and shim for the whole module: every test here is a refused request
# (checked to store nothing) or makes its own agents, so they cannot disturb each other.
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """The embedded default (a SQLite file, in-process workers) shared by this module."""
    database = tmp_path_factory.mktemp("rest-errors") / "agentq.db"
    with running_server(
        settings_for(database_url=f"sqlite:///{database}"), in_process_workers=True
    ) as started:
        yield started


@pytest.fixture(scope="module")
def shim(server: ServerThread) -> Iterator[RestThread]:
    """The REST shim over real HTTP in front of the shared server."""
    with running_rest(f"127.0.0.1:{server.port}") as started:
        yield started


@pytest.fixture
def anonymous(shim: RestThread) -> Iterator[httpx.Client]:
    """An HTTP client of the shim with no credentials."""
    with httpx.Client(base_url=shim.url, timeout=10) as client:
        yield client


@pytest.fixture
def http(shim: RestThread) -> Iterator[httpx.Client]:
    """An HTTP client of the shim carrying a valid user token for tenant alice."""
    headers = {"Authorization": f"Bearer {token('alice')}"}
    with httpx.Client(base_url=shim.url, timeout=10, headers=headers) as client:
        yield client


@pytest.fixture(scope="module")
def agent_id(shim: RestThread) -> str:
    """An agent of tenant alice, created over REST."""
    headers = {"Authorization": f"Bearer {token('alice')}"}
    response = httpx.post(
        f"{shim.url}/api/v1/agents", json=VALID_AGENT, headers=headers, timeout=10
    )
    assert response.status_code == 201, response.text
    created: str = response.json()["id"]
    return created


# --- 401 ---------------------------------------------------------------------------------

BAD_CREDENTIALS = [
    pytest.param(None, "Missing Authorization header", id="no-header"),
    pytest.param("Basic x", "Invalid Authorization header format", id="basic"),
    pytest.param("Bearer", "Invalid Authorization header format", id="bearer-alone"),
    pytest.param("Bearer not-a-jwt", "Invalid token", id="not-a-jwt"),
    pytest.param(
        "Bearer " + _signed(_claims(exp=int(time.time()) - 3600)), "Token expired", id="expired"
    ),
    pytest.param(
        "Bearer " + _signed(_claims(), secret="another-secret-" + "x" * 32),
        "Token validation failed: InvalidSignature",
        id="wrong-secret",
    ),
    pytest.param(
        "Bearer " + _signed(_claims(iss="someone-else")),
        "Token validation failed: InvalidIssuer",
        id="wrong-issuer",
    ),
    pytest.param(
        "Bearer " + _signed(_claims(aud="elsewhere")),
        "Token validation failed: InvalidAudience",
        id="audience",
    ),
    pytest.param(
        "Bearer " + _signed(_claims(), alg="HS512"),
        "Token validation failed: InvalidAlgorithm",
        id="hs512",
    ),
    pytest.param(
        "Bearer " + _signed(_claims(role=None)),
        "Token validation failed: MissingClaim(role)",
        id="no-role",
    ),
    pytest.param(
        "Bearer " + _signed(_claims(sub=None)),
        "Token validation failed: MissingClaim(sub)",
        id="no-sub",
    ),
    pytest.param(
        "Bearer " + _signed(_claims(tenant_id="t" * 256)),
        "Token validation failed: MissingClaim(tenant_id)",
        id="tenant-over-255",
    ),
    pytest.param(
        "Bearer " + _signed(_claims(sub="s" * 256)),
        "Token validation failed: MissingClaim(tenant_id)",
        id="sub-as-tenant-over-255",
    ),
]


def _auth_headers(header: str | None) -> dict[str, str]:
    return {} if header is None else {"Authorization": header}


@pytest.mark.parametrize(("header", "message"), BAD_CREDENTIALS)
def test_bad_credentials_on_reading_a_job_are_401_with_the_contract_message(
    anonymous: httpx.Client, header: str | None, message: str
) -> None:
    response = anonymous.get(f"/api/v1/jobs/{SOME_ID}", headers=_auth_headers(header))
    _assert_error(response, 401, "UNAUTHORIZED", message)


@pytest.mark.parametrize(("header", "message"), BAD_CREDENTIALS)
def test_bad_credentials_on_creating_an_agent_are_401_and_store_nothing(
    anonymous: httpx.Client, server: ServerThread, header: str | None, message: str
) -> None:
    with _nothing_stored(server):
        response = anonymous.post("/api/v1/agents", json=VALID_AGENT, headers=_auth_headers(header))
        _assert_error(response, 401, "UNAUTHORIZED", message)


TWO_AUTHORIZATIONS = [
    pytest.param([token("alice"), token("bob")], id="two-tenants"),
    pytest.param([token("alice"), token("alice")], id="the-same-token-twice"),
    pytest.param([token("alice"), "not-a-jwt"], id="a-good-and-a-bad-one"),
]


@pytest.mark.parametrize("tokens", TWO_AUTHORIZATIONS)
def test_two_authorization_headers_are_refused_with_401_on_either_lane(
    anonymous: httpx.Client, server: ServerThread, agent_id: str, tokens: list[str]
) -> None:
    headers = [("Authorization", f"Bearer {sent}") for sent in tokens]
    with _nothing_stored(server):
        for response in (
            anonymous.get(f"/api/v1/agents/{agent_id}", headers=headers),  # the fast lane
            anonymous.get("/api/v1/agents", headers=headers),
            anonymous.post("/api/v1/agents", json=VALID_AGENT, headers=headers),
            anonymous.post(
                f"/api/v1/agents/{agent_id}/execute", json={"prompt": "hi"}, headers=headers
            ),
        ):
            _assert_error(response, 401, "UNAUTHORIZED", "Invalid Authorization header format")


# --- 403 ---------------------------------------------------------------------------------


def test_the_agent_role_may_not_create_agents(
    anonymous: httpx.Client, server: ServerThread
) -> None:
    with _nothing_stored(server):
        headers = {"Authorization": f"Bearer {token('alice', role='agent')}"}
        response = anonymous.post("/api/v1/agents", json=VALID_AGENT, headers=headers)
        _assert_error(response, 403, "FORBIDDEN", "Insufficient permissions")


def test_an_unknown_role_may_not_read_jobs(anonymous: httpx.Client) -> None:
    headers = {"Authorization": f"Bearer {token('alice', role='viewer')}"}
    response = anonymous.get(f"/api/v1/jobs/{SOME_ID}", headers=headers)
    _assert_error(response, 403, "FORBIDDEN", "Insufficient permissions")


# --- 404 ---------------------------------------------------------------------------------


def test_an_unknown_agent_is_not_found(http: httpx.Client, server: ServerThread) -> None:
    with _nothing_stored(server):
        _assert_error(http.get(f"/api/v1/agents/{SOME_ID}"), 404, "NOT_FOUND", "Agent not found")
        executed = http.post(f"/api/v1/agents/{SOME_ID}/execute", json={"prompt": "hi"})
        _assert_error(executed, 404, "NOT_FOUND", "Agent not found")


def test_an_unknown_job_is_not_found_by_its_id(http: httpx.Client) -> None:
    response = http.get(f"/api/v1/jobs/{SOME_ID}")
    _assert_error(response, 404, "NOT_FOUND", f"Job {SOME_ID} not found")


def test_another_tenants_agent_and_job_answer_exactly_like_unknown_ids(
    http: httpx.Client, anonymous: httpx.Client, server: ServerThread, agent_id: str
) -> None:
    before = _rows(server)
    acked = http.post(f"/api/v1/agents/{agent_id}/execute", json={"prompt": "hi"})
    assert acked.status_code == 202, acked.text
    job_id = acked.json()["job_id"]
    unknown_job = str(uuid.uuid4())
    bob = {"Authorization": f"Bearer {token('bob')}"}

    for theirs, unknown in [
        (
            anonymous.get(f"/api/v1/agents/{agent_id}", headers=bob),
            anonymous.get(f"/api/v1/agents/{SOME_ID}", headers=bob),
        ),
        (
            anonymous.post(
                f"/api/v1/agents/{agent_id}/execute", json={"prompt": "hi"}, headers=bob
            ),
            anonymous.post(f"/api/v1/agents/{SOME_ID}/execute", json={"prompt": "hi"}, headers=bob),
        ),
    ]:
        _assert_error(theirs, 404, "NOT_FOUND", "Agent not found")
        assert theirs.json() == unknown.json()

    theirs_job = anonymous.get(f"/api/v1/jobs/{job_id}", headers=bob)
    unknown_job_response = anonymous.get(f"/api/v1/jobs/{unknown_job}", headers=bob)
    _assert_error(theirs_job, 404, "NOT_FOUND", f"Job {job_id} not found")
    _assert_error(unknown_job_response, 404, "NOT_FOUND", f"Job {unknown_job} not found")
    # Only alice's own job was stored; bob's attempts stored nothing.
    assert _rows(server) == (before[0], before[1] + 1)


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v2/agents", "/"])
def test_an_unknown_route_is_not_found(anonymous: httpx.Client, path: str) -> None:
    _assert_error(anonymous.get(path), 404, "NOT_FOUND")


# --- 405 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/api/v1/agents", "GET, POST"),
        ("DELETE", "/api/v1/agents", "GET, POST"),
        # A canonical id (the fast lane's paths) and an upper-case one (FastAPI's only).
        ("PUT", f"/api/v1/agents/{SOME_ID}", "DELETE, GET"),
        ("PUT", f"/api/v1/agents/{SOME_ID.upper()}", "DELETE, GET"),
        ("POST", f"/api/v1/agents/{SOME_ID}", "DELETE, GET"),
        ("GET", f"/api/v1/agents/{SOME_ID}/execute", "POST"),
        ("PUT", "/admin/api-keys", "GET, POST"),
        ("POST", "/admin/tenants/t/limits", "GET, PUT"),
    ],
)
def test_a_wrong_method_is_405_with_every_method_of_the_path_in_allow(
    anonymous: httpx.Client, method: str, path: str, allow: str
) -> None:
    response = anonymous.request(method, path)
    _assert_error(response, 405, "METHOD_NOT_ALLOWED", "Method not allowed")
    assert response.headers["allow"] == allow, response.headers


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/v1/agents", "POST"),
        ("PUT", f"/api/v1/jobs/{SOME_ID}", "GET"),
        ("GET", f"/api/v1/agents/{SOME_ID}/execute", "POST"),
    ],
)
def test_a_wrong_method_on_a_known_route_is_405_with_allow(
    http: httpx.Client, method: str, path: str, allowed: str
) -> None:
    response = http.request(method, path)
    _assert_error(response, 405, "METHOD_NOT_ALLOWED")
    allow = {m.strip() for m in response.headers.get("allow", "").split(",")}
    assert allowed in allow, response.headers
    assert method not in allow, response.headers


# --- 400 ---------------------------------------------------------------------------------

NOT_A_JSON_OBJECT = [
    pytest.param(b'{"name": "helper", "role": ', id="malformed"),
    pytest.param(b"[]", id="array"),
    pytest.param(b'[{"name": "helper", "role": "abc"}]', id="array-of-object"),
    pytest.param(b'"helper"', id="string"),
    pytest.param(b"42", id="number"),
    pytest.param(b"null", id="null"),
    pytest.param(b"", id="empty"),
    pytest.param(b'{"name": "\xff\xfe", "role": "abc", "prompt": "hi"}', id="invalid-utf8"),
    pytest.param(b'{"name": "x", "z": ' + b"[" * 5000 + b"]" * 5000 + b"}", id="nested-5000-deep"),
]


@pytest.mark.parametrize("content", NOT_A_JSON_OBJECT)
def test_a_body_that_is_not_a_parseable_json_object_is_400_on_create(
    http: httpx.Client, server: ServerThread, content: bytes
) -> None:
    with _nothing_stored(server):
        headers = {"Content-Type": "application/json"}
        response = http.post("/api/v1/agents", content=content, headers=headers)
        _assert_error(response, 400, "BAD_REQUEST")


@pytest.mark.parametrize("content", NOT_A_JSON_OBJECT)
def test_a_body_that_is_not_a_parseable_json_object_is_400_on_execute(
    http: httpx.Client, server: ServerThread, agent_id: str, content: bytes
) -> None:
    with _nothing_stored(server):
        headers = {"Content-Type": "application/json"}
        response = http.post(f"/api/v1/agents/{agent_id}/execute", content=content, headers=headers)
        _assert_error(response, 400, "BAD_REQUEST")


# --- 413 ---------------------------------------------------------------------------------


def _agent_body_of(size: int) -> bytes:
    """A JSON agent body of exactly `size` bytes (its name is far too long)."""
    head, tail = b'{"role": "abc", "name": "', b'"}'
    body = head + b"x" * (size - len(head) - len(tail)) + tail
    assert len(body) == size
    return body


def test_a_body_over_one_mib_is_413(http: httpx.Client, server: ServerThread) -> None:
    with _nothing_stored(server):
        headers = {"Content-Type": "application/json"}
        response = http.post("/api/v1/agents", content=_agent_body_of(MIB + 1), headers=headers)
        _assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_a_chunked_body_over_one_mib_is_413(http: httpx.Client, server: ServerThread) -> None:
    with _nothing_stored(server):
        body = _agent_body_of(MIB + 1)
        chunks = iter([body[i : i + 64 * 1024] for i in range(0, len(body), 64 * 1024)])
        headers = {"Content-Type": "application/json"}
        response = http.post("/api/v1/agents", content=chunks, headers=headers)
        assert "content-length" not in response.request.headers
        _assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_a_body_of_exactly_one_mib_is_judged_on_its_fields(
    http: httpx.Client, server: ServerThread
) -> None:
    with _nothing_stored(server):
        headers = {"Content-Type": "application/json"}
        response = http.post("/api/v1/agents", content=_agent_body_of(MIB), headers=headers)
        _assert_validation_error(
            response,
            [(["body", "name"], "Invalid name: must be 1 to 100 characters after trimming")],
        )


def test_an_execute_body_of_exactly_one_mib_is_judged_on_its_prompt(
    http: httpx.Client, server: ServerThread, agent_id: str
) -> None:
    with _nothing_stored(server):
        head, tail = b'{"prompt": "', b'"}'
        body = head + b"p" * (MIB - len(head) - len(tail)) + tail
        headers = {"Content-Type": "application/json"}
        response = http.post(f"/api/v1/agents/{agent_id}/execute", content=body, headers=headers)
        _assert_validation_error(
            response,
            [(["body", "prompt"], "Invalid prompt: must be 1 to 50000 characters after trimming")],
        )


# --- 415 ---------------------------------------------------------------------------------

NOT_JSON_MEDIA = [
    pytest.param("text/plain", b'{"name": "helper", "role": "abc", "prompt": "hi"}', id="text"),
    pytest.param("application/x-www-form-urlencoded", b"name=helper&role=abc&prompt=hi", id="form"),
]


@pytest.mark.parametrize(("content_type", "content"), NOT_JSON_MEDIA)
def test_a_body_that_is_not_json_media_is_415_on_create(
    http: httpx.Client, server: ServerThread, content_type: str, content: bytes
) -> None:
    with _nothing_stored(server):
        headers = {"Content-Type": content_type}
        response = http.post("/api/v1/agents", content=content, headers=headers)
        _assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize(("content_type", "content"), NOT_JSON_MEDIA)
def test_a_body_that_is_not_json_media_is_415_on_execute(
    http: httpx.Client, server: ServerThread, agent_id: str, content_type: str, content: bytes
) -> None:
    with _nothing_stored(server):
        headers = {"Content-Type": content_type}
        response = http.post(f"/api/v1/agents/{agent_id}/execute", content=content, headers=headers)
        _assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_a_body_without_a_content_type_is_unsupported_media_type(
    http: httpx.Client, server: ServerThread
) -> None:
    # Browsers may send a body without a JSON content type across origins;
    # only a declared JSON body is read, which also guards against CSRF.
    before = _rows(server)
    response = http.post("/api/v1/agents", content=b'{"name": "helper", "role": "abc"}')
    assert "content-type" not in response.request.headers
    assert response.status_code == 415, response.text
    message = "Content-Type must be application/json"
    assert response.json() == {
        "detail": message,
        "error": {"code": "UNSUPPORTED_MEDIA_TYPE", "message": message, "status": 415},
    }
    assert _rows(server) == before


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd.api+json"],
)
def test_json_media_types_with_parameters_or_suffixes_are_accepted(
    http: httpx.Client, content_type: str
) -> None:
    content = b'{"name": "helper", "role": "abc"}'
    response = http.post("/api/v1/agents", content=content, headers={"Content-Type": content_type})
    assert response.status_code == 201, response.text


# --- 422 ---------------------------------------------------------------------------------

INVALID_AGENTS = [
    pytest.param({"name": MISSING}, "name", "Field required", id="name-missing"),
    pytest.param({"role": MISSING}, "role", "Field required", id="role-missing"),
    pytest.param({"name": 42}, "name", None, id="name-int"),
    pytest.param({"max_depth": "3"}, "max_depth", None, id="max-depth-string"),
    pytest.param({"max_depth": 3.5}, "max_depth", None, id="max-depth-float"),
    pytest.param({"max_depth": True}, "max_depth", None, id="max-depth-bool"),
    pytest.param({"name": None}, "name", None, id="name-null"),
    pytest.param({"spawn_shadow": "yes"}, "spawn_shadow", None, id="spawn-shadow-string"),
    pytest.param(
        {"max_depth": 11}, "max_depth", "max_depth exceeds safety limit of 10", id="max-depth-11"
    ),
    pytest.param(
        {"max_depth": 10**20},
        "max_depth",
        "max_depth exceeds safety limit of 10",
        id="max-depth-huge",
    ),
    pytest.param(
        {"max_depth": -1}, "max_depth", "Invalid max_depth: must not be negative", id="depth-neg"
    ),
    pytest.param(
        {"max_depth": -(10**20)},
        "max_depth",
        "Invalid max_depth: must not be negative",
        id="max-depth-huge-negative",
    ),
    pytest.param(
        {"name": "bad!"},
        "name",
        "Invalid name: only letters, digits, spaces, '-' and '_' are allowed",
        id="name-bad-chars",
    ),
    pytest.param(
        {"name": "n" * 101},
        "name",
        "Invalid name: must be 1 to 100 characters after trimming",
        id="name-101",
    ),
    pytest.param(
        {"name": "   "},
        "name",
        "Invalid name: must be 1 to 100 characters after trimming",
        id="name-blank",
    ),
    pytest.param(
        {"role": "ab"},
        "role",
        "Invalid role: must be 3 to 500 characters after trimming",
        id="role-2",
    ),
    pytest.param(
        {"role": "r" * 501},
        "role",
        "Invalid role: must be 3 to 500 characters after trimming",
        id="role-501",
    ),
]


@pytest.mark.parametrize(("changes", "field", "msg"), INVALID_AGENTS)
def test_an_invalid_agent_field_is_422_and_stores_nothing(
    http: httpx.Client,
    server: ServerThread,
    changes: dict[str, Any],
    field: str,
    msg: str | None,
) -> None:
    with _nothing_stored(server):
        body = {k: v for k, v in {**VALID_AGENT, **changes}.items() if v is not MISSING}
        response = http.post("/api/v1/agents", json=body)
        _assert_validation_error(response, [(["body", field], msg)])


def test_every_invalid_agent_field_is_reported_at_once(
    http: httpx.Client, server: ServerThread
) -> None:
    with _nothing_stored(server):
        response = http.post("/api/v1/agents", json={"name": "bad!", "role": "ab", "max_depth": 11})
        _assert_validation_error(
            response,
            [
                (
                    ["body", "name"],
                    "Invalid name: only letters, digits, spaces, '-' and '_' are allowed",
                ),
                (["body", "role"], "Invalid role: must be 3 to 500 characters after trimming"),
                (["body", "max_depth"], "max_depth exceeds safety limit of 10"),
            ],
        )


PROMPT_RULE = "Invalid prompt: must be 1 to 50000 characters after trimming"
ROUNDS_RULE = "Invalid max_debate_rounds: must be between 1 and 10"

INVALID_EXECUTIONS = [
    pytest.param({}, "prompt", "Field required", id="prompt-missing"),
    pytest.param({"prompt": 5}, "prompt", None, id="prompt-int"),
    pytest.param({"prompt": "   "}, "prompt", PROMPT_RULE, id="prompt-blank"),
    pytest.param({"prompt": "p" * 50_001}, "prompt", PROMPT_RULE, id="prompt-50001"),
    pytest.param(
        {"prompt": "hi", "max_debate_rounds": 0}, "max_debate_rounds", ROUNDS_RULE, id="rounds-0"
    ),
    pytest.param(
        {"prompt": "hi", "max_debate_rounds": 11}, "max_debate_rounds", ROUNDS_RULE, id="rounds-11"
    ),
    pytest.param(
        {"prompt": "hi", "max_debate_rounds": 10**20},
        "max_debate_rounds",
        ROUNDS_RULE,
        id="rounds-huge",
    ),
    pytest.param(
        {"prompt": "hi", "enable_adversarial": "yes"}, "enable_adversarial", None, id="adv-yes"
    ),
    pytest.param(
        {"prompt": "hi", "enable_self_correction": 1},
        "enable_self_correction",
        None,
        id="self-correction-int",
    ),
    pytest.param({"prompt": "hi", "context_id": 7}, "context_id", None, id="context-id-int"),
]


@pytest.mark.parametrize(("body", "field", "msg"), INVALID_EXECUTIONS)
def test_an_invalid_execute_field_is_422_and_stores_no_job(
    http: httpx.Client,
    server: ServerThread,
    agent_id: str,
    body: dict[str, Any],
    field: str,
    msg: str | None,
) -> None:
    with _nothing_stored(server):
        response = http.post(f"/api/v1/agents/{agent_id}/execute", json=body)
        _assert_validation_error(response, [(["body", field], msg)])


REQUEST_ID_RULE = "Invalid request_id: must be 1 to 255 printable ASCII characters"


def test_a_bad_idempotency_key_is_422_located_in_its_header(
    http: httpx.Client, server: ServerThread, agent_id: str
) -> None:
    with _nothing_stored(server):
        response = http.post(
            f"/api/v1/agents/{agent_id}/execute",
            json={"prompt": "hi", "request_id": "fine"},
            headers={"Idempotency-Key": "k" * 256},
        )
        _assert_validation_error(response, [(["header", "idempotency-key"], REQUEST_ID_RULE)])


def test_a_bad_request_id_in_the_body_is_422_located_in_the_body(
    http: httpx.Client, server: ServerThread, agent_id: str
) -> None:
    with _nothing_stored(server):
        response = http.post(
            f"/api/v1/agents/{agent_id}/execute", json={"prompt": "hi", "request_id": "k" * 256}
        )
        _assert_validation_error(response, [(["body", "request_id"], REQUEST_ID_RULE)])


@pytest.mark.parametrize("bad_id", ["nope", "1234", f"{SOME_ID}x", "not a uuid"])
def test_a_path_id_that_is_not_a_uuid_is_422(
    http: httpx.Client, server: ServerThread, bad_id: str
) -> None:
    with _nothing_stored(server):
        _assert_validation_error(
            http.get(f"/api/v1/agents/{bad_id}"), [(["path", "agent_id"], None)]
        )
        executed = http.post(f"/api/v1/agents/{bad_id}/execute", json={"prompt": "hi"})
        _assert_validation_error(executed, [(["path", "agent_id"], None)])
        _assert_validation_error(http.get(f"/api/v1/jobs/{bad_id}"), [(["path", "job_id"], None)])
