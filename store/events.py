"""The transactional outbox: events are rows written in the caller's transaction.

Event ids are handed out in commit order, so a reader that has seen id N and asks for
`id > N` misses nothing. A sequence would not do: transaction A may draw 5, transaction B 6,
B commit first, and a reader that saw 6 would never see 5. Instead `publish()` only queues
the event in the session; just before the transaction commits, one statement advances the
single counter row (`event_log_head`) by the number of queued events and the events are
inserted with those ids. The counter row stays locked until COMMIT, so the next transaction
that publishes waits there and draws higher ids only after this one is visible. The lock is
the transaction's last: everything else is flushed first, keeping the window to the insert,
the NOTIFY and the commit itself. On PostgreSQL the counter, the rows and the NOTIFY are one
statement (one round trip); SQLite runs one writer at a time and takes the same steps one by
one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import orjson
from sqlalchemy import (
    BigInteger,
    Row,
    Select,
    Table,
    bindparam,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session, SessionTransaction

from store.base import iso_z, utcnow
from store.models import Event, EventLogHead
from store.upsert import insert_ignore

# PostgreSQL channels; NOTIFY is delivered only when the transaction commits.
EVENTS_CHANNEL = "switchyard_events"
SNAPSHOT_CHANNEL = "switchyard_snapshot"
# The snapshot NOTIFY's payload when nodes' live health is all that changed: replicas then
# re-read node_health alone. Any other payload (the empty one) asks for a full reload.
HEALTH_ONLY = "health"

# Session.info keys: events queued in the transaction, the queue length at each open
# savepoint, and a savepoint commit that deferred the writing to the outer commit.
_PENDING = "switchyard.events.pending"
_SAVEPOINTS = "switchyard.events.savepoints"
_DEFERRED = "switchyard.events.deferred"
_HEAD_ID = 1

_events = cast(Table, Event.__table__)
_notify = text("SELECT pg_notify(:c, :m)")
_head = cast(Table, EventLogHead.__table__)
# Core, not ORM-enabled: no session synchronisation work on the commit path.
_advance = (
    update(_head)
    .where(_head.c.id == _HEAD_ID)
    .values(last=_head.c.last + bindparam("n", type_=BigInteger()))
    .returning(_head.c.last)
)


@dataclass(slots=True)
class EventDraft:
    """An event queued in a transaction; `id` is set when the transaction commits."""

    event_type: str
    payload: dict[str, Any]
    service: str | None = None
    coordination_id: str | None = None
    workflow_id: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    id: int | None = None


def event_draft(
    event_type: str,
    payload: dict[str, Any],
    *,
    service: str | None = None,
    coordination_id: str | None = None,
    workflow_id: str | None = None,
    at: datetime | None = None,
) -> EventDraft:
    """An event whose stored payload leads with `eventType` and `timestamp`, as clients see it."""
    created = at or utcnow()
    body = {
        "eventType": event_type,
        "timestamp": iso_z(created),
        **payload,
    }
    return EventDraft(event_type, body, service, coordination_id, workflow_id, created)


def publish(
    session: Session,
    event_type: str,
    payload: dict[str, Any],
    *,
    service: str | None = None,
    coordination_id: str | None = None,
    workflow_id: str | None = None,
    at: datetime | None = None,
) -> EventDraft:
    """Queue an event in the current transaction; it is written (and its id set) at commit."""
    draft = event_draft(
        event_type,
        payload,
        service=service,
        coordination_id=coordination_id,
        workflow_id=workflow_id,
        at=at,
    )
    publish_many(session, [draft])
    return draft


def publish_many(session: Session, drafts: Iterable[EventDraft]) -> None:
    """Queue many events in the current transaction; one multi-row insert writes them at commit.

    Works for any session that commits through SQLAlchemy, whether its other writes are ORM
    objects or Core statements.
    """
    session.info.setdefault(_PENDING, []).extend(drafts)


def notify(session: Session, channel: str, message: str = "") -> None:
    """Send a PostgreSQL NOTIFY at commit; a no-op on SQLite, whose readers poll."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(_notify, {"c": channel, "m": message})


