"""The REST shim's FastAPI app, built from settings by `create_app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from rest_shim import console, handlers
from rest_shim.admin_routes import ADMIN
from rest_shim.backend import Backend
from rest_shim.credential_size import CredentialSizeMiddleware
from rest_shim.event_routes import EVENTS
from rest_shim.hot_routes import HotRoutesMiddleware
from rest_shim.key_routes import KEYS
from rest_shim.middleware import RequestContextMiddleware
from rest_shim.routes import API
from rest_shim.rules import documented, one_of
from rest_shim.settings import RestSettings
from rest_shim.table import fastapi_router
from rest_shim.webhook_routes import WEBHOOKS
from rest_shim.workflow_routes import WORKFLOWS

# The route table: every route, declared once, for FastAPI and the fast lane alike.
ROUTES = (*API, *EVENTS, *KEYS, *WORKFLOWS, *WEBHOOKS, *ADMIN)
# Where the files of the interactive docs (Swagger UI, ReDoc) are served.
DOCS_ASSETS = "/docs/assets"

DESCRIPTION = """\
JSON face of the agentq gRPC API, wire-compatible with vex-api: mint an HS256 JWT,
create an agent, queue an execution, and poll the job. Every error has the body
`{"detail", "error": {"code", "message", "status"}}` and every response an `X-Request-ID`.
"""


def _version() -> str:
    try:
        return metadata.version("agentq")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def create_app(settings: RestSettings) -> FastAPI:
    """The app; its gRPC channel opens at startup and closes at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.backend = Backend(settings.target, timeout_s=settings.rest_timeout_s)
        app.state.stream_keepalive_s = settings.stream_keepalive_s
        try:
            yield
        finally:
            await app.state.backend.close()

    # FastAPI's /docs and /redoc load their scripts from a CDN and are blank offline;
    # these pages load the same files from the shim, under DOCS_ASSETS.
    app = FastAPIOffline(
        title="agentq",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        # A redirect has no JSON body; a path with a stray slash is a plain 404.
        redirect_slashes=False,
        static_url=DOCS_ASSETS,
        # Swagger UI would otherwise send the document to an online validator.
        swagger_ui_parameters={"validatorUrl": None},
    )
    # Added first, so they run inside the request context (id, body limit).
    app.add_middleware(HotRoutesMiddleware, routes=ROUTES)
    app.add_middleware(CredentialSizeMiddleware)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)
    handlers.install(app, routes=ROUTES)
    app.include_router(fastapi_router(ROUTES))
    if settings.console:
        console.install(app)
    _finish_document(app.openapi(), tiers=settings.tier_names)
    return app


def _finish_document(document: dict[str, Any], *, tiers: tuple[str, ...]) -> None:
    """Complete the OpenAPI document FastAPI built (and caches) before it is first served."""
    # The tiers are configuration, not a type: the configured ones are the values a
    # tenant's tier may take.
    for body in ("TenantLimitsBody", "CreateApiKeyBody", "CreateKeyBody"):
        properties = document["components"]["schemas"][body]["properties"]
        properties["tier"] |= documented(one_of(tiers), nullable=True).json_schema or {}
    _integer_bounds(document)


def _integer_bounds(node: Any) -> None:
    # FastAPI's schema model holds every bound as a float. `"maximum": 10.0` lets a
    # generator send 10.0 for an integer, which JSON Schema counts as one and the shim's
    # strict integers refuse; integral bounds of an integer are written as integers.
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for bound in ("minimum", "maximum"):
                if isinstance(node.get(bound), float) and node[bound].is_integer():
                    node[bound] = int(node[bound])
        for value in node.values():
            _integer_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _integer_bounds(value)
