"""The field rules of docs/contract.md §3, as one function per request."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from server.errors import FieldViolation, InvalidArgument

_NAME_CHARS = re.compile(r"[A-Za-z0-9 _-]+")
MAX_DEPTH_LIMIT = 10
DEFAULT_MAX_DEPTH = 3
DEFAULT_DEBATE_ROUNDS = 3
MAX_PROMPT_CHARS = 50_000


@dataclass(frozen=True)
class AgentSpec:
    """A valid agent to create: trimmed, defaults applied."""

    name: str
    role: str
    max_depth: int
    spawn_shadow: bool


@dataclass(frozen=True)
class ExecutionSpec:
    """A valid execution to queue: trimmed, defaults applied."""

    prompt: str
    context_id: str | None
    enable_adversarial: bool
    enable_self_correction: bool
    max_debate_rounds: int


def _nul(field: str) -> FieldViolation:
    # Text columns cannot hold NUL on every database; refuse it everywhere alike.
    return FieldViolation(field, f"Invalid {field}: must not contain NUL characters")


def parse_id(value: str, field: str) -> str:
    """A UUID in its canonical lowercase hyphenated form, or INVALID_ARGUMENT."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument.field(field, f"Invalid {field}: must be a UUID") from None


def request_key(value: str) -> str:
    """An idempotency key: 1 to 255 printable ASCII characters, else INVALID_ARGUMENT."""
    if not 1 <= len(value) <= 255 or not all(" " < c <= "~" for c in value):
        raise InvalidArgument.field(
            "request_id", "Invalid request_id: must be 1 to 255 printable ASCII characters"
        )
    return value


def agent_spec(*, name: str, role: str, max_depth: int | None, spawn_shadow: bool) -> AgentSpec:
    """Check a create-agent request; every broken rule is reported at once."""
    violations: list[FieldViolation] = []
    name = name.strip()
    if not 1 <= len(name) <= 100:
        violations.append(
            FieldViolation("name", "Invalid name: must be 1 to 100 characters after trimming")
        )
    elif not _NAME_CHARS.fullmatch(name):
        violations.append(
            FieldViolation(
                "name",
                "Invalid name: only letters, digits, spaces, '-' and '_' are allowed",
            )
        )
    role = role.strip()
    if not 3 <= len(role) <= 500:
        violations.append(
            FieldViolation("role", "Invalid role: must be 3 to 500 characters after trimming")
        )
    elif "\x00" in role:
        violations.append(_nul("role"))
    depth = DEFAULT_MAX_DEPTH if max_depth is None else max_depth
    if depth > MAX_DEPTH_LIMIT:
        violations.append(
            FieldViolation("max_depth", f"max_depth exceeds safety limit of {MAX_DEPTH_LIMIT}")
        )
    elif depth < 0:
        violations.append(FieldViolation("max_depth", "Invalid max_depth: must not be negative"))
    if violations:
        raise InvalidArgument(violations)
    return AgentSpec(name=name, role=role, max_depth=depth, spawn_shadow=spawn_shadow)


def execution_spec(
    *,
    prompt: str,
    context_id: str | None,
    enable_adversarial: bool,
    enable_self_correction: bool,
    max_debate_rounds: int | None,
) -> ExecutionSpec:
    """Check an execute request; every broken rule is reported at once."""
    violations: list[FieldViolation] = []
    prompt = prompt.strip()
    if not 1 <= len(prompt) <= MAX_PROMPT_CHARS:
        violations.append(
            FieldViolation("prompt", "Invalid prompt: must be 1 to 50000 characters after trimming")
        )
    elif "\x00" in prompt:
        violations.append(_nul("prompt"))
    if context_id is not None and "\x00" in context_id:
        violations.append(_nul("context_id"))
    rounds = DEFAULT_DEBATE_ROUNDS if max_debate_rounds is None else max_debate_rounds
    if not 1 <= rounds <= 10:
        violations.append(
            FieldViolation(
                "max_debate_rounds", "Invalid max_debate_rounds: must be between 1 and 10"
            )
        )
    if violations:
        raise InvalidArgument(violations)
    return ExecutionSpec(
        prompt=prompt,
        context_id=context_id,
        enable_adversarial=enable_adversarial,
        enable_self_correction=enable_self_correction,
        max_debate_rounds=rounds,
    )
