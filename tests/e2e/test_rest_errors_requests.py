"""Errors of docs/contract.md §1-§3 over HTTP, of the request itself: a wrong method (405),
a body that is not a JSON object (400), too large (413) or not JSON at all (415)."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.harness import ServerThread
from tests.e2e.rest_errors_helpers import (
    SOME_ID,
    assert_error,
    assert_validation_error,
    nothing_stored,
    stored_rows,
)

MIB = 1024 * 1024


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
    assert_error(response, 405, "METHOD_NOT_ALLOWED", "Method not allowed")
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
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
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
    with nothing_stored(server):
        headers = {"Content-Type": "application/json"}
        response = http.post("/api/v1/agents", content=content, headers=headers)
        assert_error(response, 400, "BAD_REQUEST")


@pytest.mark.parametrize("content", NOT_A_JSON_OBJECT)
def test_a_body_that_is_not_a_parseable_json_object_is_400_on_execute(
    http: httpx.Client, server: ServerThread, agent_id: str, content: bytes
) -> None:
    with nothing_stored(server):
        headers = {"Content-Type": "application/json"}
        response = http.post(f"/api/v1/agents/{agent_id}/execute", content=content, headers=headers)
        assert_error(response, 400, "BAD_REQUEST")


# --- 413 ---------------------------------------------------------------------------------


def _agent_body_of(size: int) -> bytes:
    """A JSON agent body of exactly `size` bytes (its name is far too long)."""
    head, tail = b'{"role": "abc", "name": "', b'"}'
    body = head + b"x" * (size - len(head) - len(tail)) + tail
    assert len(body) == size
    return body


def test_a_body_over_one_mib_is_413(http: httpx.Client, server: ServerThread) -> None:
    with nothing_stored(server):
        headers = {"Content-Type": "application/json"}
        response = http.post("/api/v1/agents", content=_agent_body_of(MIB + 1), headers=headers)
        assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_a_chunked_body_over_one_mib_is_413(http: httpx.Client, server: ServerThread) -> None:
    with nothing_stored(server):
        body = _agent_body_of(MIB + 1)
        chunks = iter([body[i : i + 64 * 1024] for i in range(0, len(body), 64 * 1024)])
        headers = {"Content-Type": "application/json"}
        response = http.post("/api/v1/agents", content=chunks, headers=headers)
        assert "content-length" not in response.request.headers
        assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_a_body_of_exactly_one_mib_is_judged_on_its_fields(
    http: httpx.Client, server: ServerThread
) -> None:
    with nothing_stored(server):
        headers = {"Content-Type": "application/json"}
        response = http.post("/api/v1/agents", content=_agent_body_of(MIB), headers=headers)
        assert_validation_error(
            response,
            [(["body", "name"], "Invalid name: must be 1 to 100 characters after trimming")],
        )


def test_an_execute_body_of_exactly_one_mib_is_judged_on_its_prompt(
    http: httpx.Client, server: ServerThread, agent_id: str
) -> None:
    with nothing_stored(server):
        head, tail = b'{"prompt": "', b'"}'
        body = head + b"p" * (MIB - len(head) - len(tail)) + tail
        headers = {"Content-Type": "application/json"}
        response = http.post(f"/api/v1/agents/{agent_id}/execute", content=body, headers=headers)
        assert_validation_error(
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
    with nothing_stored(server):
        headers = {"Content-Type": content_type}
        response = http.post("/api/v1/agents", content=content, headers=headers)
        assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize(("content_type", "content"), NOT_JSON_MEDIA)
def test_a_body_that_is_not_json_media_is_415_on_execute(
    http: httpx.Client, server: ServerThread, agent_id: str, content_type: str, content: bytes
) -> None:
    with nothing_stored(server):
        headers = {"Content-Type": content_type}
        response = http.post(f"/api/v1/agents/{agent_id}/execute", content=content, headers=headers)
        assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_a_body_without_a_content_type_is_unsupported_media_type(
    http: httpx.Client, server: ServerThread
) -> None:
    # Browsers may send a body without a JSON content type across origins;
    # only a declared JSON body is read, which also guards against CSRF.
    before = stored_rows(server)
    response = http.post("/api/v1/agents", content=b'{"name": "helper", "role": "abc"}')
    assert "content-type" not in response.request.headers
    assert response.status_code == 415, response.text
    message = "Content-Type must be application/json"
    assert response.json() == {
        "detail": message,
        "error": {"code": "UNSUPPORTED_MEDIA_TYPE", "message": message, "status": 415},
    }
    assert stored_rows(server) == before


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
