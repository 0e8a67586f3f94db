"""Keyset pages by (time, id), strictly after a cursor, bound by name: newest or oldest first."""

from __future__ import annotations

import operator
from typing import Any

from sqlalchemy import Column, Select, and_, bindparam, or_


def newest_first(
    query: Select[Any], at: Column[Any], key: Column[Any], *, after: bool
) -> Select[Any]:
    """The query's rows newest first by (`at`, `key`), up to `limit`.

    With `after`, only rows strictly after the cursor (`after_at`, `after_id`).
    """
    return _paged(query, at, key, after=after, newest=True)


def oldest_first(
    query: Select[Any], at: Column[Any], key: Column[Any], *, after: bool
) -> Select[Any]:
    """The query's rows oldest first by (`at`, `key`), up to `limit`; see `newest_first`."""
    return _paged(query, at, key, after=after, newest=False)


def _paged(
    query: Select[Any], at: Column[Any], key: Column[Any], *, after: bool, newest: bool
) -> Select[Any]:
    # "After the cursor" is below it newest first, above it oldest first.
    beyond = operator.lt if newest else operator.gt
    if after:
        since = bindparam("after_at", type_=at.type)
        last = bindparam("after_id", type_=key.type)
        query = query.where(or_(beyond(at, since), and_(at == since, beyond(key, last))))
    order = (at.desc(), key.desc()) if newest else (at, key)
    return query.order_by(*order).limit(bindparam("limit"))
