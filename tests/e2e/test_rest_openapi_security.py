"""The live shim's OpenAPI document states the credential each operation needs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.openapi_spec import (
    ADMIN_KEY_HEADER,
    API_KEY_HEADER,
    TOKEN_OPERATION,
    all_operations,
    bearer_schemes,
    header_key_schemes,
    live_shim,
    operation_of,
    security_of,
    served_spec,
)

API_OPERATIONS = [
    ("post", "/api/v1/agents"),
    ("get", "/api/v1/agents/{agent_id}"),
    ("post", "/api/v1/agents/{agent_id}/execute"),
    ("get", "/api/v1/jobs/{job_id}"),
]
ADMIN_OPERATIONS = [
    ("post", "/admin/api-keys"),
    ("get", "/admin/api-keys"),
    ("delete", "/admin/api-keys/{key_id}"),
    ("put", "/admin/tenants/{tenant_id}/limits"),
    ("get", "/admin/tenants/{tenant_id}/limits"),
]


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The OpenAPI document as a live shim serves it."""
    with live_shim(tmp_path_factory) as shim:
        yield served_spec(shim)


def test_the_spec_declares_an_http_bearer_scheme(spec: dict[str, Any]) -> None:
    assert bearer_schemes(spec), spec.get("components", {}).get("securitySchemes")


def test_the_spec_declares_the_api_key_and_the_admin_key_header_schemes(
    spec: dict[str, Any],
) -> None:
    schemes = spec.get("components", {}).get("securitySchemes", {})
    assert header_key_schemes(spec, API_KEY_HEADER), schemes
    assert header_key_schemes(spec, ADMIN_KEY_HEADER), (
        f"no apiKey scheme sends the admin token in {ADMIN_KEY_HEADER}: {schemes}"
    )


def test_every_api_operation_accepts_the_bearer_token_or_an_api_key_and_nothing_less(
    spec: dict[str, Any],
) -> None:
    bearer = bearer_schemes(spec)
    credential = bearer | header_key_schemes(spec, API_KEY_HEADER)
    api = [
        (m, p, op)
        for m, p, op in all_operations(spec)
        if p.startswith("/api/") and (m, p) != TOKEN_OPERATION
    ]
    assert {(m, p) for m, p, _ in api} >= set(API_OPERATIONS)
    weak, no_bearer = {}, {}
    for method, path, operation in api:
        security = security_of(spec, operation)
        # Each alternative must need a credential; an empty one makes auth optional.
        if not all(set(alternative) & credential for alternative in security):
            weak[f"{method.upper()} {path}"] = security
        # vex-api clients send a bearer JWT: it must stay one of the ways in.
        if not any(set(alternative) & bearer for alternative in security):
            no_bearer[f"{method.upper()} {path}"] = security
    assert not weak, f"API operations that do not require a credential: {weak}"
    assert not no_bearer, f"API operations that do not accept the bearer token: {no_bearer}"


def test_the_token_exchange_requires_an_api_key(spec: dict[str, Any]) -> None:
    api_key = header_key_schemes(spec, API_KEY_HEADER)
    security = security_of(spec, operation_of(spec, *TOKEN_OPERATION))
    assert all(set(alternative) & api_key for alternative in security), (
        f"POST /api/v1/tokens is documented as needing {security}, not an {API_KEY_HEADER}"
    )


def test_every_admin_operation_requires_the_admin_key_header(spec: dict[str, Any]) -> None:
    admin_key = header_key_schemes(spec, ADMIN_KEY_HEADER)
    admin = [(m, p, op) for m, p, op in all_operations(spec) if p.startswith("/admin/")]
    assert {(m, p) for m, p, _ in admin} >= set(ADMIN_OPERATIONS)
    weak = {
        f"{method.upper()} {path}": security_of(spec, operation)
        for method, path, operation in admin
        if not all(set(alt) & admin_key for alt in security_of(spec, operation))
    }
    schemes = spec.get("components", {}).get("securitySchemes", {})
    assert not weak, (
        f"admin operations not documented as needing {ADMIN_KEY_HEADER}: {weak}; "
        f"the schemes are {schemes}"
    )


def test_health_needs_no_token(spec: dict[str, Any]) -> None:
    security = operation_of(spec, "get", "/health").get("security", spec.get("security"))
    assert not security, f"/health is documented as needing {security}"
