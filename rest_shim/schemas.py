"""JSON shapes of docs/contract.md §3: request bodies, responses, the error body (for OpenAPI)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, StrictBool, StrictInt
from pydantic import StrictStr as _StrictStr
from pydantic_core import PydanticCustomError

from rest_shim import rules
from rest_shim.rules import documented


def unicode_text(value: str) -> str:
    # JSON can spell half a character (a lone surrogate escape); no protobuf
    # string, and so no server, can carry it.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


# A JSON string (never a number or null coerced to one) that is valid Unicode.
StrictStr = Annotated[_StrictStr, AfterValidator(unicode_text)]


def _whole(value: Any) -> Any:
    # JSON has one kind of number: 3.0 is the integer 3 (as JSON Schema counts it), while
    # 3.5, "3" and true stay what the strict check below refuses.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# A JSON integer: a number without a fraction, never a string or a boolean.
Integer = Annotated[StrictInt, BeforeValidator(_whole)]


# One prompt of an agent's verification block, documented as the server checks it.
VerificationPrompt = Annotated[
    StrictStr | None,
    documented(
        rules.trimmed(rules.MIN_VERIFICATION_PROMPT_CHARS, rules.MAX_VERIFICATION_PROMPT_CHARS),
        nullable=True,
    ),
]


class VerificationPromptsBody(BaseModel):
    """An agent's own system prompts for adversarial verification; null keeps the server's."""

    critic: VerificationPrompt = Field(None, description="The critic's system prompt.")
    defender: VerificationPrompt = Field(
        None, description="Told to the agent, after its role, when it replies to a critique."
    )
    judge: VerificationPrompt = Field(None, description="The judge's system prompt.")
    reviser: VerificationPrompt = Field(
        None, description="Told to the agent, after its role, when it revises its answer."
    )


class CreateAgentBody(BaseModel):
    """POST /api/v1/agents. Range and character rules are the server's; see the errors."""

    name: Annotated[
        StrictStr,
        documented(
            rules.trimmed(
                rules.MIN_NAME_CHARS, rules.MAX_NAME_CHARS, characters=rules.NAME_CHARACTERS
            )
        ),
    ] = Field(description="1-100 characters after trimming: letters, digits, space, - and _.")
    role: Annotated[
        StrictStr, documented(rules.trimmed(rules.MIN_ROLE_CHARS, rules.MAX_ROLE_CHARS))
    ] = Field(description="3-500 characters after trimming: the agent's system prompt.")
    max_depth: Annotated[Integer, documented(rules.integer(0, rules.MAX_DEPTH_LIMIT))] = Field(
        3, description="0-10; the deepest chain of sub-agent executions."
    )
    spawn_shadow: StrictBool = Field(False, description="Stored.")
    verification: VerificationPromptsBody | None = Field(
        None,
        description="Prompts for adversarial verification, each 1-2,000 characters after "
        "trimming; those left out or null keep the server's.",
    )


class ExecuteBody(BaseModel):
    """POST /api/v1/agents/{id}/execute."""

    prompt: Annotated[
        StrictStr, documented(rules.trimmed(rules.MIN_PROMPT_CHARS, rules.MAX_PROMPT_CHARS))
    ] = Field(description="1-50,000 characters after trimming.")
    context_id: Annotated[StrictStr | None, documented(rules.context_id(), nullable=True)] = Field(
        None,
        description="A conversation to run in: 1-128 of A-Za-z0-9._:-. The execution sees "
        "its earlier turns, and adds its own once it completes.",
    )
    enable_adversarial: StrictBool = Field(
        False, description="Debate the answer (a critic, the agent's defence), then judge it."
    )
    enable_self_correction: StrictBool = Field(
        False,
        description="With enable_adversarial: revise an answer judged under the threshold once.",
    )
    max_debate_rounds: Annotated[
        Integer, documented(rules.integer(rules.MIN_DEBATE_ROUNDS, rules.MAX_DEBATE_ROUNDS))
    ] = Field(3, description="1-10; the debate ends sooner when the critic finds nothing.")
    parent_job_id: Annotated[StrictStr | None, documented(rules.uuid(), nullable=True)] = Field(
        None, description="Queue as a sub-agent execution of this job (same tenant)."
    )
    request_id: Annotated[StrictStr | None, documented(rules.request_key(), nullable=True)] = Field(
        None, description="Idempotency key; the `Idempotency-Key` header wins when both are sent."
    )


class VerificationPromptsOut(BaseModel):
    """An agent's own verification prompts; null where it keeps the server's."""

    critic: str | None
    defender: str | None
    judge: str | None
    reviser: str | None


class AgentOut(BaseModel):
    """A stored agent."""

    id: str
    name: str
    role: str
    max_depth: int
    spawn_shadow: bool
    generation: int
    fitness: float
    created_at: str = Field(description="RFC 3339, UTC.")
    verification: VerificationPromptsOut | None = Field(
        description="null when the agent has no prompts of its own."
    )


class ExecuteAck(BaseModel):
    """The queue acknowledgement of an execution."""

    agent_id: str
    job_id: str
    status: Literal["pending"]
    response: str = Field(description="`Job queued: <job_id>`, for clients that parse it.")
    verified: bool
    confidence: float
    context_hash: Literal["pending"]
    merkle_root: None
    latency_ms: int


JobStatusName = Literal["pending", "running", "completed", "failed", "cancelled"]


class AgentJobResultOut(BaseModel):
    """The outcome of a finished job."""

    job_id: str
    agent_id: str
    success: bool
    response: str
    tokens_used: int
    completed_at: str = Field(description="RFC 3339, UTC.")
    error: str | None
    prompt: str
    context_hash: str | None
    merkle_root: str | None
    verified: bool = Field(description="The judge's confidence reached the server's threshold.")
    confidence: float | None = Field(
        description="The judge's confidence, 0-1; null without adversarial verification."
    )
    debate_rounds: int = Field(description="Debate rounds run; 0 without adversarial verification.")
    new_context_id: str | None = Field(
        description="The context the job's turn was stored in; null without one, or when "
        "the job did not complete."
    )


