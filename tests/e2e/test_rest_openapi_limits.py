"""The limits and text patterns the OpenAPI document states are the ones the server checks."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rest_shim import rules
from server import paging, validation
from server.auth import principal as auth
from server.errors import InvalidArgument
from server.ratelimit import DEFAULT_TIERS
from server.service import access
from tests.e2e.openapi_spec import component, live_shim, operation_of, served_spec


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The OpenAPI document as a live shim serves it."""
    with live_shim(tmp_path_factory) as shim:
        yield served_spec(shim)


def _property(spec: dict[str, Any], model: str, name: str) -> dict[str, Any]:
    """A body property's schema; the non-null one of a nullable property."""
    schema: dict[str, Any] = component(spec, model)["properties"][name]
    return next((s for s in schema.get("anyOf", []) if s.get("type") != "null"), schema)


def _parameter(spec: dict[str, Any], method: str, path: str, name: str) -> dict[str, Any]:
    parameters = operation_of(spec, method, path)["parameters"]
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
    assert (rules.CONTEXT_ID_CHARACTERS, rules.MAX_CONTEXT_ID_CHARS) == (
        validation.CONTEXT_ID_CHARACTERS,
        validation.MAX_CONTEXT_ID_CHARS,
    )
    assert (rules.MIN_VERIFICATION_PROMPT_CHARS, rules.MAX_VERIFICATION_PROMPT_CHARS) == (
        validation.MIN_VERIFICATION_PROMPT_CHARS,
        validation.MAX_VERIFICATION_PROMPT_CHARS,
    )
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


def _accepted(accepts: Callable[[str], object], text: str) -> bool:
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
            "VerificationPromptsBody",
            "critic",
            lambda v: validation.agent_spec(
                name="a",
                role="abc",
                max_depth=None,
                spawn_shadow=False,
                verification=validation.VerificationPrompts(critic=v),
            ),
            validation.MIN_VERIFICATION_PROMPT_CHARS,
            validation.MAX_VERIFICATION_PROMPT_CHARS,
            id="verification-prompt",
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
        pytest.param(
            "ExecuteBody",
            "context_id",
            lambda v: validation.parse_context_id(v),
            1,
            validation.MAX_CONTEXT_ID_CHARS,
            id="context-id",
        ),
    ],
)
def test_a_documented_text_pattern_matches_exactly_what_the_server_accepts(
    spec: dict[str, Any],
    model: str,
    field: str,
    accepts: Callable[[str], object],
    low: int,
    high: int,
) -> None:
    pattern = re.compile(_property(spec, model, field)["pattern"])
    wrong = [
        (text[:20], len(text))
        for text in _texts(low, high, "a")
        if bool(pattern.search(text)) != _accepted(accepts, text)
    ]
    assert not wrong, wrong
