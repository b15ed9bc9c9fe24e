"""What incidents write and read: the row each incident keeps current (for correlation, the
API and the routing snapshots), and the status of their members' error streams."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, select, text
from sqlalchemy.orm import Session

from routing.incidents import (
    CORRELATION_WINDOW,
    ConsumerGraph,
    Correlation,
    ErrorSignal,
    OpenIncident,
    blast_radius,
    correlate,
)
from store.events import snapshot_changed
from store.models import (
    ErrorStream,
    IncidentRow,
    ProviderNodeRow,
    ProviderService,
    ServiceConsumer,
)
from store.snapshot import node_from_row

END_REASON_LENGTH = 200  # the column's width
# Correlation and the incident rows it claims, one at a time across API processes and the
# monitor (PostgreSQL: a transaction-level advisory lock; SQLite serialises every writer).
CORRELATION_LOCK_ID = 0x5357_494E_4349_44
# An incident row claimed by a correlation stays `opening` until its workflow records it;
# one still opening after this long lost its recovery (refused, or its caller died): ended.
OPENING_GRACE = timedelta(minutes=10)
OPENING = "opening"


def consumer_graph(session: Session) -> ConsumerGraph:
    """The catalog's consumer graph."""
    return ConsumerGraph(
        {c.name: frozenset(c.uses) for c in session.scalars(select(ServiceConsumer))}
    )


def write_incident(
    *,
    session: Session,
    incident_id: str,
    workflow_id: str,
    phase: str,
    ended: bool,
    opened_at: datetime,
    last_error_at: datetime,
    ended_at: datetime | None,
    end_reason: str,
    severity: str,
    customer_impact: str,
    revenue_at_risk: float,
    expected_resolution_at: datetime | None,
    failed_nodes: list[str],
    services: list[str],
    cascading: list[str],
    members: list[dict[str, Any]],
    now: datetime,
) -> list[str]:
    """Create or update the incident's row; its blast radius (computed with the catalog's
    consumer graph). Snapshots reload: the services it guards may have changed."""
    provider_services = set(session.scalars(select(ProviderService.name)))
    row = session.get(IncidentRow, incident_id, with_for_update=True)
    claimed = row if row is not None and row.status == "open" else None
    open_view = OpenIncident(
        incident_id,
        opened_at,
        last_error_at,
        frozenset(failed_nodes) | frozenset(claimed.failed_nodes if claimed else ()),
        frozenset(services) | frozenset(claimed.services if claimed else ()),
        frozenset(cascading) | frozenset(claimed.cascading if claimed else ()),
    )
    # Only provider services are routed, so only they are guarded.
    radius = sorted(
        s for s in blast_radius(open_view, consumer_graph(session)) if s in provider_services
    )
    if row is None:
        row = IncidentRow(incident_id=incident_id, workflow_id=workflow_id)
        session.add(row)
    row.status = "ended" if ended else "open"
    row.phase = phase
    row.opened_at = opened_at
    row.last_error_at = max(last_error_at, row.last_error_at or last_error_at)
    row.ended_at = ended_at
    row.end_reason = _clip(end_reason, END_REASON_LENGTH) or None
    row.severity = severity
    row.customer_impact = customer_impact
    row.revenue_at_risk = revenue_at_risk
    row.expected_resolution_at = expected_resolution_at
    # What correlations claimed for members still joining stays: an incident's sets only grow.
    row.failed_nodes = sorted(set(failed_nodes) | set(row.failed_nodes or ()))
    row.services = sorted(set(services) | set(row.services or ()))
    row.cascading = sorted(set(cascading) | set(row.cascading or ()))
    row.blast_radius = radius if not ended else []
    row.members = members
    row.streams = sorted(set(row.streams or ()) | {str(m["stream_id"]) for m in members})
    row.updated_at = now
    snapshot_changed(session)
    return radius


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def open_incidents(session: Session) -> list[OpenIncident]:
    """The open incidents, as correlation needs them."""
    return [
        OpenIncident(
            row.incident_id,
            row.opened_at,
            row.last_error_at,
            frozenset(row.failed_nodes),
            frozenset(row.services),
            frozenset(row.cascading),
            frozenset(row.streams) | frozenset(m["stream_id"] for m in row.members),
        )
        for row in session.scalars(select(IncidentRow).where(IncidentRow.status == "open"))
    ]


def incident(session: Session, incident_id: str) -> IncidentRow | None:
    """One incident's row."""
    return session.get(IncidentRow, incident_id)


