"""The store's node_health rows, moved by routing.health.assess as ingestion and the sweep do.

`ingest` is store/outcomes.record_outcomes for one batch (the touched nodes, their new
outcomes); `sweep` is the HealthSweep's re-scoring of every node. Both report whether the
API replicas would reload their snapshot now (store/health.reassess: a breaker that changed
state, or a material drift at most every 2 s per node); otherwise the replicas see the new
figures at their next periodic reload.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from routing import breaker
from routing.admission import FULL, Admission
from routing.breaker import BreakerStatus
from routing.health import (
    Degradation,
    HealthFigures,
    MonitoringConfig,
    Observation,
    assess,
    material_change,
    moved_at_once,
    recent,
)
from routing.recovery import recovery_problems
from routing.types import BreakerState, NodeHealth, ProviderNode

# store/health.DRIFT_NOTIFY_INTERVAL: a drift (not a breaker move) notifies at most this often.
DRIFT_NOTIFY_SECONDS = 2.0


@dataclass
class NodeState:
    """One node_health row and the node's outcome window."""

    node: ProviderNode
    figures: HealthFigures
    status: BreakerStatus = field(default_factory=BreakerStatus)
    failure_probability: float = 0.0
    window: list[Observation] = field(default_factory=list)
    pending: list[Observation] = field(default_factory=list)
    notified_at: float | None = None
    admission: Admission = FULL

    def health(self) -> NodeHealth:
        """The node as a snapshot loads it (store/snapshot.load_snapshot)."""
        return NodeHealth(
            node_id=self.node.node_id,
            health_score=self.figures.health_score,
            success_rate=self.figures.success_rate,
            latency_ms=self.figures.latency_p50_ms,
            breaker_state=self.status.state,
            failure_probability=self.failure_probability,
            breaker_reason=self.status.reason,
            admitted_share=self.admission.share,
            observations=self.figures.observations,
            rate_capacity=self.admission.capacity,
        )

    def healthy(self) -> bool:
        """The recovery workflow's health check (routing.recovery.recovery_problems)."""
        figures, node = self.figures, self.node
        return not recovery_problems(
            breaker_state=self.status.state,
            health_score=figures.health_score,
            success_rate=figures.success_rate,
            latency_p95_ms=figures.latency_p95_ms,
            latency_slo_ms=node.latency_slo_ms,
            error_rate_slo=node.error_rate_slo,
        )


def fresh_state(node: ProviderNode) -> NodeState:
    """A node as the catalog loads it: catalog figures, breaker CLOSED, no outcomes."""
    figures = HealthFigures(
        health_score=node.health_score,
        success_rate=node.success_rate,
        latency_p50_ms=node.latency_ms,
        latency_p95_ms=node.latency_ms,
        observations=0,
    )
    return NodeState(node=node, figures=figures)


@dataclass
class Monitor:
    """Every node's row; outcomes arrive with `record` and count at the next `ingest`."""

    states: dict[str, NodeState]
    config: MonitoringConfig
    prediction: bool = True  # False: predictions are not used (probability 0, no recoveries)
    sequence: int = 0

    def record(
        self,
        node_id: str,
        at: datetime,
        success: bool,
        latency_ms: float,
        *,
        rate_limited: bool = False,
    ) -> None:
        """A reported outcome, waiting for the next batch (a 429 reported as such)."""
        self.sequence += 1
        self.states[node_id].pending.append(
            Observation(at, success, latency_ms, self.sequence, rate_limited)
        )

    def ingest(self, now: datetime, t: float) -> bool:
        """Assess the nodes with new outcomes; True when the replicas would reload now."""
        touched = [s for s in self.states.values() if s.pending]
        return self._reassess(touched, now, t, with_new=True)[0]

    def sweep(self, now: datetime, t: float) -> tuple[bool, list[Degradation]]:
        """Re-score every node (windows age, breakers half-open); degraded nodes by node id."""
        return self._reassess(list(self.states.values()), now, t, with_new=False)

    def force_open(self, node_ids: Iterable[str], now: datetime) -> None:
        """Hold breakers OPEN, as an unresolved recovery does."""
        for node_id in node_ids:
            state = self.states[node_id]
            state.status = breaker.force(state.status, BreakerState.OPEN, now)

    def _reassess(
        self, states: Sequence[NodeState], now: datetime, t: float, *, with_new: bool
    ) -> tuple[bool, list[Degradation]]:
        material = False
        degraded: list[Degradation] = []
        for state in sorted(states, key=lambda s: s.node.node_id):
            new = state.pending if with_new else []
            observations = [*state.window, *new]
            assessed = assess(
                state.node, state.status, observations, new, now, self.config, state.admission
            )
            state.window = recent(observations, now, self.config.health)
            state.pending = []
            probability = assessed.prediction.failure_probability if self.prediction else 0.0
            moved = moved_at_once(state.status.state, state.admission, assessed)
            drifted = material_change(
                state.figures, assessed.figures, state.failure_probability, probability
            )
            if moved or (
                drifted
                and (state.notified_at is None or t - state.notified_at >= DRIFT_NOTIFY_SECONDS)
            ):
                material, state.notified_at = True, t
            state.figures = assessed.figures
            state.status = assessed.breaker
            state.failure_probability = probability
            state.admission = assessed.admission
            if assessed.degradation is not None:
                degraded.append(assessed.degradation)
        return material, degraded


def without_prediction(config: MonitoringConfig) -> MonitoringConfig:
    """The monitoring rules with predictive recoveries switched off."""
    # A threshold above 1 is never reached: no node is degraded by a prediction alone.
    return replace(config, prediction=replace(config.prediction, threshold=2.0))
