"""The one settings class, read from the environment by the entry points."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from server.prompt_guard import GuardMode
from server.ratelimit import DEFAULT_TIERS, Tier

# docs/contract.md §5 fixes these names; everything else is prefixed AGENTQ_.
_SECRET_ENV = "VEX_JWT_SECRET"
MIN_SECRET_BYTES = 32
# Development mode answers this machine only, unless an address is set explicitly:
# anyone who can reach it can do what its easily found secret allows.
_DEV_ADDRESSES = {"grpc_addr": "127.0.0.1:50051", "http_addr": "127.0.0.1:8080"}
# The admin token guards every tenant's keys and limits: no shorter than a JWT secret.
MIN_ADMIN_TOKEN_CHARS = 32


class Settings(BaseSettings):
    """Every knob of agentq. Built once by an entry point and passed down."""

    model_config = SettingsConfigDict(env_prefix="AGENTQ_", extra="ignore", populate_by_name=True)

    jwt_secret: SecretStr | None = Field(default=None, validation_alias=_SECRET_ENV)
    jwt_issuer: str = "vex-api"
    jwt_audience: str | None = None
    # The longest lifetime (`exp - iat`) of a JWT accepted, in seconds; unset for no limit.
    jwt_max_ttl_s: int | None = Field(default=None, ge=1)
    dev_mode: bool = False

    # The admin API is off (every call refused) while this is unset.
    admin_token: SecretStr | None = None
    # Key for the HMAC digests of API keys; derived from VEX_JWT_SECRET when unset.
    api_key_pepper: SecretStr | None = None
    # Lifetime of the JWTs that POST /api/v1/tokens hands out.
    token_ttl_s: int = Field(default=900, ge=1)
    # Failed credential checks one client address may make before it is refused as rate
    # limited (server/api/failures.py); refilled at one every two seconds.
    auth_failure_burst: int = Field(default=20, ge=1)
    # Peers believed when they name the client (the REST shim sends its client's address).
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    # Rate-limit tiers (a token bucket per tenant) and the tier of a tenant
    # the admin API has not placed; JSON in the environment.
    rate_tiers: dict[str, Tier] = Field(default_factory=lambda: dict(DEFAULT_TIERS))
    default_tier: str = "standard"
    # The most unfinished jobs a tenant may have; unset for no cap.
    max_unfinished_jobs: int | None = Field(default=None, ge=0)

    database_url: str = "sqlite:///agentq.db"
    redis_url: str | None = None
    # Namespaces the Dramatiq keys in Redis, so several deployments (or test
    # runs) can share one Redis server.
    redis_namespace: str = "agentq"

    grpc_addr: str = "0.0.0.0:50051"
    # Where `agentq serve` runs the REST shim; the shim's own settings
    # (rest_shim/settings.py) read the rest of its variables.
    http_addr: str = "0.0.0.0:8080"

    # Database connections of a serving process (the gRPC API's calls share them).
    db_pool_size: int = Field(default=16, ge=1)
    # Executions one worker process (or the embedded default) runs at once on its
    # event loop: provider calls in flight, each holding one slot from claim to outcome.
    worker_concurrency: int = Field(default=256, ge=1, le=10_000)
    worker_processes: int = Field(default=1, ge=1)
    # On SIGTERM a worker takes no new job and lets running attempts finish for this
    # long; the rest are interrupted and their jobs given back to the queue at once.
    shutdown_grace_s: float = Field(default=30.0, ge=0)

    max_attempts: int = Field(default=3, ge=1)
    job_time_limit_s: float = Field(default=120.0, gt=0)
    retry_backoff_s: float = Field(default=1.0, ge=0)
    retry_backoff_max_s: float = Field(default=60.0, ge=0)
    # How long past its time limit a running job may go unheard from before it
    # is taken for lost (its worker died) and run again.
    lease_grace_s: float = Field(default=15.0, ge=0)
    # A pending job whose message was sent this long ago without being picked
    # up is enqueued again (the message may have been lost).
    requeue_after_s: float = Field(default=60.0, gt=0)
    # Redis broker: how long a silent worker process is given before Dramatiq
    # hands its unacknowledged messages to other workers.
    broker_heartbeat_timeout_s: float = Field(default=30.0, gt=0)
    # Finished jobs, their events and idempotency keys are deleted after this.
    retention_s: float = Field(default=7 * 86400, gt=0)
    # How often a worker checks its running jobs for cancel requests.
    cancel_poll_s: float = Field(default=0.5, gt=0)
    # A streamed answer is written as at most one token event per job per interval
    # (plus one at the end), however many pieces the provider sends.
    token_event_interval_ms: int = Field(default=100, ge=0)
    # How often an event stream looks for new events of its job.
    stream_poll_s: float = Field(default=0.25, gt=0)
    # An SSE stream sends a keep-alive comment after this much silence.
    stream_keepalive_s: float = Field(default=15.0, gt=0)
    recovery_interval_s: float = Field(default=5.0, gt=0)
    # How often the orchestrator moves workflow runs forward (README, Workflows): a step
    # starts at most this long after the steps it depends on completed.
    workflow_poll_s: float = Field(default=0.25, gt=0)

    # Conversation contexts: an execution with a context_id sends its provider the newest
    # earlier turns of that context, at most this many turns (0: none) and at most this
    # many characters of their prompts and answers together (server/worker/history.py).
    context_max_turns: int = Field(default=20, ge=0)
    context_max_chars: int = Field(default=32_000, ge=0)
    # An execution without a context_id starts a context of its own (named at queue time).
    context_auto: bool = False

    # Logging: the level of every logger, levels of named ones (`agentq.access=WARNING`
    # silences the access lines), and the format: text lines, or one JSON object a line.
    log_level: str = "INFO"
    log_levels: str = ""
    log_format: Literal["text", "json"] = "text"
    # OpenTelemetry tracing to the OTLP default endpoint; an OTEL_EXPORTER_OTLP_ENDPOINT
    # turns it on too (server/tracing.py, README.md Tracing).
    tracing: bool = False

    # Where the process serves its Prometheus metrics (README.md, Metrics): unset, each
    # command's own default address; empty, none. Job counters are labelled by tenant only
    # when asked, as every tenant adds a series to each.
    metrics_addr: str | None = None
    metrics_tenant_labels: bool = False

    # Screens prompts, agent names and roles for injection attempts (server/prompt_guard.py):
    # `off`, `patterns`, or `judge` (the patterns in the API, then the worker has a safety
    # judge read each prompt before anything else: server/worker/verification.py).
    prompt_guard: GuardMode = "patterns"

    # Webhooks (README, Webhooks): a delivery is retried with exponential backoff and full
    # jitter (each delay random up to backoff x 2^(attempts-1), at most backoff_max) for
    # this many hours, then failed; each attempt waits this long for an answer. Private
    # addresses (and http URLs) are refused unless allowed; the dispatcher looks for due
    # deliveries every poll and sends to at most `concurrency` webhooks at once.
    webhook_retry_hours: float = Field(default=24.0, gt=0)
    webhook_backoff_s: float = Field(default=5.0, ge=0)
    webhook_backoff_max_s: float = Field(default=600.0, ge=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_allow_private: bool = False
    webhook_poll_s: float = Field(default=1.0, gt=0)
    webhook_concurrency: int = Field(default=16, ge=1)

    provider: Literal["builtin", "openai"] = "builtin"
    builtin_latency_ms: int = Field(default=50, ge=0)
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: SecretStr | None = None
    openai_model: str = "gpt-4o-mini"
    openai_timeout_s: float = Field(default=60.0, gt=0)

    # Adversarial verification (server/worker/verification.py): an answer is verified when
    # the judge's confidence reaches this.
    verify_threshold: float = Field(default=0.7, ge=0, le=1)
    # The deployment's own system prompts of verification and of the safety judge, in
    # place of server/worker/prompts.py's; an agent's own (its `verification`) win over
    # the first four.
    verify_critic_prompt: str | None = Field(default=None, min_length=1)
    verify_defender_prompt: str | None = Field(default=None, min_length=1)
    verify_judge_prompt: str | None = Field(default=None, min_length=1)
    verify_reviser_prompt: str | None = Field(default=None, min_length=1)
    safety_judge_prompt: str | None = Field(default=None, min_length=1)

    @field_validator("admin_token")
    @classmethod
    def _long_admin_token(cls, token: SecretStr | None) -> SecretStr | None:
        # An empty value is unset (the admin API stays off), as a blank line in an
        # env file usually means; anything else must be long enough to resist guessing.
        if token is None or not token.get_secret_value():
            return None
        length = len(token.get_secret_value())
        if length < MIN_ADMIN_TOKEN_CHARS:
            raise ValueError(
                f"AGENTQ_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_CHARS} characters "
                f"(it has {length})"
            )
        return token

    @field_validator("metrics_addr")
    @classmethod
    def _metrics_address(cls, address: str | None) -> str | None:
        if address:
            host, colon, port = address.rpartition(":")
            if not colon or not host or not port.isdigit() or int(port) > 65535:
                raise ValueError(
                    "AGENTQ_METRICS_ADDR must be HOST:PORT (a port of 0 to 65535), "
                    "or empty for no metrics"
                )
        return address

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, level: str) -> str:
        if not _is_level(level):
            raise ValueError(f"AGENTQ_LOG_LEVEL {level!r} is not one of: {_LEVELS}")
        return level.upper()

    @field_validator("log_levels")
    @classmethod
    def _known_logger_levels(cls, spec: str) -> str:
        parse_logger_levels(spec)
        return spec

    @property
    def logger_levels(self) -> dict[str, str]:
        """AGENTQ_LOG_LEVELS as {logger: level}."""
        return parse_logger_levels(self.log_levels)

    @model_validator(mode="after")
    def _known_default_tier(self) -> Settings:
        if self.default_tier not in self.rate_tiers:
            tiers = ", ".join(sorted(self.rate_tiers))
            raise ValueError(f"AGENTQ_DEFAULT_TIER {self.default_tier!r} is not one of: {tiers}")
        return self

    @model_validator(mode="after")
    def _exchanged_tokens_accepted(self) -> Settings:
        # A token from POST /api/v1/tokens must be one the server accepts.
        if self.jwt_max_ttl_s is not None and self.token_ttl_s > self.jwt_max_ttl_s:
            raise ValueError(
                f"AGENTQ_TOKEN_TTL_S ({self.token_ttl_s}) exceeds "
                f"AGENTQ_JWT_MAX_TTL_S ({self.jwt_max_ttl_s})"
            )
        return self

    def in_dev_mode(self) -> Settings:
        """These settings in development mode, on loopback where no address was set."""
        update: dict[str, object] = {"dev_mode": True}
        for name, address in _DEV_ADDRESSES.items():
            if name not in self.model_fields_set:
                update[name] = address
        return self.model_copy(update=update)

    @property
    def db_type(self) -> str:
        """`postgres` or `sqlite`, as /health reports it."""
        return "postgres" if self.database_url.startswith("postgres") else "sqlite"


_LEVELS = "DEBUG, INFO, WARNING, ERROR, CRITICAL"


def _is_level(name: str) -> bool:
    return name.upper() in _LEVELS.split(", ")


def parse_logger_levels(spec: str) -> dict[str, str]:
    """`agentq.access=WARNING,agentq.jobs=ERROR` as {logger: level}; ValueError if malformed."""
    levels = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, equals, level = (part.strip() for part in item.partition("="))
        if not equals or not name or not _is_level(level):
            raise ValueError(
                f"AGENTQ_LOG_LEVELS: {item!r} is not LOGGER=LEVEL, LEVEL one of {_LEVELS}"
            )
        levels[name] = level.upper()
    return levels
