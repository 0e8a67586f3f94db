"""The `agentq` command: serve, worker, rest, token, migrate."""

from __future__ import annotations

import argparse
import asyncio
import sys

from pydantic import ValidationError

from rest_shim.loop import event_loop_factory
from server import logs
from server.auth import ROLES, mint_token
from server.db import create_db_engine, migrate
from server.runtime import ConfigurationError, jwt_secret
from server.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentq", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", help="run gRPC and REST (and the workers, on the embedded default)"
    )
    serve.add_argument(
        "--dev", action="store_true", help="development mode: make a JWT secret if none is set"
    )
    serve.add_argument("--no-rest", action="store_true", help="serve gRPC only, no REST shim")

    commands.add_parser(
        "rest", help="run the REST shim alone against AGENTQ_GRPC_TARGET (scale it separately)"
    )

    worker = commands.add_parser("worker", help="run queue workers for the Redis broker")
    worker.add_argument("--processes", type=int, help="worker processes (AGENTQ_WORKER_PROCESSES)")
    worker.add_argument(
        "--concurrency",
        type=int,
        help="executions each process runs at once (AGENTQ_WORKER_CONCURRENCY, default 256)",
    )

    token = commands.add_parser("token", help="mint a JWT signed with VEX_JWT_SECRET")
    token.add_argument("--sub", required=True, help="the subject (sub claim)")
    token.add_argument(
        "--role", default="user", choices=ROLES, help="the role claim (default user)"
    )
    token.add_argument("--tenant", help="the tenant_id claim (default: the subject's own tenant)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.add_argument("--audience", help="the aud claim (default: AGENTQ_JWT_AUDIENCE, if set)")

    commands.add_parser("migrate", help="apply database migrations and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `agentq` console script."""
    args = _parser().parse_args(argv)
    logs.configure(args.log_level)
    try:
        settings = Settings()
        return _run(args, settings)
    except (ConfigurationError, ValidationError, ValueError) as error:
        print(f"agentq: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "serve":
        from server.serve import serve

        if args.dev:
            settings = settings.model_copy(update={"dev_mode": True})
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(serve(settings, rest=not args.no_rest))
    elif args.command == "rest":
        from rest_shim.serving import run_rest
        from rest_shim.settings import RestSettings

        run_rest(RestSettings())
    elif args.command == "worker":
        from server.serve import work

        updates = {"worker_processes": args.processes, "worker_concurrency": args.concurrency}
        overrides = {k: v for k, v in updates.items() if v is not None}
        # Validated as the environment's values are: a bad number is a clear error.
        settings = Settings.model_validate({**settings.model_dump(), **overrides})
        work(settings)
    elif args.command == "token":
        if args.ttl <= 0:
            raise ValueError("--ttl must be a positive number of seconds")
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
        migrate(create_db_engine(settings.database_url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
