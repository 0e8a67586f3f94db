"""The REST route table: each route declared once, for FastAPI and the fast lane alike.

A route is the function that builds its RPC's request message, declared with
`RouteTable.route`. The function's parameters are what the route reads (path ids,
query parameters, headers and a JSON body, annotated as for FastAPI); its name and
docstring name and describe the operation; the declaration adds the method and path,
the RPC, the success status, the renderer of the reply and what OpenAPI documents.

`fastapi_router` makes FastAPI routes of the table: FastAPI validates, answers every error
the shim decides itself, and writes the OpenAPI document. The fast lane (hot_routes.py)
serves the routes declared `fast` from the same declarations, for requests that need
none of that. Both build the message with the route's function and answer with
`Backend.answer`, so a path, a status, a call and a rendering exist once.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar, get_args, get_origin

from fastapi import APIRouter, params
from fastapi.params import Depends
from google.protobuf import descriptor_pool
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from rest_shim.backend import Backend
from rest_shim.schemas import ErrorBody

# Answers a route whose reply is not one rendered message (the SSE stream): the
# request, the stub method of its RPC and the message to send.
Respond = Callable[[Request, Callable[..., Any], Any], Awaitable[Response]]
Build = TypeVar("Build", bound=Callable[..., Any])


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entries of error statuses, each with the one error body."""
    return {status: {"model": ErrorBody} for status in statuses}


@dataclass(frozen=True)
class Route:
    """One REST route: its request, its one RPC, and how the reply is answered."""

    method: str
    path: str
    build: Callable[..., Any]
    # The RPC as `Service.Method` of agentq.v1, e.g. `JobService.GetJob`.
    rpc: str
    # The JSON body of a reply; None for a route that answers with no body.
    render: Callable[[Any], Any] | None
    tag: str
    status: int = 200
    response_model: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    # FastAPI security dependencies: they document the credentials, the server checks them.
    credentials: Sequence[Depends] = ()
    fast: bool = False
    respond: Respond | None = None
    response_class: type[Response] | None = None
    responses: dict[int | str, dict[str, Any]] = field(default_factory=dict)
    # Message fields a header parameter fills when it is sent, and the body otherwise:
    # field -> the build function's parameter.
    header_fields: Mapping[str, str] = field(default_factory=dict)

    @property
    def signature(self) -> inspect.Signature:
        """The build function's parameters, with their annotations evaluated."""
        return inspect.signature(self.build, eval_str=True)

    def location(self, arguments: Mapping[str, Any], message_field: str) -> list[str]:
        """FastAPI's `loc` of a message field the server refused: where the value was sent."""
        name = self.header_fields.get(message_field)
        if name is None or arguments.get(name) is None:
            name = message_field
        parameter = self.signature.parameters.get(name)
        if parameter is None:
            return ["body", message_field]
        if f"{{{name}}}" in self.path:
            return ["path", name]
        declared = next(
            (m for m in _metadata(parameter.annotation) if isinstance(m, params.Param)), None
        )
        if isinstance(declared, params.Header):
            alias = declared.alias or (
                name.replace("_", "-") if declared.convert_underscores else name
            )
            return ["header", alias]
        return ["query", (declared.alias if declared is not None else None) or name]


def _metadata(annotation: Any) -> tuple[Any, ...]:
    return tuple(get_args(annotation)[1:]) if get_origin(annotation) is Annotated else ()


class RouteTable:
    """Routes declared with `route`, in the order FastAPI matches and documents them."""

    def __init__(self) -> None:
        self._routes: list[Route] = []

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes)

    def route(
        self,
        method: str,
        path: str,
        *,
        rpc: str,
        render: Callable[[Any], Any] | None,
        tag: str,
        status: int = 200,
        response_model: type[BaseModel] | None = None,
        errors: tuple[int, ...] = (),
        credentials: Sequence[Depends] = (),
        fast: bool = False,
        respond: Respond | None = None,
        response_class: type[Response] | None = None,
        responses: dict[int | str, dict[str, Any]] | None = None,
        header_fields: Mapping[str, str] | None = None,
    ) -> Callable[[Build], Build]:
        """Declare the decorated request builder as the route `method path` calling `rpc`."""

        def declare(build: Build) -> Build:
            route = Route(
                method,
                path,
                build,
                rpc=rpc,
                render=render,
                tag=tag,
                status=status,
                response_model=response_model,
                errors=errors,
                credentials=credentials,
                fast=fast,
                respond=respond,
                response_class=response_class,
                responses=responses or {},
                header_fields=header_fields or {},
            )
            _check_rpc(route)
            self._routes.append(route)
            return build

        return declare


def fastapi_router(routes: Iterable[Route]) -> APIRouter:
    """A FastAPI router with one route per declaration, in their order."""
    router = APIRouter()
    for route in routes:
        optional: dict[str, Any] = {}
        if route.status != 200:
            optional["status_code"] = route.status
        if route.response_class is not None:
            optional["response_class"] = route.response_class
        router.add_api_route(
            route.path,
            _Endpoint(route),
            methods=[route.method],
            name=route.build.__name__,
            description=inspect.cleandoc(route.build.__doc__ or ""),
            response_model=route.response_model,
            responses={**route.responses, **errors(*route.errors)},
            dependencies=list(route.credentials),
            tags=[route.tag],
            **optional,
        )
    return router


class _Endpoint:
    """A route's FastAPI endpoint: FastAPI reads the build function's parameters."""

    def __init__(self, route: Route) -> None:
        self._route = route
        signature = route.signature
        assert "request" not in signature.parameters, f"{route.path}: `request` is reserved"
        request = inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request)
        self.__signature__ = signature.replace(
            parameters=[*signature.parameters.values(), request], return_annotation=Response
        )

    async def __call__(self, request: Request, **parameters: Any) -> Response:
        route = self._route
        message = route.build(**parameters)
        backend: Backend = request.app.state.backend
        if route.respond is not None:
            return await route.respond(request, backend.method(route.rpc), message)
        return await backend.answer(
            route,
            message,
            arguments=parameters,
            headers=request.headers,
            state=request.scope["state"],
        )


def _check_rpc(route: Route) -> None:
    # A misspelt RPC, or a builder of another RPC's message, fails when the
    # table is declared rather than on the route's first request.
    method = descriptor_pool.Default().FindMethodByName(f"agentq.v1.{route.rpc}")
    built = route.signature.return_annotation
    if getattr(built, "DESCRIPTOR", None) is not method.input_type:
        raise TypeError(f"{route.build.__name__} must return {method.input_type.full_name}")
