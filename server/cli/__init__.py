"""The `agentq` command: serve, worker, rest, token, migrate, and the user commands of the
SDK (run, agents, jobs; agentq.client.cli)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from agentq.client import cli as user_commands

if TYPE_CHECKING:
    from server.settings import Settings

# Only argparse at import time: `agentq --help` should answer at once, so every
# server library is imported by the command that needs it.

# Every command logs, so every command reads these.
_LOG_ENV = "AGENTQ_LOG_LEVEL AGENTQ_LOG_LEVELS AGENTQ_LOG_FORMAT"
# Every long-running command serves its metrics (server/cli/metrics.py).
_METRICS_ENV = "AGENTQ_METRICS_ADDR AGENTQ_METRICS_TENANT_LABELS "
# Every command that runs jobs reads these (server/worker/verification.py).
_VERIFY_ENV = (
    "AGENTQ_PROMPT_GUARD AGENTQ_VERIFY_THRESHOLD AGENTQ_VERIFY_CRITIC_PROMPT "
    "AGENTQ_VERIFY_DEFENDER_PROMPT AGENTQ_VERIFY_JUDGE_PROMPT AGENTQ_VERIFY_REVISER_PROMPT "
    "AGENTQ_SAFETY_JUDGE_PROMPT "
)
# Every long-running command reads these (server/tracing.py; README.md, Tracing).
_TRACE_ENV = "AGENTQ_TRACING OTEL_EXPORTER_OTLP_ENDPOINT (and the SDK's other OTEL_* variables) "
# Every command that runs jobs reads these (server/worker/history.py).
_CONTEXT_ENV = "AGENTQ_CONTEXT_MAX_TURNS AGENTQ_CONTEXT_MAX_CHARS "
# Every command that runs jobs sends webhooks (server/service/webhook_dispatch.py); the
# API checks a webhook's URL with the last one.
_WEBHOOK_ENV = (
    "AGENTQ_WEBHOOK_RETRY_HOURS AGENTQ_WEBHOOK_BACKOFF_S AGENTQ_WEBHOOK_BACKOFF_MAX_S "
    "AGENTQ_WEBHOOK_TIMEOUT_S AGENTQ_WEBHOOK_POLL_S AGENTQ_WEBHOOK_CONCURRENCY "
    "AGENTQ_WEBHOOK_ALLOW_PRIVATE "
)
# Every command that runs jobs calls the provider these choose (server/providers/).
_PROVIDER_ENV = (
    "AGENTQ_PROVIDER AGENTQ_BUILTIN_LATENCY_MS AGENTQ_OPENAI_BASE_URL AGENTQ_OPENAI_API_KEY "
    "AGENTQ_OPENAI_MODEL AGENTQ_OPENAI_TIMEOUT_S "
)
# What every command that runs jobs reads besides its own and the provider's.
_RUNNER_ENV = _CONTEXT_ENV + _VERIFY_ENV + _WEBHOOK_ENV + _TRACE_ENV + _METRICS_ENV + _LOG_ENV
_SERVE_ENV = (
    "VEX_JWT_SECRET AGENTQ_JWT_ISSUER AGENTQ_JWT_AUDIENCE AGENTQ_JWT_MAX_TTL_S AGENTQ_DEV_MODE "
    "AGENTQ_ADMIN_TOKEN AGENTQ_API_KEY_PEPPER AGENTQ_TOKEN_TTL_S AGENTQ_AUTH_FAILURE_BURST "
    "AGENTQ_TRUSTED_PROXIES AGENTQ_RATE_TIERS "
    "AGENTQ_DEFAULT_TIER AGENTQ_MAX_UNFINISHED_JOBS AGENTQ_DATABASE_URL AGENTQ_REDIS_URL "
    "AGENTQ_REDIS_NAMESPACE "
    "AGENTQ_GRPC_ADDR AGENTQ_HTTP_ADDR AGENTQ_DB_POOL_SIZE AGENTQ_WORKER_CONCURRENCY "
    "AGENTQ_WORKER_PROCESSES AGENTQ_SHUTDOWN_GRACE_S AGENTQ_MAX_ATTEMPTS "
    "AGENTQ_JOB_TIME_LIMIT_S AGENTQ_RETRY_BACKOFF_S AGENTQ_RETRY_BACKOFF_MAX_S "
    "AGENTQ_LEASE_GRACE_S AGENTQ_REQUEUE_AFTER_S AGENTQ_BROKER_HEARTBEAT_TIMEOUT_S "
    "AGENTQ_RETENTION_S AGENTQ_CANCEL_POLL_S AGENTQ_TOKEN_EVENT_INTERVAL_MS "
    "AGENTQ_STREAM_POLL_S AGENTQ_STREAM_KEEPALIVE_S AGENTQ_RECOVERY_INTERVAL_S "
    "AGENTQ_WORKFLOW_POLL_S "
    + _PROVIDER_ENV
    + "AGENTQ_REST_TIMEOUT_S AGENTQ_MAX_BODY_BYTES AGENTQ_CONTEXT_AUTO AGENTQ_CONSOLE "
    + _RUNNER_ENV
)
_REST_ENV = (
    "AGENTQ_HTTP_ADDR AGENTQ_GRPC_TARGET AGENTQ_GRPC_ADDR (dialled when AGENTQ_GRPC_TARGET "
    "is unset) AGENTQ_REST_TIMEOUT_S AGENTQ_MAX_BODY_BYTES AGENTQ_STREAM_KEEPALIVE_S "
    "AGENTQ_RATE_TIERS (the tiers the OpenAPI document lists) AGENTQ_CONSOLE (off: no web "
    "console at /console) " + _TRACE_ENV + _METRICS_ENV + _LOG_ENV
)
_WORKER_ENV = (
    "AGENTQ_REDIS_URL (required) AGENTQ_REDIS_NAMESPACE AGENTQ_DATABASE_URL "
    "AGENTQ_WORKER_PROCESSES AGENTQ_WORKER_CONCURRENCY AGENTQ_SHUTDOWN_GRACE_S "
    "AGENTQ_MAX_ATTEMPTS AGENTQ_JOB_TIME_LIMIT_S AGENTQ_RETRY_BACKOFF_S "
    "AGENTQ_RETRY_BACKOFF_MAX_S AGENTQ_LEASE_GRACE_S AGENTQ_REQUEUE_AFTER_S "
    "AGENTQ_BROKER_HEARTBEAT_TIMEOUT_S AGENTQ_RETENTION_S AGENTQ_CANCEL_POLL_S "
    "AGENTQ_TOKEN_EVENT_INTERVAL_MS AGENTQ_RECOVERY_INTERVAL_S AGENTQ_WORKFLOW_POLL_S "
    + _PROVIDER_ENV
    + _RUNNER_ENV
)
_TOKEN_ENV = "VEX_JWT_SECRET (required) AGENTQ_JWT_ISSUER AGENTQ_JWT_AUDIENCE"
_MIGRATE_ENV = "AGENTQ_DATABASE_URL"
# Checked against server.auth.ROLES once a token is asked for, and by the tests.
_ROLES_HELP = "admin, user or agent"


class _Version(argparse.Action):
    """`--version`: the installed package's version, looked up only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from importlib.metadata import version

        print(f"agentq {version('agentq')}")
        parser.exit()


