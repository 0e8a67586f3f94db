"""The user commands of `agentq`: run, agents and jobs, on the SDK.

The agentq-client distribution installs them as its `agentq` command; the server's
`agentq` (the agentq distribution) has them too, besides serve, worker, token and migrate.
Only argparse is imported until a command runs, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentq.client.models import Job
    from agentq.client.sync import Client

COMMANDS = ("run", "agents", "jobs")
EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3
EXIT_REFUSED = 4
EXIT_INTERRUPTED = 130
EXIT_CODES = (
    "exit status: 0 the job completed (or the request succeeded), 1 the job failed, "
    "2 a usage error, 3 the job was cancelled, 4 the server refused the request or did not "
    "answer"
)
CONNECTION_ENV = (
    "environment: AGENTQ_URL (default 127.0.0.1:50051; grpcs:// for TLS), AGENTQ_API_KEY "
    "(exchanged for short-lived tokens), AGENTQ_TOKEN (a JWT)"
)
STATUSES = ("pending", "running", "completed", "failed", "cancelled")


def _connection() -> argparse.ArgumentParser:
    """The options every user command takes: where the server is and who calls."""
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("connection")
    group.add_argument("--url", help="the server's gRPC address (AGENTQ_URL)")
    group.add_argument("--api-key", help="an API key, agq_... (AGENTQ_API_KEY)")
    group.add_argument("--token", help="a JWT (AGENTQ_TOKEN)")
    group.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per request (default 30)"
    )
    group.add_argument("--json", action="store_true", help="print JSON, for scripts")
    return options


def add_commands(commands: Any) -> None:
    """Add run, agents and jobs to the subcommands of an `agentq` parser."""
    common = [_connection()]
    epilog = f"{EXIT_CODES}. {CONNECTION_ENV}"
    _add_run(commands, common, epilog)
    _add_agents(commands, common)
    _add_jobs(commands, common, epilog)


def _add_run(commands: Any, common: list[argparse.ArgumentParser], epilog: str) -> None:
    run = commands.add_parser(
        "run",
        parents=common,
        help="execute an agent and print its answer",
        description="Queue an execution of an agent and print its answer once it has "
        "finished; with --follow, print it as it streams, with a status line on stderr "
        "for each step (queued, started, retrying).",
        epilog=epilog,
    )
    run.add_argument("--agent", required=True, help="the agent's id")
    run.add_argument("prompt", help="the prompt")
    run.add_argument("--follow", "-f", action="store_true", help="stream the answer")
    run.add_argument("--detach", action="store_true", help="print the job id and return")


def _add_agents(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    agents = commands.add_parser("agents", help="create, list, get or delete agents")
    actions = agents.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", parents=common, help="create an agent")
    create.add_argument("--name", required=True, help="1 to 100 letters, digits, spaces, - or _")
    create.add_argument("--role", required=True, help="the system prompt, 3 to 500 characters")
    create.add_argument("--max-depth", type=int, help="deepest sub-agent chain, 0 to 10")
    listing = actions.add_parser("list", parents=common, help="list agents, newest first")
    listing.add_argument("--limit", type=int, default=20, help="at most this many (0: all)")
    for action, summary in (("get", "show an agent"), ("delete", "delete an agent")):
        actions.add_parser(action, parents=common, help=summary).add_argument("id")


def _add_jobs(commands: Any, common: list[argparse.ArgumentParser], epilog: str) -> None:
    jobs = commands.add_parser("jobs", help="list, get, cancel or watch jobs")
    actions = jobs.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", parents=common, help="list jobs, newest first")
    listing.add_argument("--agent", help="only this agent's jobs")
    listing.add_argument("--status", choices=STATUSES, help="only jobs in this state")
    listing.add_argument("--limit", type=int, default=20, help="at most this many (0: all)")
    for action, summary in (
        ("get", "show a job and its result"),
        ("cancel", "cancel a job"),
        ("watch", "stream a job's events until it ends; exits with its outcome"),
    ):
        parser = actions.add_parser(action, parents=common, help=summary, epilog=epilog)
        parser.add_argument("id")


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed user command; returns the exit status."""
    from agentq.client.errors import AgentQError

    try:
        with _client(args) as client:
            return _dispatch(client, args)
    except AgentQError as error:
        print(f"agentq: {type(error).__name__}: {error.message}", file=sys.stderr)
        for violation in getattr(error, "violations", []):
            print(f"agentq:   {violation.field}: {violation.description}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _client(args: argparse.Namespace) -> Client:
    from agentq.client.sync import Client

    options: dict[str, Any] = {"timeout": args.timeout}
    if args.url:
        options["url"] = args.url
    if args.api_key:
        options["api_key"] = args.api_key
    elif args.token:
        options["token"] = args.token
    return Client.from_env(**options)


def _dispatch(client: Client, args: argparse.Namespace) -> int:
    from agentq.client import render

    if args.command == "run":
        handle = client.execute(args.agent, args.prompt)
        if args.detach:
            render.submission(handle.id, as_json=args.json)
            return EXIT_COMPLETED
        if args.follow:
            return _outcome(render.follow(handle.events(), as_json=args.json))
        return _finished(handle.wait(), as_json=args.json)
    if args.command == "agents":
        return _agents(client, args)
    if args.action == "watch":
        return _outcome(render.follow(client.job(args.id).events(), as_json=args.json))
    if args.action == "list":
        found = client.jobs.list(agent_id=args.agent, status=args.status)
        render.jobs(_first(found, args.limit), as_json=args.json)
    elif args.action == "get":
        render.job(client.jobs.get(args.id), as_json=args.json)
    elif args.action == "cancel":
        render.job(client.jobs.cancel(args.id), as_json=args.json)
    return EXIT_COMPLETED


def _agents(client: Client, args: argparse.Namespace) -> int:
    from agentq.client import render

    if args.action == "create":
        made = client.agents.create(name=args.name, role=args.role, max_depth=args.max_depth)
        render.agents([made], as_json=args.json, one=True)
    elif args.action == "list":
        render.agents(_first(client.agents.list(), args.limit), as_json=args.json)
    elif args.action == "get":
        render.agents([client.agents.get(args.id)], as_json=args.json, one=True)
    elif args.action == "delete":
        client.agents.delete(args.id)
        if not args.json:
            print(f"deleted agent {args.id}")
    return EXIT_COMPLETED


def _first(items: Any, limit: int) -> list[Any]:
    """Up to `limit` items of an auto-paging iterator (all of them for 0)."""
    taken = []
    for item in items:
        taken.append(item)
        if limit and len(taken) >= limit:
            break
    return taken


def _outcome(final: str | None) -> int:
    """The exit status for a job's last event type."""
    return {"completed": EXIT_COMPLETED, "cancelled": EXIT_CANCELLED}.get(final or "", EXIT_FAILED)


def _finished(job: Job, *, as_json: bool) -> int:
    from agentq.client import render

    render.answer(job, as_json=as_json)
    return _outcome(job.status.value)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the agentq-client distribution's `agentq` command."""
    parser = argparse.ArgumentParser(
        prog="agentq",
        description="Run agents and watch their jobs on an agentq server.",
        epilog=CONNECTION_ENV,
    )
    parser.add_argument("--version", action="version", version=f"agentq {_version()}")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return run_command(parser.parse_args(argv))


def _version() -> str:
    from importlib.metadata import version

    return version("agentq-client")


if __name__ == "__main__":
    sys.exit(main())
