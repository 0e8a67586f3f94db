"""Cursor pagination: opaque page tokens over a (timestamp, id) keyset, newest first."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from server.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# Tokens we issue are about 120 characters; anything much longer is not ours.
MAX_TOKEN_CHARS = 512


@dataclass(frozen=True)
class Cursor:
    """The last row of a page: the next page starts strictly after it."""

    at: datetime
    id: str


Row = TypeVar("Row")


@dataclass(frozen=True)
class Page(Generic[Row]):
    """One page of a list and the token of the next, if any."""

    items: Sequence[Row]
    size: int
    next_token: str | None


def page_of(
    rows: Sequence[Row], *, limit: int, scope: str, cursor: Callable[[Row], Cursor]
) -> Page[Row]:
    """The page in `rows`, fetched as `limit + 1` so that one extra row tells of a next page."""
    items = list(rows[:limit])
    more = len(rows) > limit
    next_token = encode(cursor(items[-1]), scope=scope) if more else None
    return Page(items=items, size=limit, next_token=next_token)


def page_size(value: int | None) -> int:
    """The requested page size, defaulted, or INVALID_ARGUMENT outside 1 to 100."""
    if value is None:
        return DEFAULT_PAGE_SIZE
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise InvalidArgument.field(
            "page_size", f"Invalid page_size: must be between 1 and {MAX_PAGE_SIZE}"
        )
    return value


def _fingerprint(scope: str) -> str:
    # Binds a token to its list and filters, so it can't be replayed on another.
    return hashlib.sha256(scope.encode()).hexdigest()[:16]


def encode(cursor: Cursor, *, scope: str) -> str:
    """An opaque token for the page after `cursor` in the list named by `scope`."""
    body = {"at": cursor.at.isoformat(), "id": cursor.id, "s": _fingerprint(scope)}
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, *, scope: str) -> Cursor | None:
    """The cursor of a token (None for the first page), or INVALID_ARGUMENT."""
    if not token:
        return None
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidArgument.field("page_token", "Invalid page_token")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        cursor = Cursor(at=datetime.fromisoformat(body["at"]), id=str(body["id"]))
        valid = body["s"] == _fingerprint(scope) and cursor.at.tzinfo is not None
    except (binascii.Error, ValueError, KeyError, TypeError, RecursionError):
        valid = False
    if not valid:
        raise InvalidArgument.field("page_token", "Invalid page_token")
    return cursor
