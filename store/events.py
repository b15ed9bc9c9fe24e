"""The transactional outbox: events are rows written in the caller's transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from store.base import utcnow
from store.models import Event

# PostgreSQL channels; NOTIFY is delivered only when the transaction commits.
EVENTS_CHANNEL = "switchyard_events"
SNAPSHOT_CHANNEL = "switchyard_snapshot"


def publish(
    session: Session,
    event_type: str,
    payload: dict[str, Any],
    *,
    service: str | None = None,
    coordination_id: str | None = None,
    workflow_id: str | None = None,
    at: datetime | None = None,
) -> Event:
    """Add an event to the outbox in the current transaction and return it (id assigned)."""
    created = at or utcnow()
    body = {
        "eventType": event_type,
        "timestamp": created.isoformat().replace("+00:00", "Z"),
        **payload,
    }
    row = Event(
        event_type=event_type,
        service=service,
        coordination_id=coordination_id,
        workflow_id=workflow_id,
        payload=body,
        created_at=created,
    )
    session.add(row)
    session.flush()
    notify(session, EVENTS_CHANNEL, str(row.id))
    return row


def notify(session: Session, channel: str, message: str = "") -> None:
    """Send a PostgreSQL NOTIFY at commit; a no-op on SQLite, whose readers poll."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:c, :m)"), {"c": channel, "m": message})


def snapshot_changed(session: Session) -> None:
    """Tell every API replica to reload its routing snapshot after this commit."""
    notify(session, SNAPSHOT_CHANNEL)


def events_since(
    session: Session,
    since: int,
    limit: int = 100,
    types: frozenset[str] | None = None,
    service: str | None = None,
) -> list[Event]:
    """Events with id > since, oldest first, optionally filtered."""
    query = select(Event).where(Event.id > since).order_by(Event.id).limit(limit)
    if types:
        query = query.where(Event.event_type.in_(sorted(types)))
    if service:
        query = query.where(Event.service == service)
    return list(session.scalars(query))