def snapshot_changed(session: Session, *, health_only: bool = False) -> None:
    """Tell every API replica to reload its routing snapshot after this commit.

    `health_only`: the transaction changed node_health rows and nothing else routing reads;
    replicas re-read those rows instead of the whole snapshot (outcome batches send this
    several times a second under load).
    """
    notify(session, SNAPSHOT_CHANNEL, HEALTH_ONLY if health_only else "")


def events_since(
    session: Session,
    since: int,
    limit: int = 100,
    types: frozenset[str] | None = None,
    service: str | None = None,
    until: int | None = None,
) -> list[Event]:
    """Events with since < id (<= until), oldest first, optionally filtered."""
    query = _since(select(Event), since, limit, types, service, until)
    return list(session.scalars(query))


def event_rows_since(
    session: Session,
    since: int,
    limit: int = 100,
    types: frozenset[str] | None = None,
    service: str | None = None,
    until: int | None = None,
) -> Sequence[Row[Any]]:
    """events_since as plain rows (same attribute names): no ORM objects for readers that
    only pass events on, like the WebSocket hub."""
    return session.execute(_since(select(_events), since, limit, types, service, until)).all()


def event_rows_tail(
    session: Session,
    count: int,
    since: int = 0,
    types: frozenset[str] | None = None,
    service: str | None = None,
    until: int | None = None,
) -> Sequence[Row[Any]]:
    """The newest `count` events with since < id (<= until), oldest first, optionally
    filtered: what happened last, for a reader that starts now."""
    query = _filtered(select(_events), since, types, service, until)
    newest = session.execute(query.order_by(_events.c.id.desc()).limit(count)).all()
    return list(reversed(newest))


def _since(
    query: Select[Any],
    since: int,
    limit: int,
    types: frozenset[str] | None,
    service: str | None,
    until: int | None,
) -> Select[Any]:
    return _filtered(query, since, types, service, until).order_by(_events.c.id).limit(limit)


def _filtered(
    query: Select[Any],
    since: int,
    types: frozenset[str] | None,
    service: str | None,
    until: int | None,
) -> Select[Any]:
    query = query.where(_events.c.id > since)
    if until is not None:
        query = query.where(_events.c.id <= until)
    if types:
        query = query.where(_events.c.event_type.in_(sorted(types)))
    if service:
        query = query.where(_events.c.service == service)
    return query


def latest_event_id(session: Session) -> int:
    """The id of the newest committed event, 0 when there is none.

    Ids are commit-ordered, so no event with an id at or below this one can appear later.
    """
    return int(session.scalar(select(func.max(Event.id))) or 0)


def _draw_ids(session: Session, count: int) -> int:
    """Advance the counter by `count` and return its new value, locking the row until commit."""
    # Core on the session's connection: this runs in every decision batch, the ORM layer
    # would add hundreds of microseconds per statement for nothing.
    last = session.connection().execute(_advance, {"n": count}).scalar()
    if last is None:
        # The row is missing (a store emptied table by table): start after the newest event.
        insert_ignore(session, EventLogHead, {"id": _HEAD_ID, "last": latest_event_id(session)})
        last = session.connection().execute(_advance, {"n": count}).scalar_one()
    return int(last)


