"""The field rules of docs/contract.md §3, as one function per request."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, fields

from server.errors import FieldViolation, InvalidArgument

# The rules' limits, named so that what documents them (tests hold the shim's OpenAPI
# document to these) and the checks below read the same numbers.
NAME_CHARACTERS = "A-Za-z0-9 _-"  # a regex character class
_NAME_CHARS = re.compile(f"[{NAME_CHARACTERS}]+")
MIN_NAME_CHARS, MAX_NAME_CHARS = 1, 100
MIN_ROLE_CHARS, MAX_ROLE_CHARS = 3, 500
MAX_DEPTH_LIMIT = 10
DEFAULT_MAX_DEPTH = 3
MIN_PROMPT_CHARS, MAX_PROMPT_CHARS = 1, 50_000
MIN_DEBATE_ROUNDS, MAX_DEBATE_ROUNDS = 1, 10
DEFAULT_DEBATE_ROUNDS = 3
MAX_REQUEST_KEY_CHARS = 255
# A context is named by its client, and read back at /api/v1/contexts/{context_id}: the
# characters of an X-Request-ID, which a URL path carries as they are.
CONTEXT_ID_CHARACTERS = "A-Za-z0-9._:-"  # a regex character class
MAX_CONTEXT_ID_CHARS = 128
_CONTEXT_ID = re.compile(f"[{CONTEXT_ID_CHARACTERS}]{{1,{MAX_CONTEXT_ID_CHARS}}}")
CONTEXT_ID_MESSAGE = (
    f"Invalid context_id: must be 1 to {MAX_CONTEXT_ID_CHARS} characters of {CONTEXT_ID_CHARACTERS}"
)
MIN_VERIFICATION_PROMPT_CHARS, MAX_VERIFICATION_PROMPT_CHARS = 1, 2000


@dataclass(frozen=True)
class VerificationPrompts:
    """An agent's own system prompts for adversarial verification; None keeps the server's."""

    critic: str | None = None
    defender: str | None = None
    judge: str | None = None
    reviser: str | None = None

    def to_json(self) -> str | None:
        """The prompts set, as the JSON object the agent's row keeps; None when none is."""
        given = {name: value for name, value in self.items() if value is not None}
        return json.dumps(given, sort_keys=True, ensure_ascii=False) if given else None

    @classmethod
    def from_json(cls, stored: str | None) -> VerificationPrompts:
        """The prompts of an agent's row (checked when the agent was created)."""
        if not stored:
            return cls()
        given = json.loads(stored)
        return cls(**{name: given.get(name) for name in PROMPT_NAMES})

    def items(self) -> list[tuple[str, str | None]]:
        """(name, prompt) of each field, in order."""
        return [(name, getattr(self, name)) for name in PROMPT_NAMES]


PROMPT_NAMES = tuple(field.name for field in fields(VerificationPrompts))


@dataclass(frozen=True)
class AgentSpec:
    """A valid agent to create: trimmed, defaults applied."""

    name: str
    role: str
    max_depth: int
    spawn_shadow: bool
    verification: VerificationPrompts = VerificationPrompts()


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


def _within(field: str, text: str, low: int, high: int, violations: list[FieldViolation]) -> bool:
    """Whether trimmed `text` has `low` to `high` characters; if not, says so in `violations`."""
    if low <= len(text) <= high:
        return True
    message = f"must be {low} to {high} characters after trimming"
    violations.append(FieldViolation(field, f"Invalid {field}: {message}"))
    return False


def parse_id(value: str, field: str) -> str:
    """A UUID in its canonical lowercase hyphenated form, or INVALID_ARGUMENT."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument.field(field, f"Invalid {field}: must be a UUID") from None


def request_key(value: str) -> str:
    """An idempotency key: 1 to 255 printable ASCII characters, else INVALID_ARGUMENT."""
    if not 1 <= len(value) <= MAX_REQUEST_KEY_CHARS or not all(" " < c <= "~" for c in value):
        raise InvalidArgument.field(
            "request_id",
            f"Invalid request_id: must be 1 to {MAX_REQUEST_KEY_CHARS} printable ASCII characters",
        )
    return value


def parse_context_id(value: str) -> str:
    """A context's name: 1 to 128 of `A-Za-z0-9._:-`, else INVALID_ARGUMENT."""
    violation = _context_id_violation(value)
    if violation is not None:
        raise InvalidArgument([violation])
    return value


def _context_id_violation(value: str) -> FieldViolation | None:
    if _CONTEXT_ID.fullmatch(value):
        return None
    return FieldViolation("context_id", CONTEXT_ID_MESSAGE)


def agent_spec(
    *,
    name: str,
    role: str,
    max_depth: int | None,
    spawn_shadow: bool,
    verification: VerificationPrompts | None = None,
) -> AgentSpec:
    """Check a create-agent request; every broken rule is reported at once."""
    violations: list[FieldViolation] = []
    name = name.strip()
    if _within("name", name, MIN_NAME_CHARS, MAX_NAME_CHARS, violations) and not (
        _NAME_CHARS.fullmatch(name)
    ):
        violations.append(
            FieldViolation(
                "name",
                "Invalid name: only letters, digits, spaces, '-' and '_' are allowed",
            )
        )
    role = role.strip()
    if _within("role", role, MIN_ROLE_CHARS, MAX_ROLE_CHARS, violations) and "\x00" in role:
        violations.append(_nul("role"))
    depth = DEFAULT_MAX_DEPTH if max_depth is None else max_depth
    if depth > MAX_DEPTH_LIMIT:
        violations.append(
            FieldViolation("max_depth", f"max_depth exceeds safety limit of {MAX_DEPTH_LIMIT}")
        )
    elif depth < 0:
        violations.append(FieldViolation("max_depth", "Invalid max_depth: must not be negative"))
    prompts = _verification_prompts(verification or VerificationPrompts(), violations)
    if violations:
        raise InvalidArgument(violations)
    return AgentSpec(
        name=name, role=role, max_depth=depth, spawn_shadow=spawn_shadow, verification=prompts
    )


def _verification_prompts(
    prompts: VerificationPrompts, violations: list[FieldViolation]
) -> VerificationPrompts:
    """The prompts trimmed; each one given must be 1 to 2,000 characters, without NUL."""
    trimmed: dict[str, str | None] = {}
    for name, value in prompts.items():
        if value is None:
            trimmed[name] = None
            continue
        field = f"verification.{name}"
        trimmed[name] = value = value.strip()
        low, high = MIN_VERIFICATION_PROMPT_CHARS, MAX_VERIFICATION_PROMPT_CHARS
        if _within(field, value, low, high, violations) and "\x00" in value:
            violations.append(_nul(field))
    return VerificationPrompts(**trimmed)


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
    if _within("prompt", prompt, MIN_PROMPT_CHARS, MAX_PROMPT_CHARS, violations) and (
        "\x00" in prompt
    ):
        violations.append(_nul("prompt"))
    if context_id is not None and (violation := _context_id_violation(context_id)):
        violations.append(violation)
    rounds = DEFAULT_DEBATE_ROUNDS if max_debate_rounds is None else max_debate_rounds
    if not MIN_DEBATE_ROUNDS <= rounds <= MAX_DEBATE_ROUNDS:
        message = f"must be between {MIN_DEBATE_ROUNDS} and {MAX_DEBATE_ROUNDS}"
        violations.append(
            FieldViolation("max_debate_rounds", f"Invalid max_debate_rounds: {message}")
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
