"""The event log side of the service layer: list, read and emit a tenant's events.

The log holds the tenant's job events (token deltas excepted) as `job.<name>` and the
events its clients emit (`server/store/event_log.py`); the rules of each request are
here, with their messages (README, Event log; docs/contract.md §3).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from server.auth.principal import Principal
from server.clock import Clock, utc_now
from server.errors import FieldViolation, InvalidArgument, NotFound
from server.paging import Cursor, Page, PageTokens, page_size
from server.store.event_log import (
    EMITTED_ID_PREFIX,
    LogEventRecord,
    LogFilter,
    reserved_prefix,
)
from server.store.records import EventRecord
from server.store.store import Store, Tables
from server.validation import parse_id

TYPE_CHARACTERS = "a-z0-9._-"  # a regex character class
MAX_TYPE_CHARS = 100
_TYPE = re.compile(f"[{TYPE_CHARACTERS}]{{1,{MAX_TYPE_CHARS}}}")
TYPE_MESSAGE = f"Invalid type: must be 1 to {MAX_TYPE_CHARS} characters of {TYPE_CHARACTERS}"
MAX_DATA_BYTES = 65_536
DATA_SIZE_MESSAGE = f"Invalid data: must be at most {MAX_DATA_BYTES} bytes as compact JSON"
DATA_NUMBER_MESSAGE = "Invalid data: numbers must be finite doubles"
# Well below what protobuf decodes (100 messages deep, two for each level of a Struct), so
# every refusal over gRPC is this one, and the REST shim refuses alike (rest_shim/event_routes.py).
MAX_DATA_DEPTH = 32
DATA_DEPTH_MESSAGE = f"Invalid data: must nest at most {MAX_DATA_DEPTH} objects and arrays deep"
SINCE_MESSAGE = "Invalid since: must be an RFC 3339 timestamp, such as 2026-04-01T12:00:00Z"
EVENT_ID_MESSAGE = "Invalid event_id: not the id of an event"
# RFC 3339's date-time: a time with its offset, seconds included, any fraction.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
MAX_SEQUENCE = 2**31 - 1
# A UUID as the server writes them, lowercase: only such ids name events.
_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_JOB_EVENT_ID = re.compile(f"job_({_UUID})_([0-9]{{10}})")
_EMITTED_ID = re.compile(f"evt_{_UUID}")


def reserved_message(field: str, prefix: str) -> str:
    """The refusal of a type that starts with one of the service's own prefixes."""
    return f"Invalid {field}: the prefix '{prefix}' is reserved for {prefix[:-1]} events"


def parse_type(value: str, *, emitting: bool = False) -> str:
    """An event type of the rule, else INVALID_ARGUMENT; the service's own only for reading."""
    if not _TYPE.fullmatch(value):
        raise InvalidArgument.field("type", TYPE_MESSAGE)
    prefix = reserved_prefix(value) if emitting else None
    if prefix is not None:
        raise InvalidArgument.field("type", reserved_message("type", prefix))
    return value


def parse_since(value: str) -> datetime:
    """An RFC 3339 timestamp with its offset, in UTC; else INVALID_ARGUMENT."""
    match = _RFC3339.fullmatch(value)
    try:
        if match is None:
            raise ValueError(value)
        # Python reads at most microseconds: finer digits are cut, never rounded up.
        text = value
        if match.group(1) is not None:
            text = value[: match.start(1)] + match.group(1)[:6] + value[match.end(1) :]
        return datetime.fromisoformat(text.upper().replace(" ", "T")).astimezone(UTC)
    # OverflowError: a time whose offset takes it past year 9999 or before year 1 in UTC.
    except (ValueError, OverflowError):
        raise InvalidArgument.field("since", SINCE_MESSAGE) from None


