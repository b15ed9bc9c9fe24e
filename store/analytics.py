"""Dashboard figures, computed by SQL aggregates over recorded coordinations and outcomes.

Every function runs a fixed number of statements whatever the number of rows: the database
counts, sums and averages; Python only divides the few aggregate rows it gets back.
Definitions are in docs/ANALYTICS.md.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Integer,
    case,
    cast,
    exists,
    extract,
    false,
    func,
    literal,
    select,
    true,
)
from sqlalchemy.orm import InstrumentedAttribute, Session

from store.base import UtcDateTime
from store.models import (
    Coordination,
    Emergency,
    ErrorStream,
    MonitoringSession,
    NodeHealthRow,
    Outcome,
    ProviderNodeRow,
    ProviderService,
    RecoveryRun,
    RoutingOverrideRow,
)

# An error stream or monitoring session counts as a live backend connection this long.
CONNECTION_WINDOW = timedelta(minutes=15)
RESOLVED_STATUS = "resolved"
_Sum = TypeVar("_Sum", "CoordinationTotals", "BeforeAfter")


def _field_sum(a: _Sum, b: _Sum) -> _Sum:
    """Two sums of the same kind (a dataclass of numbers) added field by field."""
    return type(a)(*(x + y for x, y in zip(astuple(a), astuple(b), strict=True)))


@dataclass(frozen=True, slots=True)
class CoordinationTotals:
    """Sums over the coordinations of one service (or of all services) in a timeframe."""

    coordinations: int = 0
    successful: int = 0
    backend_integrated: int = 0
    coordination_ms: float = 0.0
    cost_savings: float = 0.0
    # businessContext.revenueImpact of the successful coordinations: revenue protected.
    revenue_protected: float = 0.0

    def __add__(self, other: CoordinationTotals) -> CoordinationTotals:
        return _field_sum(self, other)

    def _share(self, part: float) -> float:
        return part / self.coordinations if self.coordinations else 0.0

    @property
    def success_rate(self) -> float:
        """Successful coordinations in percent of all; 0 when there are none."""
        return self._share(self.successful) * 100.0

    @property
    def backend_integration_rate(self) -> float:
        """Backend-integrated coordinations in percent of all; 0 when there are none."""
        return self._share(self.backend_integrated) * 100.0

    @property
    def average_coordination_ms(self) -> float:
        """Mean measured coordination time in milliseconds."""
        return self._share(self.coordination_ms)

    @property
    def average_cost_savings(self) -> float:
        """Mean estimated cost savings per coordination."""
        return self._share(self.cost_savings)


@dataclass(frozen=True, slots=True)
class ServiceState:
    """What is going on for a service right now, plus its emergencies and resolutions."""

    routing_overrides: int
    active_emergencies: int
    live_error_streams: int
    live_monitoring_sessions: int
    emergencies_started: int
    average_resolution_minutes: float

    @property
    def active_coordinations(self) -> int:
        """Recoveries holding the routing plus active emergencies."""
        return self.routing_overrides + self.active_emergencies

    @property
    def backend_connections(self) -> int:
        """Error streams and active monitoring sessions seen within CONNECTION_WINDOW."""
        return self.live_error_streams + self.live_monitoring_sessions


def _since(column: InstrumentedAttribute[datetime], since: datetime | None) -> ColumnElement[bool]:
    return true() if since is None else column >= since


def failed_outcome_reported() -> ColumnElement[bool]:
    """True for a coordination with at least one failed outcome reported against it."""
    return exists().where(
        Outcome.coordination_id == Coordination.coordination_id,
        Outcome.success.is_(false()),
    )


def coordination_totals(
    *, session: Session, since: datetime | None, service: str | None = None
) -> dict[str, CoordinationTotals]:
    """Per-service sums over coordinations created at or after `since` (None: all time)."""
    integrated = case((Coordination.backend_integrated.is_(true()), 1), else_=0)
    succeeded = case((failed_outcome_reported(), 0), else_=1)
    protected = case(
        (failed_outcome_reported(), 0.0), else_=func.coalesce(Coordination.revenue_impact, 0.0)
    )
    query = (
        select(
            Coordination.service,
            func.count(),
            func.coalesce(func.sum(succeeded), 0),
            func.coalesce(func.sum(integrated), 0),
            func.coalesce(func.sum(Coordination.coordination_ms), 0.0),
            func.coalesce(func.sum(Coordination.cost_savings), 0.0),
            func.coalesce(func.sum(protected), 0.0),
        )
        .where(_since(Coordination.created_at, since))
        .group_by(Coordination.service)
    )
    if service is not None:
        query = query.where(Coordination.service == service)
    return {
        row[0]: CoordinationTotals(
            int(row[1]), int(row[2]), int(row[3]), float(row[4]), float(row[5]), float(row[6])
        )
        for row in session.execute(query)
    }


def catalog_services(*, session: Session) -> list[str]:
    """Service names in catalog order."""
    return list(session.scalars(select(ProviderService.name).order_by(ProviderService.position)))


def service_exists(*, session: Session, service: str) -> bool:
    """True when the service is in the catalog."""
    return session.get(ProviderService, service) is not None


def emergencies_started(*, session: Session, since: datetime | None) -> int:
    """Emergency overrides started at or after `since`, over all services."""
    query = select(func.count()).select_from(Emergency)
    return int(session.scalar(query.where(_since(Emergency.started_at, since))) or 0)


def _minutes_between(
    session: Session, start: InstrumentedAttribute[datetime], end: InstrumentedAttribute[datetime]
) -> ColumnElement[Any]:
    # Timestamp arithmetic is not portable: PostgreSQL subtracts timestamptz into an interval,
    # SQLite stores ISO text that julianday() turns into fractional days.
    if session.get_bind().dialect.name == "postgresql":
        return extract("epoch", end - start) / 60.0
    return (func.julianday(end) - func.julianday(start)) * 1440.0


def service_state(
    *, session: Session, service: str, since: datetime | None, now: datetime
) -> ServiceState:
    """Live counts and timeframe figures of one service, read in a single statement."""
    seen_since = now - CONNECTION_WINDOW

    def count(model: type[Any], *where: ColumnElement[bool]) -> Any:
        return select(func.count()).select_from(model).where(*where).scalar_subquery()

    resolution = (
        select(func.avg(_minutes_between(session, ErrorStream.first_seen, ErrorStream.last_seen)))
        .where(
            ErrorStream.service == service,
            ErrorStream.status == RESOLVED_STATUS,
            _since(ErrorStream.last_seen, since),
        )
        .scalar_subquery()
    )
    row = session.execute(
        select(
            count(RoutingOverrideRow, RoutingOverrideRow.service == service),
            count(Emergency, Emergency.service == service, Emergency.status == "active"),
            count(ErrorStream, ErrorStream.service == service, ErrorStream.last_seen >= seen_since),
            count(
                MonitoringSession,
                MonitoringSession.service == service,
                MonitoringSession.active.is_(true()),
                MonitoringSession.last_seen >= seen_since,
            ),
            count(Emergency, Emergency.service == service, _since(Emergency.started_at, since)),
            resolution,
        )
    ).one()
    return ServiceState(
        routing_overrides=int(row[0]),
        active_emergencies=int(row[1]),
        live_error_streams=int(row[2]),
        live_monitoring_sessions=int(row[3]),
        emergencies_started=int(row[4]),
        average_resolution_minutes=float(row[5] or 0.0),
    )


def provider_health(*, session: Session, service: str, emergency_active: bool) -> dict[str, float]:
    """Live health score of each node in rotation (catalog score until one is measured).

    Nodes in rotation are the enabled ones; emergency-only nodes join only while an emergency
    is active for the service, as they do in routing.
    """
    score = func.coalesce(NodeHealthRow.health_score, ProviderNodeRow.health_score)
    query = (
        select(ProviderNodeRow.node_id, score)
        .outerjoin(NodeHealthRow, NodeHealthRow.node_id == ProviderNodeRow.node_id)
        .where(ProviderNodeRow.service == service, ProviderNodeRow.enabled.is_(true()))
        .order_by(ProviderNodeRow.position, ProviderNodeRow.node_id)
    )
    if not emergency_active:
        query = query.where(ProviderNodeRow.emergency_only.is_(false()))
    return {node_id: float(value) for node_id, value in session.execute(query)}


def _bucket(session: Session, start: datetime, seconds: float) -> ColumnElement[Any]:
    # Timestamp arithmetic is not portable: PostgreSQL subtracts timestamptz into an
    # interval, SQLite keeps ISO text that julianday() turns into fractional days.
    since = literal(start, UtcDateTime())
    if session.get_bind().dialect.name == "postgresql":
        return func.floor(extract("epoch", Coordination.created_at - since) / seconds)
    elapsed = (func.julianday(Coordination.created_at) - func.julianday(since)) * 86400.0
    return cast(elapsed / seconds, Integer)  # truncates; rows are never before `start`


def coordination_series(
    session: Session, *, now: datetime, window: timedelta, buckets: int
) -> tuple[datetime, float, list[tuple[int, int, int, float, float]]]:
    """Per bucket: index, coordinations, successful ones, cost, savings (one SQL aggregate)."""
    seconds = window.total_seconds() / buckets
    start = now - window
    bucket = _bucket(session, start, seconds).label("bucket")
    succeeded = case((failed_outcome_reported(), 0), else_=1)
    rows = session.execute(
        select(
            bucket,
            func.count(),
            func.coalesce(func.sum(succeeded), 0),
            func.coalesce(func.sum(Coordination.estimated_cost), 0.0),
            func.coalesce(func.sum(Coordination.cost_savings), 0.0),
        )
        .where(Coordination.created_at >= start, Coordination.created_at <= now)
        .group_by(bucket)
    ).all()
    return (
        start,
        seconds,
        [(int(r[0]), int(r[1]), int(r[2]), float(r[3]), float(r[4])) for r in rows],
    )


@dataclass(frozen=True, slots=True)
class BeforeAfter:
    """Sums behind the before-vs-after figures of a service (or all services).

    Cost: what the decisions cost, and what the same decisions would have cost on each
    service's primary node (its first enabled, regular node in catalog order), over the
    successful coordinations. Resolution: how long the resolved recoveries took, and how long
    their first reports declared they might (`timeToResolution`)."""

    successful: int = 0
    cost: float = 0.0
    reference_cost: float = 0.0
    resolved: int = 0
    resolution_minutes: float = 0.0
    declared_minutes: float = 0.0

    def __add__(self, other: BeforeAfter) -> BeforeAfter:
        return _field_sum(self, other)


def primary_costs(*, session: Session) -> dict[str, float]:
    """Each service's primary node's price: its first enabled, regular node in catalog order."""
    rows = session.execute(
        select(ProviderNodeRow.service, ProviderNodeRow.cost_per_request)
        .where(ProviderNodeRow.enabled.is_(true()), ProviderNodeRow.emergency_only.is_(false()))
        .order_by(ProviderNodeRow.service, ProviderNodeRow.position, ProviderNodeRow.node_id)
    )
    primaries: dict[str, float] = {}
    for service, cost in rows:
        primaries.setdefault(service, float(cost))
    return primaries


def before_after(
    *, session: Session, since: datetime | None, service: str | None = None
) -> dict[str, BeforeAfter]:
    """Per service: the successful coordinations' cost and count, and the resolved recoveries'
    durations and declared times, at or after `since` (three statements)."""
    succeeded = ~failed_outcome_reported()
    calls = (
        select(
            Coordination.service,
            func.count(),
            func.coalesce(func.sum(Coordination.estimated_cost), 0.0),
        )
        .where(_since(Coordination.created_at, since), succeeded)
        .group_by(Coordination.service)
    )
    runs = (
        select(
            RecoveryRun.service,
            func.count(),
            func.coalesce(func.sum(RecoveryRun.minutes), 0.0),
            func.coalesce(func.sum(RecoveryRun.declared_minutes), 0.0),
        )
        .where(
            _since(RecoveryRun.ended_at, since),
            RecoveryRun.outcome == RESOLVED_STATUS,
            RecoveryRun.declared_minutes.is_not(None),
        )
        .group_by(RecoveryRun.service)
    )
    if service is not None:
        calls = calls.where(Coordination.service == service)
        runs = runs.where(RecoveryRun.service == service)
    primaries = primary_costs(session=session)
    sums: dict[str, BeforeAfter] = {}
    for name, count, cost in session.execute(calls):
        primary = primaries.get(name)
        # A service that left the catalog has no primary: its calls count at their own cost.
        reference = float(cost) if primary is None else int(count) * primary
        sums[name] = BeforeAfter(int(count), float(cost), reference)
    for name, count, minutes, declared in session.execute(runs):
        resolved = BeforeAfter(
            resolved=int(count),
            resolution_minutes=float(minutes or 0.0),
            declared_minutes=float(declared or 0.0),
        )
        sums[name] = sums.get(name, BeforeAfter()) + resolved
    return sums


def spent_since(*, session: Session, start: datetime) -> dict[str, float]:
    """Per service: the estimated cost of every decision since `start` (emergencies too)."""
    rows = session.execute(
        select(Coordination.service, func.coalesce(func.sum(Coordination.estimated_cost), 0.0))
        .where(Coordination.created_at >= start)
        .group_by(Coordination.service)
    )
    return {service: float(total) for service, total in rows}
