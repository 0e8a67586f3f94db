"""Keyset pages by (time, id), strictly after a cursor, bound by name: newest or oldest first."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Select, and_, bindparam, or_


def newest_first(
    query: Select[Any], at: Column[Any], key: Column[Any], *, after: bool
) -> Select[Any]:
    """The query's rows newest first by (`at`, `key`), up to `limit`.

    With `after`, only rows strictly after the cursor (`after_at`, `after_id`).
    """
    if after:
        since = bindparam("after_at", type_=at.type)
        last = bindparam("after_id", type_=key.type)
        query = query.where(or_(at < since, and_(at == since, key < last)))
    return query.order_by(at.desc(), key.desc()).limit(bindparam("limit"))


def oldest_first(
    query: Select[Any], at: Column[Any], key: Column[Any], *, after: bool
) -> Select[Any]:
    """The query's rows oldest first by (`at`, `key`), up to `limit`; see `newest_first`."""
    if after:
        since = bindparam("after_at", type_=at.type)
        last = bindparam("after_id", type_=key.type)
        query = query.where(or_(at > since, and_(at == since, key > last)))
    return query.order_by(at, key).limit(bindparam("limit"))
