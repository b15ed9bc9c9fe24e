"""Node health in the store: the outcome window, breaker rows, re-scoring and forced breakers.

Everything here derives from the outcomes table and node_health, so any process (API
replica or worker) computes the same figures; nothing lives only in memory. The pure rules
are in routing/health.py, routing/breaker.py and routing/prediction.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, text, union_all, update
from sqlalchemy.orm import Session

from routing import breaker
from routing.admission import FULL, Admission
from routing.breaker import BreakerConfig, BreakerStatus
from routing.health import (
    Assessment,
    Degradation,
    HealthConfig,
    HealthFigures,
    MonitoringConfig,
    Observation,
    assess,
    is_rate_limited,
    material_change,
    moved_at_once,
)
from routing.prediction import PredictionConfig
from routing.types import BreakerState, ProviderNode
from store.base import iso_z
from store.events import publish, snapshot_changed
from store.models import NodeHealthRow, Outcome, ProviderNodeRow, ProviderService
from switchyard.settings import Settings

_health = cast(Table, NodeHealthRow.__table__)
_BREAKER_COLUMNS = (
    "breaker_state", "breaker_forced", "breaker_trips", "breaker_open_until",
    "breaker_changed_at", "breaker_reason", "half_open_successes", "breaker_window_after",
)  # fmt: skip
_FIGURE_COLUMNS = ("health_score", "success_rate", "latency_p50_ms", "latency_p95_ms")
_WRITTEN = (
    *_FIGURE_COLUMNS, "observations", "failure_probability", *_BREAKER_COLUMNS,
    "health_notified_at", "admitted_share", "admitted_at", "rate_capacity", "rate_capacity_at",
)  # fmt: skip
# A health drift (not a breaker move) sends at most one snapshot NOTIFY per node this often:
# a busy node's figures move with every batch, and each NOTIFY costs every API replica a
# snapshot read. Drifts in between reach the replicas with their periodic reload.
DRIFT_NOTIFY_INTERVAL = timedelta(seconds=2)
# One executemany UPDATE for every changed node: set-based, no ORM object per row.
_UPDATE_HEALTH = (
    update(_health)
    .where(_health.c.node_id == bindparam("b_node_id"))
    .values({name: bindparam(f"b_{name}") for name in (*_WRITTEN, "updated_at")})
)
_nodes = cast(Table, ProviderNodeRow.__table__)
_outcomes = cast(Table, Outcome.__table__)
# The catalog columns routing needs, labelled apart from node_health's namesakes.
_CATALOG_FIELDS = (
    "service", "provider_name", "region", "success_rate", "cost_per_request", "latency_ms",
    "health_score", "emergency_only", "enabled", "latency_slo_ms", "error_rate_slo",
)  # fmt: skip
_CATALOG = tuple(_nodes.c[name].label(f"catalog_{name}") for name in _CATALOG_FIELDS)
# PostgreSQL: one statement for any number of nodes, each a LIMITed backward index scan.
# The time bound applies after the LIMIT (same rows: the newest N, then those recent enough),
# so the inner query is "equality + index order + LIMIT", which the planner turns into an
# index scan even before the table has statistics; with the bound inside, a fresh table's
# default estimates made it scan and sort every recent row of the node.
_WINDOWS_LATERAL = text(
    "SELECT w.node_id, w.id, w.success, w.latency_ms, w.observed_at, w.error_code"
    " FROM unnest(CAST(:node_ids AS varchar[])) AS n(node_id)"
    " CROSS JOIN LATERAL (SELECT o.node_id, o.id, o.success, o.latency_ms, o.observed_at,"
    " o.error_code"
    " FROM outcomes o WHERE o.node_id = n.node_id"
    " ORDER BY o.observed_at DESC, o.id DESC LIMIT :size) AS w"
    " WHERE w.observed_at >= :since"
)

_LOCK_ALL = (
    select(_health, *_CATALOG)
    .join(_nodes, _nodes.c.node_id == _health.c.node_id)
    .order_by(_health.c.node_id)
    .with_for_update(of=_health)
)
_LOCK_SOME = _LOCK_ALL.where(_health.c.node_id.in_(bindparam("node_ids", expanding=True)))


BREAKER_EVENTS = {
    BreakerState.OPEN: "breaker_opened",
    BreakerState.HALF_OPEN: "breaker_half_opened",
    BreakerState.CLOSED: "breaker_closed",
}


def monitoring_config(settings: Settings) -> MonitoringConfig:
    """The monitoring rules configured for this deployment."""
    return MonitoringConfig(
        health=HealthConfig(
            window_size=settings.health_window_size,
            window_seconds=settings.health_window_seconds,
            prior_weight=settings.health_prior_weight,
            slo_min_calls=settings.breaker_minimum_calls,
        ),
        breaker=BreakerConfig(
            failure_rate_threshold=settings.breaker_failure_rate_threshold,
            minimum_calls=settings.breaker_minimum_calls,
            consecutive_failures=settings.breaker_consecutive_failures,
            slow_call_rate_threshold=settings.breaker_slow_call_rate_threshold,
            base_break_seconds=settings.breaker_base_break_seconds,
            max_break_seconds=settings.breaker_max_break_seconds,
            half_open_calls=settings.breaker_half_open_calls,
        ),
        prediction=PredictionConfig(
            horizon_seconds=settings.prediction_horizon_seconds,
            half_life_seconds=settings.prediction_half_life_seconds,
            prior_weight=settings.health_prior_weight,
            threshold=settings.prediction_threshold,
        ),
    )


def breaker_status(row: Any) -> BreakerStatus:
    """The breaker of a node_health row (ORM object or result row) as routing/breaker.py sees it."""
    return BreakerStatus(
        state=BreakerState(row.breaker_state),
        forced=BreakerState(row.breaker_forced) if row.breaker_forced else None,
        trips=row.breaker_trips,
        open_until=row.breaker_open_until,
        changed_at=row.breaker_changed_at,
        reason=row.breaker_reason,
        half_open_successes=row.half_open_successes,
        window_after=row.breaker_window_after,
    )


def figures_of(row: Any) -> HealthFigures:
    """The persisted live figures of a node_health row (ORM object or result row)."""
    return HealthFigures(
        health_score=row.health_score,
        success_rate=row.success_rate,
        latency_p50_ms=row.latency_p50_ms,
        latency_p95_ms=row.latency_p95_ms,
        observations=row.observations,
    )


@dataclass(frozen=True, slots=True)
class Transition:
    """A breaker that changed state."""

    node_id: str
    service: str
    before: BreakerState
    after: BreakerState
    reason: str


@dataclass
class HealthUpdate:
    """What one assessment pass wrote."""

    nodes: dict[str, Assessment] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    changed: int = 0
    material: bool = False  # a snapshot NOTIFY was sent

    @property
    def degraded(self) -> list[Degradation]:
        """Degraded nodes, in node id order."""
        return [a.degradation for _, a in sorted(self.nodes.items()) if a.degradation]


@dataclass(frozen=True, slots=True)
class NodeState:
    """A node as the store holds it: catalog figures, live figures, breaker, prediction."""

    node: ProviderNode
    figures: HealthFigures
    breaker: BreakerStatus
    failure_probability: float
    notified_at: datetime | None = None
    admission: Admission = FULL


def lock_nodes(session: Session, node_ids: Iterable[str] | None = None) -> list[NodeState]:
    """The nodes' state, their node_health rows locked FOR UPDATE in node id order.

    Ingestion and the sweep both lock before reading the window, so on PostgreSQL the second
    of two concurrent writers reads the outcomes the first committed, and lock order rules
    out deadlocks. SQLite transactions are serialised anyway (BEGIN IMMEDIATE).
    """
    query = _LOCK_ALL if node_ids is None else _LOCK_SOME
    params = {} if node_ids is None else {"node_ids": sorted(set(node_ids))}
    return [
        NodeState(
            node=ProviderNode(
                node_id=row.node_id,
                **{name: row._mapping[f"catalog_{name}"] for name in _CATALOG_FIELDS},
            ),
            figures=figures_of(row),
            breaker=breaker_status(row),
            failure_probability=row.failure_probability,
            notified_at=row.health_notified_at,
            admission=Admission(
                row.admitted_share, row.admitted_at, row.rate_capacity, row.rate_capacity_at
            ),
        )
        for row in session.execute(query, params)
    ]


def load_windows(
    session: Session, node_ids: Sequence[str], now: datetime, config: HealthConfig
) -> dict[str, list[Observation]]:
    """Each node's newest `window_size` outcomes no older than `window_seconds`."""
    windows: dict[str, list[Observation]] = {node_id: [] for node_id in node_ids}
    if not node_ids:
        return windows
    since = now - timedelta(seconds=config.window_seconds)
    if session.get_bind().dialect.name == "postgresql":
        rows: Iterable[Any] = session.execute(
            _WINDOWS_LATERAL,
            {"node_ids": list(node_ids), "since": since, "size": config.window_size},
        ).all()
    else:
        # One LIMITed subquery per node, glued with UNION ALL (SQLite has no LATERAL).
        parts = [
            select(
                _outcomes.c.node_id,
                _outcomes.c.id,
                _outcomes.c.success,
                _outcomes.c.latency_ms,
                _outcomes.c.observed_at,
                _outcomes.c.error_code,
            )
            .where(_outcomes.c.node_id == node_id, _outcomes.c.observed_at >= since)
            .order_by(_outcomes.c.observed_at.desc(), _outcomes.c.id.desc())
            .limit(config.window_size)
            .subquery()
            for node_id in node_ids
        ]
        rows = session.execute(union_all(*(select(part) for part in parts))).all()
    for node_id, sequence, success, latency, observed_at, error_code in rows:
        windows[node_id].append(
            Observation(
                _aware(observed_at),
                success,
                latency,
                sequence,
                is_rate_limited(success, error_code),
            )
        )
    return windows