def compact_json(data: dict[str, Any]) -> str:
    """The data as stored and measured: compact JSON, UTF-8, whole numbers as integers.

    gRPC carries every number as a double (google.protobuf.Struct), so a whole number
    comes as 3.0; written back as 3, the stored JSON is what the client sent over REST.
    """
    try:
        return json.dumps(_whole(data), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise InvalidArgument.field("data", DATA_NUMBER_MESSAGE) from None


def nesting(value: Any) -> int:
    """How many objects and arrays deep the value goes (an empty object is 1), counted
    without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in item)
    return deepest


def _whole(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: _whole(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole(item) for item in value]
    return value


@dataclass(frozen=True)
class LogEvent:
    """One event of the log as a client sees it; `data` a JSON object."""

    id: str
    type: str
    created_at: datetime
    job_id: str | None
    agent_id: str | None
    data: dict[str, Any]


def _event(record: LogEventRecord) -> LogEvent:
    job = record.job_event
    data = _job_data(job) if job is not None else json.loads(record.data or "{}")
    return LogEvent(
        record.id,
        record.type,
        record.created_at,
        None if job is None else job.job_id,
        record.agent_id,
        data,
    )


def _job_data(event: EventRecord) -> dict[str, Any]:
    """A job event's stored fields, as its job's stream names them (README, API)."""
    data: dict[str, Any] = {"sequence": event.sequence, "attempt": event.attempt}
    if event.error is not None:
        data["error"] = event.error
    if event.delay_s is not None:
        data["delay_seconds"] = event.delay_s
    if event.step_kind is not None:
        data["step"] = {
            "kind": event.step_kind,
            "round": event.step_round,
            "tokens": event.step_tokens,
            "hash": event.step_hash,
            "text": event.step_text,
            "confidence": event.step_confidence,
            "evidence": event.step_evidence,
        }
    return data


@dataclass(frozen=True)
class EventQuery:
    """A list request's filters, as sent (each checked by `list_events`)."""

    type: str | None = None
    job_id: str | None = None
    agent_id: str | None = None
    since: str | None = None

    def checked(self) -> LogFilter:
        """The filters, each of its rule; every broken rule is reported at once."""
        violations: list[FieldViolation] = []

        def check(parse: Any, value: str | None) -> Any:
            if value is None:
                return None
            try:
                return parse(value)
            except InvalidArgument as error:
                violations.extend(error.violations)
                return None

        where = LogFilter(
            type=check(parse_type, self.type),
            job_id=check(lambda v: parse_id(v, "job_id"), self.job_id),
            agent_id=check(lambda v: parse_id(v, "agent_id"), self.agent_id),
            since=check(parse_since, self.since),
        )
        if violations:
            raise InvalidArgument(violations)
        return where


class EmitHook(Protocol):
    """What else an emitted event does, in the transaction that stores it (workflows)."""

    async def emitted(self, tx: Tables, tenant_id: str, event: LogEvent) -> list[str]:
        """Act on the event; the ids of the jobs queued, to send once committed."""
        ...

    def send(self, job_ids: list[str]) -> None:
        """Send the messages of committed jobs."""
        ...


class EventLogService:
    """The caller's tenant's event log: list and read it, emit events into it."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock = utc_now,
        page_tokens: PageTokens | None = None,
        on_emit: EmitHook | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._tokens = page_tokens or PageTokens()
        self._on_emit = on_emit

    async def list_events(
        self, principal: Principal, query: EventQuery, *, size: int | None, token: str
    ) -> Page[LogEvent]:
        """A page of the tenant's events, newest first, filtered."""
        where = query.checked()
        limit = page_size(size)
        scope = json.dumps(["events", principal.tenant_id, where.params()], default=str)
        after = self._tokens.decode(token, scope=scope, valid_id=is_event_id)
        rows = await self._store.event_log.page(
            principal.tenant_id, where, after=after, limit=limit + 1
        )
        page = self._tokens.page_of(
            rows, limit=limit, scope=scope, cursor=lambda e: Cursor(e.created_at, e.id)
        )
        return Page([_event(r) for r in page.items], page.size, page.next_token)

    async def get_event(self, principal: Principal, event_id: str) -> LogEvent:
        """The tenant's event; NOT_FOUND for another tenant's and unknown ones alike."""
        tenant = principal.tenant_id
        job = _JOB_EVENT_ID.fullmatch(event_id)
        if job is not None:
            sequence = int(job.group(2))
            # Ten digits say more than the INTEGER column holds: no such event.
            record = None
            if sequence <= MAX_SEQUENCE:
                record = await self._store.event_log.job_event(tenant, job.group(1), sequence)
        elif _EMITTED_ID.fullmatch(event_id):
            record = await self._store.event_log.emitted(tenant, event_id)
        else:
            raise InvalidArgument.field("event_id", EVENT_ID_MESSAGE)
        if record is None:
            raise NotFound(f"Event {event_id} not found")
        return _event(record)

    async def emit(self, principal: Principal, type: str, data: dict[str, Any]) -> LogEvent:
        """Store an event of the caller's tenant, once its type and data keep their rules."""
        violations: list[FieldViolation] = []
        try:
            parse_type(type, emitting=True)
        except InvalidArgument as error:
            violations.extend(error.violations)
        try:
            if nesting(data) > MAX_DATA_DEPTH:
                raise InvalidArgument.field("data", DATA_DEPTH_MESSAGE)
            stored = compact_json(data)
            if len(stored.encode()) > MAX_DATA_BYTES:
                violations.append(FieldViolation("data", DATA_SIZE_MESSAGE))
        except InvalidArgument as error:
            violations.extend(error.violations)
        if violations:
            raise InvalidArgument(violations)
        event = LogEvent(
            id=f"{EMITTED_ID_PREFIX}{uuid.uuid4()}",
            type=type,
            created_at=self._clock(),
            job_id=None,
            agent_id=None,
            data=json.loads(stored),
        )
        # The runs an event triggers start in its own transaction, so none is lost; with
        # nothing to trigger, the event is one statement on its own.
        hook = self._on_emit
        tables = self._store.transaction() if hook is not None else _alone(self._store)
        async with tables as tx:
            await tx.event_log.add(
                id=event.id,
                tenant_id=principal.tenant_id,
                type=type,
                data=stored,
                created_at=event.created_at,
            )
            queued = [] if hook is None else await hook.emitted(tx, principal.tenant_id, event)
        if hook is not None and queued:
            hook.send(queued)
        return event


@asynccontextmanager
async def _alone(store: Store) -> AsyncIterator[Tables]:
    yield store


def is_event_id(value: str) -> bool:
    """Whether `value` has the form of an event id (a page token's cursor holds one)."""
    return bool(_JOB_EVENT_ID.fullmatch(value) or _EMITTED_ID.fullmatch(value))
