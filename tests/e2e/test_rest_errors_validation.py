"""Errors of docs/contract.md §1-§3 over HTTP, of fields: 422 with FastAPI's detail list."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.harness import ServerThread
from tests.e2e.rest_errors_helpers import (
    SOME_ID,
    VALID_AGENT,
    assert_validation_error,
    nothing_stored,
)

MISSING = object()  # a field left out of the request body


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
    with nothing_stored(server):
        body = {k: v for k, v in {**VALID_AGENT, **changes}.items() if v is not MISSING}
        response = http.post("/api/v1/agents", json=body)
        assert_validation_error(response, [(["body", field], msg)])


def test_every_invalid_agent_field_is_reported_at_once(
    http: httpx.Client, server: ServerThread
) -> None:
    with nothing_stored(server):
        response = http.post("/api/v1/agents", json={"name": "bad!", "role": "ab", "max_depth": 11})
        assert_validation_error(
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
CONTEXT_ID_RULE = "Invalid context_id: must be 1 to 128 characters of A-Za-z0-9._:-"

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
    pytest.param(
        {"prompt": "hi", "context_id": ""}, "context_id", CONTEXT_ID_RULE, id="context-id-empty"
    ),
    pytest.param(
        {"prompt": "hi", "context_id": "c" * 129},
        "context_id",
        CONTEXT_ID_RULE,
        id="context-id-129",
    ),
    pytest.param(
        {"prompt": "hi", "context_id": "trip/2026"},
        "context_id",
        CONTEXT_ID_RULE,
        id="context-id-slash",
    ),
    pytest.param(
        {"prompt": "hi", "context_id": "ctx\x00"},
        "context_id",
        CONTEXT_ID_RULE,
        id="context-id-nul",
    ),
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
    with nothing_stored(server):
        response = http.post(f"/api/v1/agents/{agent_id}/execute", json=body)
        assert_validation_error(response, [(["body", field], msg)])


REQUEST_ID_RULE = "Invalid request_id: must be 1 to 255 printable ASCII characters"


def test_a_bad_idempotency_key_is_422_located_in_its_header(
    http: httpx.Client, server: ServerThread, agent_id: str
) -> None:
    with nothing_stored(server):
        response = http.post(
            f"/api/v1/agents/{agent_id}/execute",
            json={"prompt": "hi", "request_id": "fine"},
            headers={"Idempotency-Key": "k" * 256},
        )
        assert_validation_error(response, [(["header", "idempotency-key"], REQUEST_ID_RULE)])


def test_a_bad_request_id_in_the_body_is_422_located_in_the_body(
    http: httpx.Client, server: ServerThread, agent_id: str
) -> None:
    with nothing_stored(server):
        response = http.post(
            f"/api/v1/agents/{agent_id}/execute", json={"prompt": "hi", "request_id": "k" * 256}
        )
        assert_validation_error(response, [(["body", "request_id"], REQUEST_ID_RULE)])


@pytest.mark.parametrize("bad_id", ["nope", "1234", f"{SOME_ID}x", "not a uuid"])
def test_a_path_id_that_is_not_a_uuid_is_422(
    http: httpx.Client, server: ServerThread, bad_id: str
) -> None:
    with nothing_stored(server):
        assert_validation_error(
            http.get(f"/api/v1/agents/{bad_id}"), [(["path", "agent_id"], None)]
        )
        executed = http.post(f"/api/v1/agents/{bad_id}/execute", json={"prompt": "hi"})
        assert_validation_error(executed, [(["path", "agent_id"], None)])
        assert_validation_error(http.get(f"/api/v1/jobs/{bad_id}"), [(["path", "job_id"], None)])
