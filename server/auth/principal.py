"""Who is calling: the principal of a request, its tenant, role and scopes, and their checks."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from server.errors import PermissionDenied

ROLES = ("admin", "user", "agent")
# The width of every tenant_id column (server/store/models.py).
MAX_TENANT_CHARS = 255
INSUFFICIENT_PERMISSIONS = "Insufficient permissions"
SCOPE_DENIED = "Token scope not authorized for this endpoint"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: who, with which role, in which tenant."""

    subject: str
    role: str
    tenant_id: str
    # The scopes an API key (or a token made from one) grants; None for an
    # operator's JWT, which is limited by its role alone.
    scopes: frozenset[str] | None = None
    # The API key the caller used, or the one its token was exchanged for: the key's
    # revocation ends the token too.
    api_key_id: str | None = None
    # When the API key expires (None: never, or not a key); a token made from the key
    # expires by then.
    key_expires_at: datetime | None = None


def is_non_empty_str(value: object) -> bool:
    """True for a string with at least one character and no NUL (no database stores it)."""
    return isinstance(value, str) and value != "" and "\x00" not in value


def is_tenant_id(value: object) -> bool:
    """True for a tenant id that can be stored: 1 to 255 characters, no NUL."""
    return is_non_empty_str(value) and len(str(value)) <= MAX_TENANT_CHARS


def require_scope(principal: Principal, scope: str | None) -> None:
    """Raises PermissionDenied when the caller is limited by scopes and lacks `scope`.

    `scope` None means the method needs no scope (the token exchange, reflection).
    """
    if principal.scopes is not None and scope is not None and scope not in principal.scopes:
        raise PermissionDenied(SCOPE_DENIED)


def require_role(principal: Principal, allowed: Collection[str]) -> None:
    """Raises PermissionDenied unless the caller's role is allowed; admin is always allowed."""
    if principal.role != "admin" and principal.role not in allowed:
        raise PermissionDenied(INSUFFICIENT_PERMISSIONS)