# PostgreSQL: counter, rows and NOTIFY in one statement, one round trip; the rows travel as
# one JSON document (psycopg's named parameters). No row comes back when the counter row is
# missing; the step-by-step path below then repairs it.
WRITE_ALL_SQL = f"""
    WITH head AS (
        UPDATE event_log_head SET last = last + %(n)s WHERE id = {_HEAD_ID} RETURNING last
    ), written AS (
        INSERT INTO events
            (id, event_type, service, coordination_id, workflow_id, payload, created_at)
        SELECT head.last - %(n)s + r.ord, r.event_type, r.service, r.coordination_id,
               r.workflow_id, r.payload, r.created_at
        FROM head, ROWS FROM (
            json_to_recordset(CAST(%(rows)s AS JSON)) AS (
                event_type TEXT, service TEXT, coordination_id TEXT, workflow_id TEXT,
                payload JSON, created_at TIMESTAMPTZ
            )
        ) WITH ORDINALITY
            AS r(event_type, service, coordination_id, workflow_id, payload, created_at, ord)
    )
    SELECT last, pg_notify('{EVENTS_CHANNEL}', CAST(last AS TEXT)) FROM head
"""


def write_all_params(drafts: list[EventDraft]) -> dict[str, Any]:
    """The parameters of WRITE_ALL_SQL for `drafts`."""
    rows = [
        {
            "event_type": d.event_type,
            "service": d.service,
            "coordination_id": d.coordination_id,
            "workflow_id": d.workflow_id,
            "payload": d.payload,
            "created_at": d.created_at.isoformat(),
        }
        for d in drafts
    ]
    return {"n": len(drafts), "rows": orjson.dumps(rows).decode()}


def number_drafts(drafts: list[EventDraft], last: int) -> None:
    """Set the ids of `drafts`, the newest being `last`."""
    for number, draft in enumerate(drafts, start=last - len(drafts) + 1):
        draft.id = number


def _write_all_at_once(session: Session, drafts: list[EventDraft]) -> int | None:
    """Write `drafts` with one statement (PostgreSQL); the counter's new value, or None."""
    result = session.connection().exec_driver_sql(WRITE_ALL_SQL, write_all_params(drafts))
    last = result.scalar()
    if last is None:
        return None
    number_drafts(drafts, int(last))
    return int(last)


def _write_pending(session: Session) -> None:
    session.flush()
    drafts: list[EventDraft] = session.info.pop(_PENDING, [])
    if not drafts:
        return
    postgresql = session.connection().dialect.name == "postgresql"
    if postgresql and _write_all_at_once(session, drafts) is not None:
        return
    last = _draw_ids(session, len(drafts))
    number_drafts(drafts, last)
    rows = [
        {
            "id": draft.id,
            "event_type": draft.event_type,
            "service": draft.service,
            "coordination_id": draft.coordination_id,
            "workflow_id": draft.workflow_id,
            "payload": draft.payload,
            "created_at": draft.created_at,
        }
        for draft in drafts
    ]
    session.connection().execute(insert(_events), rows)
    notify(session, EVENTS_CHANNEL, str(last))


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    if not session.info.get(_PENDING):
        return
    if session.in_nested_transaction() and not session.info.get(_DEFERRED):
        # A savepoint is being released (its events belong to the outer transaction), or
        # the outer transaction is committing with savepoints still open: then the next
        # before_commit comes before this savepoint ends, and writes.
        session.info[_DEFERRED] = True
        return
    _write_pending(session)


@event.listens_for(Session, "after_transaction_create")
def _savepoint_started(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        marks = session.info.setdefault(_SAVEPOINTS, {})
        marks[transaction] = len(session.info.get(_PENDING, ()))


@event.listens_for(Session, "after_soft_rollback")
def _rolled_back(session: Session, previous: SessionTransaction) -> None:
    if previous.nested:
        mark = session.info.get(_SAVEPOINTS, {}).get(previous)
        if mark is not None:
            del session.info.get(_PENDING, [])[mark:]
    elif previous.parent is None:
        session.info.pop(_PENDING, None)


@event.listens_for(Session, "after_transaction_end")
def _transaction_ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        # Its mark stays until the outer transaction ends: after_soft_rollback, which needs
        # it, runs after this.
        session.info.pop(_DEFERRED, None)
    elif transaction.parent is None:
        for key in (_PENDING, _SAVEPOINTS, _DEFERRED):
            session.info.pop(key, None)
