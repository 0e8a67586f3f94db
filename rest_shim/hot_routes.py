"""The fast lane: the routes declared `fast` (a job poll, an execution, an agent read) from ASGI.

FastAPI's routing, dependency solving and exception middleware cost more per request
than the RPC a route makes, and a client polling a job pays them on every poll. This
lane serves those routes from their declarations in the route table (table.py), but
only requests FastAPI would accept as they are: the method exactly, a canonical
lowercase UUID for each path id (so `UUID(id)` spells it the same), and for a body,
plain `application/json` that parses to an object and validates. The route's own
function builds the message and `Backend.answer` makes the call and renders the reply,
as for FastAPI. Everything else, including every error the shim itself answers (a bad
id, malformed JSON, another media type, a field rule), goes to FastAPI untouched, with
the body replayed, so those answers still come from one place.
"""

from __future__ import annotations

import inspect
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin

import grpc
from fastapi import params
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rest_shim.backend import Backend
from rest_shim.handlers import media_type, on_rpc_error
from rest_shim.table import Route

# The canonical spelling only; any other (upper case, braces, no hyphens) is FastAPI's.
_UUID = "([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
_PATH_VARIABLE = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class LaneRoute:
    """A fast route as the lane reads it: its path, and where each argument comes from."""

    route: Route
    path: re.Pattern[str]
    # The build function's parameter of each id in the path, in order.
    ids: tuple[str, ...]
    # The parameter of the JSON body and its model, if the route takes one.
    body: tuple[str, type[BaseModel]] | None
    # (parameter, header name) of each value read from a request header.
    headers: tuple[tuple[str, str], ...]

    def arguments(self, ids: tuple[str, ...], body: Any, headers: Headers) -> dict[str, Any]:
        """The build function's arguments, as FastAPI would pass them."""
        found: dict[str, Any] = {
            name: uuid.UUID(value) for name, value in zip(self.ids, ids, strict=True)
        }
        for name, header in self.headers:
            found[name] = headers.get(header)
        if self.body is not None:
            found[self.body[0]] = body
        return found


def lane_route(route: Route) -> LaneRoute:
    """How the lane reads `route`; a parameter it cannot read is an error in the table."""
    ids = tuple(_PATH_VARIABLE.findall(route.path))
    literal = _PATH_VARIABLE.split(route.path)[::2]
    path = re.compile(_UUID.join(re.escape(part) for part in literal))
    body, headers = None, []
    for name, parameter in route.signature.parameters.items():
        annotation = parameter.annotation
        if name in ids and annotation is uuid.UUID:
            continue
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            body = (name, annotation)
        elif _is_plain_header(parameter):
            headers.append((name, name.replace("_", "-")))
        else:
            raise TypeError(f"{route.method} {route.path}: the fast lane cannot read {name}")
    return LaneRoute(route, path, ids, body, tuple(headers))


def _is_plain_header(parameter: inspect.Parameter) -> bool:
    # An optional string header under its own name: any value FastAPI would take as is.
    if get_origin(parameter.annotation) is not Annotated:
        return False
    kind, *metadata = get_args(parameter.annotation)
    return kind == str | None and any(
        isinstance(m, params.Header) and m.alias is None and m.convert_underscores for m in metadata
    )


class HotRoutesMiddleware:
    """Answers the requests of the fast routes it can; hands every other request to the app."""

    def __init__(self, app: ASGIApp, *, routes: Iterable[Route]) -> None:
        self._app = app
        self._routes: dict[str, list[LaneRoute]] = {}
        for route in routes:
            if route.fast:
                self._routes.setdefault(route.method, []).append(lane_route(route))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._match(scope)
        if found is None:
            await self._app(scope, receive, send)
            return
        lane, ids = found
        # FastAPI names the route it matched in the scope; the lane does it for its own.
        scope["state"]["route"] = lane.route.path
        headers = Headers(scope=scope)
        body = None
        if lane.body is not None:
            received = await _read_body(receive)
            body = _valid_body(lane.body[1], received, headers)
            if body is None:
                await self._app(scope, _replay(received, receive), send)
                return
        response = await _answer(scope, lane, ids, body, headers)
        await response(scope, receive, send)

    def _match(self, scope: Scope) -> tuple[LaneRoute, tuple[str, ...]] | None:
        # A mounted app (root_path) matches paths differently; leave that to FastAPI.
        if scope["type"] != "http" or scope.get("root_path"):
            return None
        for lane in self._routes.get(scope["method"], ()):
            matched = lane.path.fullmatch(scope["path"])
            if matched is not None:
                return lane, matched.groups()
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
    media = media_type(headers.get("content-type", ""))
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
    scope: Scope, lane: LaneRoute, ids: tuple[str, ...], body: Any, headers: Headers
) -> Response:
    """The route's answer, or its RPC's error as the handlers render it."""
    backend: Backend = scope["app"].state.backend
    arguments = lane.arguments(ids, body, headers)
    message = lane.route.build(**arguments)
    # Other exceptions go up to the app's error middleware, as from a route.
    try:
        return await backend.answer(
            lane.route, message, arguments=arguments, headers=headers, state=scope["state"]
        )
    except grpc.aio.AioRpcError as error:
        return await on_rpc_error(Request(scope), error)
