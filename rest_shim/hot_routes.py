"""The busiest routes (a job poll, an execution, an agent read) answered straight from ASGI.

FastAPI's routing, dependency solving and exception middleware cost more per request
than the RPC a route makes, and a client polling a job pays them on every poll. This
lane serves those routes itself, but only for requests FastAPI would accept as they
are: the method exactly, a canonical lowercase UUID in the path (so `str(UUID(id))` is
the id), and for a body, JSON that parses to an object and validates. It builds the
same message, makes the same call with the same metadata and renders the same bytes
(render.py). Everything else, including every error the shim itself answers (a bad
id, malformed JSON, the wrong media type, a field rule), goes to FastAPI untouched,
with the body replayed, so those answers still come from one place. FastAPI still
declares the routes, which keeps the OpenAPI document whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentq.v1 import agent_service_pb2 as agents_pb
from agentq.v1 import job_service_pb2 as jobs_pb
from rest_shim import render
from rest_shim.backend import Backend
from rest_shim.errors import rate_headers
from rest_shim.handlers import on_rpc_error
from rest_shim.routes import execute_request
from rest_shim.schemas import ExecuteBody

# The canonical spelling only; any other (upper case, braces, no hyphens) is FastAPI's.
_UUID = "([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"

# The stub method to call and the message to send, for an id, a parsed body and the headers.
Prepare = Callable[[Backend, str, Any, Headers], tuple[Callable[..., Any], Any]]


@dataclass(frozen=True)
class HotRoute:
    """One route of the lane: where it is, its body, its RPC and how its reply renders."""

    path: re.Pattern[str]
    body: type[BaseModel] | None
    prepare: Prepare
    render: Callable[[Any], dict[str, Any]]
    status: int


def _get_job(backend: Backend, job_id: str, body: None, headers: Headers) -> Any:
    return backend.jobs.GetJob, jobs_pb.GetJobRequest(job_id=job_id)


def _get_agent(backend: Backend, agent_id: str, body: None, headers: Headers) -> Any:
    return backend.agents.GetAgent, agents_pb.GetAgentRequest(agent_id=agent_id)


def _execute(backend: Backend, agent_id: str, body: ExecuteBody, headers: Headers) -> Any:
    message = execute_request(agent_id, body, headers.get("idempotency-key"))
    return backend.agents.Execute, message


def _job(reply: jobs_pb.GetJobResponse) -> dict[str, Any]:
    return render.job(reply.job)


def _agent(reply: agents_pb.GetAgentResponse) -> dict[str, Any]:
    return render.agent(reply.agent)


ROUTES: dict[str, tuple[HotRoute, ...]] = {
    "GET": (
        HotRoute(re.compile(f"/api/v1/jobs/{_UUID}"), None, _get_job, _job, status=200),
        HotRoute(re.compile(f"/api/v1/agents/{_UUID}"), None, _get_agent, _agent, status=200),
    ),
    "POST": (
        HotRoute(
            re.compile(f"/api/v1/agents/{_UUID}/execute"),
            ExecuteBody,
            _execute,
            render.execute_ack,
            status=202,
        ),
    ),
}


class HotRoutesMiddleware:
    """Answers the requests of ROUTES it can; hands every other request to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = _match(scope)
        if found is None:
            await self._app(scope, receive, send)
            return
        route, resource_id = found
        headers = Headers(scope=scope)
        body = None
        if route.body is not None:
            received = await _read_body(receive)
            body = _valid_body(route.body, received, headers)
            if body is None:
                await self._app(scope, _replay(received, receive), send)
                return
        response = await _answer(scope, route, resource_id, body, headers)
        await response(scope, receive, send)


def _match(scope: Scope) -> tuple[HotRoute, str] | None:
    # A mounted app (root_path) matches paths differently; leave that to FastAPI.
    if scope["type"] != "http" or scope.get("root_path"):
        return None
    for route in ROUTES.get(scope["method"], ()):
        matched = route.path.fullmatch(scope["path"])
        if matched is not None:
            return route, matched.group(1)
    return None


async def _read_body(receive: Receive) -> list[Message]:
    """The messages of the whole body (or up to a disconnect), as received."""
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives the messages already read again, then the rest of the stream."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


def _valid_body(model: type[BaseModel], received: list[Message], headers: Headers) -> Any:
    """The validated body, or None for anything FastAPI's handlers should answer."""
    # FastAPI reads application/json (and +json) bodies with json.loads and
    # validates the object; the lane takes the plain media type only.
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json" or received[-1]["type"] != "http.request":
        return None
    raw = b"".join(m.get("body", b"") for m in received)
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deep
        return None
    if not isinstance(parsed, dict):
        return None
    try:
        return model.model_validate(parsed)
    except ValidationError:
        return None


async def _answer(
    scope: Scope, route: HotRoute, resource_id: str, body: Any, headers: Headers
) -> Response:
    """Make the route's RPC; its reply, or its error as the handlers render it."""
    backend: Backend = scope["app"].state.backend
    method, message = route.prepare(backend, resource_id, body, headers)
    state = scope["state"]
    try:
        reply, trailers = await backend.call(
            method, message, headers=headers, request_id=state["request_id"]
        )
    except grpc.aio.AioRpcError as error:
        return await on_rpc_error(Request(scope), error)
    # Other exceptions go up to the app's error middleware, as from a route.
    state["rate_headers"] = rate_headers(trailers)
    return render.json_response(route.render(reply), route.status)
