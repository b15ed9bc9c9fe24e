"""Counts the API's health document and metrics report: what is running, by phase."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from store.models import Emergency, ErrorStream, MonitoringSession, RoutingOverrideRow


@dataclass(frozen=True, slots=True)
class LiveCounts:
    """Coordinations in force and backend connections seen recently."""

    active_coordinations: int  # recovery overrides and active emergencies
    backend_connections: int  # streams and monitoring sessions seen since the given time


@dataclass
class PhaseCounts:
    """Recoveries and emergencies by service and phase, from one aggregate query each."""

    recoveries: list[tuple[str, str, int]] = field(default_factory=list)
    emergencies: list[tuple[str, str, str, int]] = field(default_factory=list)


def live_counts(*, session: Session, since: datetime) -> LiveCounts:
    """A round trip to the database (SELECT 1), then the counts of what is live."""
    session.execute(text("SELECT 1"))
    overrides = session.scalar(select(func.count()).select_from(RoutingOverrideRow)) or 0
    emergencies = (
        session.scalar(
            select(func.count()).select_from(Emergency).where(Emergency.status == "active")
        )
        or 0
    )
    streams = (
        session.scalar(
            select(func.count()).select_from(ErrorStream).where(ErrorStream.last_seen >= since)
        )
        or 0
    )
    monitors = (
        session.scalar(
            select(func.count())
            .select_from(MonitoringSession)
            .where(MonitoringSession.active.is_(True), MonitoringSession.last_seen >= since)
        )
        or 0
    )
    return LiveCounts(int(overrides + emergencies), int(streams + monitors))


def phase_counts(*, session: Session) -> PhaseCounts:
    """Recoveries (error streams with a workflow) and emergencies by service and phase."""
    recoveries = session.execute(
        select(ErrorStream.service, ErrorStream.status, func.count())
        .where(ErrorStream.workflow_id.is_not(None))
        .group_by(ErrorStream.service, ErrorStream.status)
    ).all()
    emergencies = session.execute(
        select(Emergency.service, Emergency.status, Emergency.end_reason, func.count()).group_by(
            Emergency.service, Emergency.status, Emergency.end_reason
        )
    ).all()
    return PhaseCounts(
        recoveries=[(service, status, int(n)) for service, status, n in recoveries],
        emergencies=[
            (service, status, reason or "", int(n)) for service, status, reason, n in emergencies
        ],
    )
