"""Cursor pagination: opaque page tokens over a (timestamp, id) keyset, newest first."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from server.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# Tokens we issue are about 160 characters; anything much longer is not ours.
MAX_TOKEN_CHARS = 512
TAG_BYTES = 32


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


def _invalid() -> InvalidArgument:
    return InvalidArgument.field("page_token", "Invalid page_token")


class PageTokens:
    """Issues and reads page tokens, each authenticated by an HMAC-SHA256 tag.

    Every replica must share `key`, so a token from one is read by any other.
    Without a key, a random one serves a single process.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key else secrets.token_bytes(32)

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def encode(self, cursor: Cursor, *, scope: str) -> str:
        """An opaque, URL-safe token for the page after `cursor` in the list named by `scope`."""
        body = {"at": cursor.at.isoformat(), "id": cursor.id, "s": _fingerprint(scope)}
        payload = json.dumps(body, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(self._tag(payload) + payload).decode().rstrip("=")

    def decode(
        self, token: str, *, scope: str, valid_id: Callable[[str], bool] | None = None
    ) -> Cursor | None:
        """The cursor of a token (None for the first page), or INVALID_ARGUMENT.

        The cursor's id must be a canonical UUID, or pass `valid_id` for lists keyed
        otherwise (the event log).
        """
        if not token:
            return None
        if len(token) > MAX_TOKEN_CHARS:
            raise _invalid()
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise _invalid() from None
        tag, payload = raw[:TAG_BYTES], raw[TAG_BYTES:]
        # The tag is checked before the payload is parsed: nothing forged reaches the parser.
        if len(tag) != TAG_BYTES or not hmac.compare_digest(tag, self._tag(payload)):
            raise _invalid()
        cursor = _cursor_of(payload, scope=scope, valid_id=valid_id or _is_uuid)
        if cursor is None:
            raise _invalid()
        return cursor

    async def fetch_page(
        self,
        *,
        size: int | None,
        token: str,
        scope: str,
        fetch: Callable[[Cursor | None, int], Awaitable[Sequence[Row]]],
        cursor: Callable[[Row], Cursor],
    ) -> Page[Row]:
        """The page a request asks for: its size checked, its token read, `fetch(after,
        limit)` asked for one row more than the page holds.
        """
        limit = page_size(size)
        rows = await fetch(self.decode(token, scope=scope), limit + 1)
        return self.page_of(rows, limit=limit, scope=scope, cursor=cursor)

    def page_of(
        self, rows: Sequence[Row], *, limit: int, scope: str, cursor: Callable[[Row], Cursor]
    ) -> Page[Row]:
        """The page in `rows`, fetched as `limit + 1` so that one extra row tells of a next page."""
        items = list(rows[:limit])
        more = len(rows) > limit
        next_token = self.encode(cursor(items[-1]), scope=scope) if more else None
        return Page(items=items, size=limit, next_token=next_token)


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _cursor_of(payload: bytes, *, scope: str, valid_id: Callable[[str], bool]) -> Cursor | None:
    # A valid tag vouches for the key holder, yet the payload is still checked in full:
    # a time any database can store, in UTC, and an id of the list's form.
    try:
        body = json.loads(payload)
        if not isinstance(body, dict) or body.get("s") != _fingerprint(scope):
            return None
        at, id_ = body.get("at"), body.get("id")
        if not isinstance(at, str) or not isinstance(id_, str):
            return None
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None:
            return None
        utc = parsed.astimezone(UTC)
        if not valid_id(id_):
            return None
    except (ValueError, TypeError, OverflowError, RecursionError):
        return None
    return Cursor(at=utc, id=id_)