def _aware(value: Any) -> datetime:
    """A UTC datetime: SQLite gives UNION columns back naive or as text; psycopg gives the
    session's zone as a ZoneInfo, whose arithmetic is several times slower than UTC's."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    moment: datetime = value
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def reassess(
    session: Session,
    states: Sequence[NodeState],
    new: dict[str, list[Observation]],
    now: datetime,
    config: MonitoringConfig,
) -> HealthUpdate:
    """Assess the locked nodes, write what changed, publish breaker transitions.

    `new` holds each node's outcomes recorded in this transaction (probes for a HALF_OPEN
    breaker). Rows whose figures and breaker did not change are not written.
    """
    windows = load_windows(session, [state.node.node_id for state in states], now, config.health)
    result = HealthUpdate()
    params: list[dict[str, Any]] = []
    for state in states:
        node = state.node
        assessed = assess(
            node,
            state.breaker,
            windows[node.node_id],
            new.get(node.node_id, []),
            now,
            config,
            state.admission,
        )
        result.nodes[node.node_id] = assessed
        if _prediction_fired(state, assessed, config):
            _publish_prediction(session, state, assessed, config, now)
        for old_state, new_state, reason in assessed.transitions:
            result.transitions.append(
                Transition(node.node_id, node.service, old_state, new_state, reason)
            )
        if not _differs(state, assessed):
            continue
        result.changed += 1
        notified_at = state.notified_at
        if moved_at_once(state.breaker.state, state.admission, assessed) or (
            _drifted(state, assessed)
            and (notified_at is None or now - notified_at >= DRIFT_NOTIFY_INTERVAL)
        ):
            result.material, notified_at = True, now
        params.append(_row_values(node.node_id, assessed, now, notified_at))
    if params:
        session.execute(_UPDATE_HEALTH, params)
    for transition in result.transitions:
        _publish_transition(session, transition, result.nodes[transition.node_id].breaker, now)
    if result.material:
        # Health, breakers and admission all live in node_health.
        snapshot_changed(session, health_only=True)
    return result


def _drifted(state: NodeState, assessed: Assessment) -> bool:
    return material_change(
        state.figures,
        assessed.figures,
        state.failure_probability,
        assessed.prediction.failure_probability,
    )


def _differs(state: NodeState, assessed: Assessment) -> bool:
    return (
        assessed.figures != state.figures
        or assessed.prediction.failure_probability != state.failure_probability
        or assessed.breaker != state.breaker
        or assessed.admission != state.admission
    )


def _row_values(
    node_id: str, assessed: Assessment, now: datetime, notified_at: datetime | None
) -> dict[str, Any]:
    figures = assessed.figures
    return {
        "b_node_id": node_id,
        **{f"b_{name}": getattr(figures, name) for name in _FIGURE_COLUMNS},
        "b_observations": figures.observations,
        "b_failure_probability": assessed.prediction.failure_probability,
        **_breaker_values(assessed.breaker),
        "b_health_notified_at": notified_at,
        "b_admitted_share": assessed.admission.share,
        "b_admitted_at": assessed.admission.at,
        "b_rate_capacity": assessed.admission.capacity,
        "b_rate_capacity_at": assessed.admission.capacity_at,
        "b_updated_at": now,
    }


def _breaker_values(status: BreakerStatus) -> dict[str, Any]:
    return {
        "b_breaker_state": status.state.value,
        "b_breaker_forced": status.forced.value if status.forced else None,
        "b_breaker_trips": status.trips,
        "b_breaker_open_until": status.open_until,
        "b_breaker_changed_at": status.changed_at,
        "b_breaker_reason": status.reason,
        "b_half_open_successes": status.half_open_successes,
        "b_breaker_window_after": status.window_after,
    }


def _publish_transition(
    session: Session, transition: Transition, status: BreakerStatus, now: datetime
) -> None:
    publish(
        session,
        BREAKER_EVENTS[transition.after],
        {
            "nodeId": transition.node_id,
            "serviceName": transition.service,
            "from": transition.before.value,
            "to": transition.after.value,
            "reason": transition.reason,
            "trips": status.trips,
            "openUntil": iso_z(status.open_until) if status.open_until else None,
        },
        service=transition.service,
        at=now,
    )


def _prediction_fired(state: NodeState, assessed: Assessment, config: MonitoringConfig) -> bool:
    """The prediction just crossed the threshold and is what makes the node degraded.

    A node whose breaker opened or whose SLO is already breached reports that instead.
    """
    degradation = assessed.degradation
    return (
        degradation is not None
        and degradation.error_type == "predicted_failure"
        and state.failure_probability < config.prediction.threshold
    )


def _publish_prediction(
    session: Session,
    state: NodeState,
    assessed: Assessment,
    config: MonitoringConfig,
    now: datetime,
) -> None:
    prediction = assessed.prediction
    publish(
        session,
        "prediction_fired",
        {
            "nodeId": state.node.node_id,
            "serviceName": state.node.service,
            "failureProbability": prediction.failure_probability,
            "previousProbability": state.failure_probability,
            "threshold": config.prediction.threshold,
            "horizonSeconds": prediction.horizon_seconds,
            "errorBreachProbability": prediction.error_breach_probability,
            "latencyBreachProbability": prediction.latency_breach_probability,
            "forecastP95Ms": prediction.forecast_p95_ms,
            "detail": assessed.degradation.detail if assessed.degradation else "",
        },
        service=state.node.service,
        at=now,
    )


def sweep(session: Session, now: datetime, config: MonitoringConfig) -> HealthUpdate:
    """Re-score every node: windows age, OPEN breakers half-open, predictions refresh; each
    service whose nodes it assessed records when (monitoringActive reads it)."""
    states = lock_nodes(session)
    update_ = reassess(session, states, {}, now, config)
    services = sorted({state.node.service for state in states})
    if services:
        session.execute(
            update(ProviderService)
            .where(ProviderService.name.in_(services))
            .values(assessed_at=now)
        )
    return update_


def set_breaker(
    session: Session,
    node_id: str,
    state: BreakerState | None,
    *,
    reason: str,
    principal: str,
    now: datetime,
) -> BreakerStatus | None:
    """Force the breaker OPEN or CLOSED, or release it (state None = AUTO); None if unknown."""
    states = lock_nodes(session, [node_id])
    if not states:
        return None
    node, before = states[0].node, states[0].breaker
    if state is None:
        latest = session.scalar(select(func.max(Outcome.id)).where(Outcome.node_id == node_id))
        after = breaker.release(before, now, sequence=int(latest or 0))
    else:
        after = breaker.force(before, state, now)
    if after == before:
        return after
    values = _breaker_values(after)
    session.execute(
        update(_health)
        .where(_health.c.node_id == node_id)
        .values({**{name: values[f"b_{name}"] for name in _BREAKER_COLUMNS}, "updated_at": now})
    )
    publish(
        session,
        "breaker_forced" if state is not None else "breaker_released",
        {
            "nodeId": node_id,
            "serviceName": node.service,
            "from": before.state.value,
            "to": after.state.value,
            "forced": after.forced.value if after.forced else None,
            "reason": reason,
            "operator": principal,
        },
        service=node.service,
        at=now,
    )
    snapshot_changed(session)
    return after


def node_rows(
    *, session: Session, node_id: str | None = None
) -> list[tuple[ProviderNodeRow, NodeHealthRow, ProviderService]]:
    """Every node (or one) with its live health and service, in catalog order."""
    query = (
        select(ProviderNodeRow, NodeHealthRow, ProviderService)
        .join(NodeHealthRow, NodeHealthRow.node_id == ProviderNodeRow.node_id)
        .join(ProviderService, ProviderService.name == ProviderNodeRow.service)
        .order_by(ProviderService.position, ProviderNodeRow.position)
    )
    if node_id is not None:
        query = query.where(ProviderNodeRow.node_id == node_id)
    return [(node, health, service) for node, health, service in session.execute(query)]