def _command(
    commands: Any, name: str, *, summary: str, description: str, env: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=summary, description=description, epilog=f"environment: {env}"
    )
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentq", description=__doc__)
    parser.add_argument("--version", action=_Version)
    parser.add_argument("--log-level", help="logging level (default AGENTQ_LOG_LEVEL, else INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = _command(
        commands,
        "serve",
        summary="run gRPC and REST (and the workers, on the embedded default)",
        description="Serve the gRPC API on AGENTQ_GRPC_ADDR and the REST shim on "
        "AGENTQ_HTTP_ADDR until SIGINT or SIGTERM. Without AGENTQ_REDIS_URL the workers run "
        "in this process. Migrates the database first; exits 2 if an address is in use.",
        env=_SERVE_ENV,
    )
    serve.add_argument(
        "--dev",
        action="store_true",
        help="development mode: listen on 127.0.0.1 unless an address is set, and without "
        "VEX_JWT_SECRET sign with a secret kept in a file beside the SQLite database",
    )
    serve.add_argument("--no-rest", action="store_true", help="serve gRPC only, no REST shim")

    _command(
        commands,
        "rest",
        summary="run the REST shim alone against AGENTQ_GRPC_TARGET (scale it separately)",
        description="Serve the REST shim on AGENTQ_HTTP_ADDR, calling the gRPC server at "
        "AGENTQ_GRPC_TARGET, until SIGINT or SIGTERM; exits 2 if the address is in use.",
        env=_REST_ENV,
    )

    worker = _command(
        commands,
        "worker",
        summary="run queue workers for the Redis broker",
        description="Run jobs from the Redis queue until SIGINT or SIGTERM, in one or more "
        "processes; running jobs get AGENTQ_SHUTDOWN_GRACE_S to finish.",
        env=_WORKER_ENV,
    )
    worker.add_argument("--processes", type=int, help="worker processes (AGENTQ_WORKER_PROCESSES)")
    worker.add_argument(
        "--concurrency",
        type=int,
        help="executions each process runs at once (AGENTQ_WORKER_CONCURRENCY, default 256)",
    )

    token = _command(
        commands,
        "token",
        summary="mint a JWT signed with VEX_JWT_SECRET",
        description="Print a JWT signed (HS256) with VEX_JWT_SECRET, the secret the server "
        "verifies tokens with.",
        env=_TOKEN_ENV,
    )
    token.add_argument("--sub", required=True, help="the subject (sub claim)")
    token.add_argument(
        "--role", default="user", help=f"the role claim: {_ROLES_HELP} (default user)"
    )
    token.add_argument("--tenant", help="the tenant_id claim (default: the subject's own tenant)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.add_argument("--audience", help="the aud claim (default: AGENTQ_JWT_AUDIENCE, if set)")

    _command(
        commands,
        "migrate",
        summary="apply database migrations and exit",
        description="Bring the database at AGENTQ_DATABASE_URL up to the current schema; "
        "safe to run again.",
        env=_MIGRATE_ENV,
    )
    user_commands.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `agentq` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command in user_commands.COMMANDS:
        # A client of a server: no server settings or logging of its own.
        return user_commands.run_command(args)
    if args.command == "token":
        from server.auth.principal import ROLES

        if args.role not in ROLES:
            parser.error(f"--role must be one of: {', '.join(ROLES)}")

    from pydantic import ValidationError

    from rest_shim import access_log
    from server import logs
    from server.configuration import ConfigurationError
    from server.settings import Settings

    try:
        settings = Settings()
        if args.log_level:
            # Validated as the environment's value is: a bad level is a clear error.
            settings = Settings.model_validate(
                {**settings.model_dump(), "log_level": args.log_level}
            )
        logs.configure(
            settings.log_level, format=settings.log_format, levels=settings.logger_levels
        )
        access_log.use(logs.later)  # the shim's lines, as the server's, made by the writer
        return _run(args, settings)
    except ValidationError as error:
        print(f"agentq: {_settings_problems(error)}", file=sys.stderr)
        return 2
    except (ConfigurationError, ValueError) as error:
        logs.flush()  # what was logged before it comes first: the reason is the last line
        print(f"agentq: {error}", file=sys.stderr)
        return 2


def _settings_problems(error: Any) -> str:
    """A pydantic ValidationError as one line, without the values it was given.

    pydantic's own text spans lines and repeats the input, which holds the secrets.
    """
    problems = []
    for problem in error.errors(include_url=False, include_input=False):
        cause = problem.get("ctx", {}).get("error")
        if cause is not None:
            problems.append(str(cause))  # our validators' messages name the variable
            continue
        name = str(problem["loc"][0]) if problem["loc"] else ""
        variable = "VEX_JWT_SECRET" if name == "jwt_secret" else f"AGENTQ_{name.upper()}"
        problems.append(f"{variable}: {problem['msg']}")
    return "; ".join(problems)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from server import tracing
    from server.bootstrap import jwt_secret
    from server.configuration import ConfigurationError

    if args.command in ("serve", "rest", "worker"):
        # Before any server or channel is made: the gRPC instrumentation wraps their
        # constructors. Off unless the OTEL_* variables ask for it (README.md, Tracing).
        tracing.install(args.command, switch=settings.tracing)

    if args.command == "serve":
        import asyncio

        from rest_shim.loop import event_loop_factory
        from server.cli.serve import serve

        if args.dev or settings.dev_mode:
            settings = settings.in_dev_mode()
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(serve(settings, rest=not args.no_rest))
    elif args.command == "rest":
        from rest_shim.serving import ListenError, run_rest
        from rest_shim.settings import RestSettings
        from server.cli.metrics import serve_metrics

        exported = serve_metrics(settings, "rest")
        try:
            run_rest(RestSettings(), tracer_provider=tracing.provider())
        except ListenError as error:
            raise ConfigurationError(str(error)) from None
        finally:
            if exported is not None:
                exported.stop()
    elif args.command == "worker":
        from server.cli.serve import work
        from server.settings import Settings

        updates = {"worker_processes": args.processes, "worker_concurrency": args.concurrency}
        overrides = {k: v for k, v in updates.items() if v is not None}
        # Validated as the environment's values are: a bad number is a clear error.
        settings = Settings.model_validate({**settings.model_dump(), **overrides})
        work(settings)
    elif args.command == "token":
        from server.auth.tokens import mint_token

        if args.ttl <= 0:
            raise ValueError("--ttl must be a positive number of seconds")
        if settings.jwt_secret is None:
            raise ConfigurationError(
                "VEX_JWT_SECRET is not set: set it to the secret the server signs tokens with"
            )
        secret = jwt_secret(settings.model_copy(update={"dev_mode": False}))
        print(
            mint_token(
                secret=secret,
                subject=args.sub,
                role=args.role,
                issuer=settings.jwt_issuer,
                tenant_id=args.tenant,
                lifetime_s=args.ttl,
                audience=args.audience or settings.jwt_audience,
            )
        )
    elif args.command == "migrate":
        from server.store.migrate import create_db_engine, migrate

        migrate(create_db_engine(settings.database_url))
    return 0
