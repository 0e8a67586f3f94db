"""Exception handlers: every error, FastAPI's own included, gets the body of docs/contract.md §2."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import compile_path

from rest_shim.access_log import tenant_from
from rest_shim.errors import INTERNAL_MESSAGE, error_response, from_rpc_error
from rest_shim.middleware import body_too_large
from rest_shim.table import Route

log = logging.getLogger(__name__)

# Pydantic error types that mean the body as a whole is not a JSON object.
_NOT_AN_OBJECT = {"model_attributes_type", "dict_type", "missing"}


def media_type(content_type: str) -> str:
    """The media type of a Content-Type value, lowercase and without parameters."""
    return content_type.split(";", 1)[0].strip().lower()


def _is_json(content_type: str) -> bool:
    media = media_type(content_type)
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """Malformed JSON 400, wrong media type 415, field rules 422 with FastAPI's detail list."""
    assert isinstance(exc, RequestValidationError)
    errors: list[dict[str, Any]] = list(exc.errors())
    body_errors = [e for e in errors if tuple(e.get("loc", ()))[:1] == ("body",)]
    declared_json = _is_json(request.headers.get("content-type", ""))
    # FastAPI reads only a body declared as JSON, which also keeps cross-site
    # form posts out; any other non-empty body is of the wrong media type.
    if body_errors and not declared_json and await request.body():
        return error_response("UNSUPPORTED_MEDIA_TYPE", "Content-Type must be application/json")
    for error in body_errors:
        if error.get("type") == "json_invalid":
            return _malformed()
        if tuple(error["loc"]) == ("body",) and error.get("type") in _NOT_AN_OBJECT:
            return error_response("BAD_REQUEST", "Request body must be a JSON object")
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
    return error_response("VALIDATION_ERROR", detail[0]["msg"], detail=detail)


def _malformed() -> JSONResponse:
    return error_response("BAD_REQUEST", "Malformed JSON in request body")


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors: unknown route 404, wrong method 405, unreadable body 400."""
    assert isinstance(exc, HTTPException)
    limit = request.scope.get("state", {}).get("body_too_large")
    if limit:
        # The body went over the limit while FastAPI was reading it.
        return body_too_large(limit)
    if exc.status_code == 405:
        allow = ", ".join(_allowed_methods(request))
        return error_response("METHOD_NOT_ALLOWED", "Method not allowed", headers={"Allow": allow})
    if exc.status_code == 404:
        return error_response("NOT_FOUND", "Not found")
    if exc.status_code == 400:
        # FastAPI could not decode the body (bad UTF-8, nesting too deep, ...).
        return _malformed()
    log.error("unexpected HTTP error %s (request %s)", exc.status_code, request.state.request_id)
    return error_response("INTERNAL_ERROR", INTERNAL_MESSAGE)


def _allowed_methods(request: Request) -> list[str]:
    # Starlette names only the methods of the first route whose path matched; a
    # path the table serves with several routes (GET and POST /api/v1/agents) has them all.
    path = request.scope["path"]
    table: tuple[Route, ...] = request.app.state.routes
    return sorted({route.method for route in table if _path_pattern(route.path).fullmatch(path)})


@functools.cache
def _path_pattern(template: str) -> re.Pattern[str]:
    pattern, _, _ = compile_path(template)
    return pattern


async def on_rpc_error(request: Request, exc: Exception) -> JSONResponse:
    """A failed RPC: the status and body come from its google.rpc.Status details."""
    assert isinstance(exc, grpc.aio.AioRpcError)
    state = request.scope["state"]
    state["tenant"] = tenant_from(tuple(exc.trailing_metadata() or ()))
    response = from_rpc_error(exc, locate=state.get("field_location"))
    if response.status_code >= 500:
        log.warning(
            "backend answered %s (%s) for request %s",
            exc.code().name,
            exc.details(),
            request.state.request_id,
        )
    return response


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    """Anything else: 500 with the generic message; the cause is logged with the request id."""
    log.error("unhandled error (request %s)", request.state.request_id, exc_info=exc)
    return error_response("INTERNAL_ERROR", INTERNAL_MESSAGE)


def install(app: FastAPI, *, routes: Iterable[Route]) -> None:
    """Register every handler on the app; `routes` is the table a 405's `Allow` is read from."""
    app.state.routes = tuple(routes)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(grpc.aio.AioRpcError, on_rpc_error)
    app.add_exception_handler(Exception, on_unexpected)
