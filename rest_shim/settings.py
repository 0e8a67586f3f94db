"""Settings of the REST shim, read from the environment by its entry point.

The shim is its own deployable (`agentq rest`) and never imports the server, so
it has its own small settings class; the variable names are those of docs/contract.md §5.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from rest_shim.rules import DEFAULT_TIERS


class RestSettings(BaseSettings):
    """Where the shim listens, which gRPC server it calls, and how long it waits."""

    model_config = SettingsConfigDict(env_prefix="AGENTQ_", extra="ignore")

    http_addr: str = "0.0.0.0:8080"
    grpc_addr: str = "0.0.0.0:50051"
    grpc_target: str | None = None
    # Deadline of each gRPC call; past it the client gets 504.
    rest_timeout_s: float = Field(default=10.0, gt=0)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    # An SSE stream sends a keep-alive comment after this much silence.
    stream_keepalive_s: float = Field(default=15.0, gt=0)
    # The server's rate tiers (AGENTQ_RATE_TIERS), read for their names only: the OpenAPI
    # document lists them as the values a tenant's tier may take.
    rate_tiers: dict[str, Any] = Field(default_factory=lambda: dict.fromkeys(DEFAULT_TIERS))
    # The web console at /console (README.md, Console); AGENTQ_CONSOLE=off makes it a 404.
    console: bool = True

    @property
    def tier_names(self) -> tuple[str, ...]:
        """The names of the configured rate tiers, sorted."""
        return tuple(sorted(self.rate_tiers))

    @property
    def target(self) -> str:
        """The gRPC address to dial: AGENTQ_GRPC_TARGET, else the local server."""
        if self.grpc_target:
            return self.grpc_target
        host, _, port = self.grpc_addr.rpartition(":")
        if host in ("", "0.0.0.0", "[::]", "::"):
            host = "127.0.0.1"
        return f"{host}:{port}"

    @property
    def http_host_port(self) -> tuple[str, int]:
        """AGENTQ_HTTP_ADDR split for uvicorn."""
        host, _, port = self.http_addr.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)
