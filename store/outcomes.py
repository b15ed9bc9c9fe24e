"""Outcome ingestion: a batch of reported calls, written with the health it implies.

One transaction per batch: a bulk INSERT of the outcomes, then the touched nodes' health,
breakers and predictions from their windows (store/health.py), outbox events for breaker
transitions and a snapshot NOTIFY when routing would notice. No ORM object per outcome.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from routing.health import MonitoringConfig, Observation, is_rate_limited
from store.health import HealthUpdate, Transition, lock_nodes, reassess
from store.models import Outcome

_OUTCOMES = cast(Table, Outcome.__table__)
_COPY = (
    "COPY outcomes (coordination_id, node_id, success, latency_ms, cost, error_code, observed_at)"
    " FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ["varchar", "varchar", "bool", "float8", "float8", "varchar", "timestamptz"]


@dataclass(frozen=True, slots=True)
class OutcomeReport:
    """One call a client made to a node, as it reported it."""

    node_id: str
    success: bool
    latency_ms: float
    observed_at: datetime
    coordination_id: str | None = None
    cost: float | None = None
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class NodeSummary:
    """A touched node's figures after the batch."""

    node_id: str
    reported: int
    health_score: float
    success_rate: float
    latency_p50_ms: float
    latency_p95_ms: float
    observations: int
    breaker_state: str
    failure_probability: float
    admitted_share: float = 1.0
    rate_capacity: float | None = None


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What a batch changed."""

    accepted: int
    failed: int
    nodes: tuple[NodeSummary, ...]
    transitions: tuple[Transition, ...]
    snapshot_changed: bool


def record_outcomes(
    session: Session, reports: Sequence[OutcomeReport], now: datetime, config: MonitoringConfig
) -> IngestResult:
    """Insert the batch and re-assess the nodes it touched, in the caller's transaction."""
    insert_outcomes(session, reports)
    new: dict[str, list[Observation]] = defaultdict(list)
    for report in reports:
        new[report.node_id].append(
            Observation(
                report.observed_at,
                report.success,
                report.latency_ms,
                rate_limited=is_rate_limited(report.success, report.error_code),
            )
        )
    update = reassess(session, lock_nodes(session, new), new, now, config)
    return IngestResult(
        accepted=len(reports),
        failed=sum(1 for r in reports if not r.success),
        nodes=_summaries(update, new),
        transitions=tuple(update.transitions),
        snapshot_changed=update.material,
    )


def insert_outcomes(session: Session, reports: Sequence[OutcomeReport]) -> None:
    """Bulk-insert the reports in the session's transaction: binary COPY on PostgreSQL."""
    if session.get_bind().dialect.name == "postgresql":
        # COPY streams the batch in one round trip, encoded in C; several times cheaper per
        # row than an INSERT with as many parameters (measured in bench/bench_outcomes.py).
        driver = session.connection().connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor, cursor.copy(_COPY) as copy:
            copy.set_types(_COPY_TYPES)
            for r in reports:
                copy.write_row(
                    (
                        r.coordination_id,
                        r.node_id,
                        r.success,
                        r.latency_ms,
                        r.cost,
                        r.error_code,
                        r.observed_at,
                    )
                )
        return
    # SQLite runs in-process: executemany of one prepared statement is its fast path.
    session.execute(
        insert(_OUTCOMES),
        [
            {
                "coordination_id": r.coordination_id,
                "node_id": r.node_id,
                "success": r.success,
                "latency_ms": r.latency_ms,
                "cost": r.cost,
                "error_code": r.error_code,
                "observed_at": r.observed_at,
            }
            for r in reports
        ],
    )


def _summaries(update: HealthUpdate, new: dict[str, list[Observation]]) -> tuple[NodeSummary, ...]:
    summaries = []
    for node_id, assessed in sorted(update.nodes.items()):
        figures = assessed.figures
        summaries.append(
            NodeSummary(
                node_id=node_id,
                reported=len(new.get(node_id, ())),
                health_score=figures.health_score,
                success_rate=figures.success_rate,
                latency_p50_ms=figures.latency_p50_ms,
                latency_p95_ms=figures.latency_p95_ms,
                observations=figures.observations,
                breaker_state=assessed.breaker.state.value,
                failure_probability=assessed.prediction.failure_probability,
                admitted_share=assessed.admission.share,
                rate_capacity=assessed.admission.capacity,
            )
        )
    return tuple(summaries)