class JobOut(BaseModel):
    """A job and, once it has finished, its result."""

    job_id: str
    agent_id: str
    status: JobStatusName
    result: AgentJobResultOut | None
    error: str | None
    queued_at: str
    started_at: str | None
    completed_at: str | None
    attempts: int
    parent_job_id: str | None = Field(description="The job that queued this one, if any.")
    depth: int = Field(description="0 for a top-level job, the parent's depth + 1 for a child.")
    trace_id: str | None = Field(
        None,
        description="The OpenTelemetry trace id of the execution (32 hex digits); present "
        "only when the server traces.",
    )


class PageMeta(BaseModel):
    """Where a list page stands."""

    per_page: int
    next_page_token: str | None = Field(description="Pass as page_token; null on the last page.")


class AgentPage(BaseModel):
    """A page of agents, newest first."""

    data: list[AgentOut]
    meta: PageMeta


class JobPage(BaseModel):
    """A page of jobs, newest first."""

    data: list[JobOut]
    meta: PageMeta


class ContextTurnOut(BaseModel):
    """One turn of a conversation: a completed job's prompt and final answer."""

    job_id: str
    prompt: str
    response: str
    created_at: str = Field(description="When the job completed (RFC 3339, UTC).")


class ContextPage(BaseModel):
    """A page of a context's turns, oldest first; empty for a context without turns."""

    context_id: str
    data: list[ContextTurnOut]
    meta: PageMeta


class HealthOut(BaseModel):
    """GET /health."""

    status: Literal["healthy"]
    version: str
    timestamp: str
    db_type: Literal["sqlite", "postgres"]


class ErrorInfoOut(BaseModel):
    """The vex-api part of an error body."""

    code: str
    message: str
    status: int


class ErrorBody(BaseModel):
    """Every error: `detail` for FastAPI clients, `error` for vex-api clients."""

    detail: str | list[dict[str, Any]]
    error: ErrorInfoOut


def _role(value: str) -> str:
    # An empty role would reach the server as the proto's unset field, which means the
    # default `user`: a JSON body that names a role must name one of them.
    if value not in rules.ROLES:
        raise PydanticCustomError("enum", rules.INVALID_ROLE)
    return value


class CreateApiKeyBody(BaseModel):
    """POST /admin/api-keys."""

    tenant_id: Annotated[StrictStr, documented(rules.tenant_id())] = Field(
        description="The tenant the key reaches, 1-255 characters."
    )
    name: Annotated[StrictStr, documented(rules.trimmed(1, rules.MAX_KEY_NAME_CHARS))] = Field(
        description="A name for people, 1-100 characters after trimming."
    )
    role: Annotated[StrictStr, AfterValidator(_role), documented(rules.one_of(rules.ROLES))] = (
        Field("user", description="`user`, `agent` or `admin`.")
    )
    scopes: Annotated[list[StrictStr], documented(rules.scopes())] = Field(
        description="At least one of `agents:read`, `agents:write`, `jobs:read`, `jobs:write`."
    )
    lifetime_seconds: Annotated[
        Integer | None, documented(rules.integer(1, rules.MAX_LIFETIME_S), nullable=True)
    ] = Field(None, description="Unset for a key that never expires.")
    tier: Annotated[
        StrictStr | None, documented(rules.one_of(rules.DEFAULT_TIERS), nullable=True)
    ] = Field(None, description="A rate-limit tier of the key's own, besides its tenant's.")


class ApiKeyOut(BaseModel):
    """An API key's metadata; the key itself is never shown again."""

    id: str
    tenant_id: str
    name: str
    role: str
    scopes: list[str]
    prefix: str
    created_at: str
    last_used_at: str | None
    expires_at: str | None
    revoked_at: str | None
    tier: str | None = Field(description="The key's own rate-limit tier; null for none.")


class CreatedApiKeyOut(ApiKeyOut):
    """A new key: the only response that carries `key`."""

    key: str = Field(description="`agq_...`: store it now, it cannot be read again.")


class ApiKeyList(BaseModel):
    """API keys, newest first."""

    data: list[ApiKeyOut]


class ApiKeyPage(BaseModel):
    """A page of the caller's tenant's API keys, newest first."""

    data: list[ApiKeyOut]
    meta: PageMeta


class TenantLimitsBody(BaseModel):
    """PUT /admin/tenants/{tenant_id}/limits; omitted fields keep their value."""

    # The tiers are the operator's (AGENTQ_RATE_TIERS): app.py documents the configured ones.
    tier: Annotated[
        StrictStr | None, documented(rules.one_of(rules.DEFAULT_TIERS), nullable=True)
    ] = Field(None, description="One of the configured tiers.")
    max_unfinished_jobs: Annotated[Integer | None, documented(rules.integer(0), nullable=True)] = (
        Field(None, description="0 or more; 0 admits none.")
    )


class TenantLimitsOut(BaseModel):
    """The limits in force for a tenant."""

    tenant_id: str
    tier: str
    rate_per_second: float
    burst: int
    max_unfinished_jobs: int | None = Field(description="null when no cap applies.")
    per_minute: int | None = Field(description="Requests per clock minute; null: none.")
    per_day: int | None = Field(description="Requests per day (UTC); null: none.")


class TokenOut(BaseModel):
    """A short-lived JWT exchanged for an API key."""

    access_token: str
    token_type: Literal["bearer"]
    expires_in: int
    expires_at: str