def incidents(
    session: Session, *, service: str | None = None, phase: str | None = None, limit: int = 100
) -> Sequence[IncidentRow]:
    """Incidents, open ones first, newest first within each; filtered by service and phase."""
    query = select(IncidentRow).order_by(
        case((IncidentRow.status == "open", 0), else_=1), IncidentRow.opened_at.desc()
    )
    if phase is not None:
        query = query.where(IncidentRow.phase == phase)
    rows = session.scalars(query).all()
    if service is not None:  # JSON lists: filtered here, on every backend alike
        rows = [r for r in rows if service in r.services or service in r.cascading]
    return rows[:limit]


def stream_statuses(session: Session, stream_ids: list[str]) -> dict[str, str]:
    """Each known stream's status."""
    rows = session.execute(
        select(ErrorStream.stream_id, ErrorStream.status).where(
            ErrorStream.stream_id.in_(stream_ids)
        )
    )
    return {stream_id: status for stream_id, status in rows}


def correlate_error(
    session: Session, signal: ErrorSignal, window: timedelta = CORRELATION_WINDOW
) -> Correlation:
    """The open incident a reported error joins (routing.incidents.correlate), read from the
    store: its open incidents, the consumer graph and the catalog's nodes."""
    nodes = {row.node_id: node_from_row(row) for row in session.scalars(select(ProviderNodeRow))}
    return correlate(signal, open_incidents(session), consumer_graph(session), nodes, window)


def claim_incident(
    session: Session,
    signal: ErrorSignal,
    new_id: str,
    workflow_id: str,
    window: timedelta = CORRELATION_WINDOW,
) -> Correlation:
    """Correlate the error and claim its place at once, so that the next error (from any
    process, a millisecond later) correlates with it before the incident's workflow has
    recorded anything: a new incident's row is created `opening`; an open incident's row
    takes the error's nodes, service and cascading services. New: `new_id`, rule `new`."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CORRELATION_LOCK_ID})
    found = correlate_error(session, signal, window)
    incident_id = found.incident_id or new_id
    row = session.get(IncidentRow, incident_id, with_for_update=True)
    if row is None:
        row = IncidentRow(
            incident_id=incident_id,
            workflow_id=workflow_id,
            status="open",
            phase=OPENING,
            opened_at=signal.at,
            last_error_at=signal.at,
            failed_nodes=[],
            services=[],
            cascading=[],
            blast_radius=[],
            members=[],
            streams=[],
            updated_at=signal.at,
        )
        session.add(row)
    row.failed_nodes = sorted(set(row.failed_nodes) | signal.failed_nodes)
    row.services = sorted(set(row.services) | {signal.service})
    row.cascading = sorted(set(row.cascading) | signal.cascading)
    if signal.stream_id is not None:
        row.streams = sorted(set(row.streams) | {signal.stream_id})
    row.last_error_at = max(row.last_error_at, signal.at)
    # Guarded at once, before the workflow records anything.
    view = OpenIncident(
        incident_id,
        row.opened_at,
        row.last_error_at,
        frozenset(row.failed_nodes),
        frozenset(row.services),
        frozenset(row.cascading),
    )
    providers = set(session.scalars(select(ProviderService.name)))
    radius = blast_radius(view, consumer_graph(session))
    row.blast_radius = sorted(s for s in radius if s in providers)
    snapshot_changed(session)
    return Correlation(incident_id, found.rule)


def release_claim(session: Session, incident_id: str) -> None:
    """Drop a new incident's claim whose recovery was refused (nothing joined it)."""
    session.execute(
        delete(IncidentRow).where(
            IncidentRow.incident_id == incident_id, IncidentRow.phase == OPENING
        )
    )
    snapshot_changed(session)


def end_stale_claims(session: Session, now: datetime, grace: timedelta = OPENING_GRACE) -> int:
    """End the incidents still `opening` after the grace period; how many."""
    stale = session.scalars(
        select(IncidentRow)
        .where(IncidentRow.phase == OPENING, IncidentRow.opened_at < now - grace)
        .with_for_update()
    ).all()
    for row in stale:
        row.status, row.phase, row.ended_at = "ended", "resolved", now
        row.end_reason, row.blast_radius = "no recovery joined it", []
    if stale:
        snapshot_changed(session)
    return len(stale)


def is_open(session: Session, incident_id: str) -> bool:
    """True when the incident exists and has not ended."""
    row = session.get(IncidentRow, incident_id)
    return row is not None and row.status == "open"
