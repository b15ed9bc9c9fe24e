"""ErrorRecoveryWorkflow's timers and phases, as plain state stepped by virtual time.

The workflow (workflows/recovery.py) re-routes with a plan from routing.recovery, health-checks
the failed providers every `check_interval_seconds`, and after `healthy_checks_to_restore`
healthy checks in a row and the plan's monitoring window since the last error gives traffic
back stage by stage (10 % -> 50 % -> 100 %), holding each stage and checking again; a failed
check puts the route back and monitoring starts over. After `max_monitoring_minutes` it ends
unresolved and holds the failed providers' breakers open. This class keeps the same state and
takes the same steps; the health check itself is the caller's (it reads the store's figures).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from routing.recovery import RecoveryPlan
from workflows.recovery_types import RecoveryConfig


class Phase(StrEnum):
    """The recovery's phase (RecoveryPhase's values that matter to routing)."""

    waiting = "waiting"  # no route could be planned; the run waits for its deadline
    rerouted = "rerouted"
    restoring = "restoring"
    resolved = "resolved"
    unresolved = "unresolved"


@dataclass(frozen=True, slots=True)
class Effect:
    """What one step does to routing: move the override, or end the recovery."""

    restore_fraction: float | None = None  # set the override's restore fraction
    finished: bool = False  # remove the override
    hold_open: frozenset[str] = frozenset()  # force these breakers OPEN (unresolved end)


class RecoveryRun:
    """One running recovery of one error stream (a monitor stream: one failed node)."""

    def __init__(
        self,
        workflow_id: str,
        failed: frozenset[str],
        plan: RecoveryPlan | None,
        started: float,
        config: RecoveryConfig,
    ) -> None:
        self.workflow_id = workflow_id
        self.failed = failed
        self.plan = plan
        self.config = config
        self.started = started
        self.deadline = started + config.max_monitoring_minutes * 60.0
        self.last_error_at = started
        self.phase = Phase.rerouted if plan is not None else Phase.waiting
        self.next_at = started + config.check_interval_seconds if plan else self.deadline
        self.streak = 0
        self.stage = -1
        self.ended_at: float | None = None

    @property
    def running(self) -> bool:
        """True until the recovery has ended."""
        return self.phase not in (Phase.resolved, Phase.unresolved)

    def due(self, t: float) -> bool:
        """True when a timer of the recovery has fired by time t."""
        return self.running and t >= self.next_at

    def advance(self, t: float, healthy: bool) -> Effect | None:
        """The step taken when the timer fires at t; `healthy` is the failed nodes' check."""
        if self.phase is Phase.waiting or (self.phase is Phase.rerouted and t >= self.deadline):
            return self._end(t, Phase.unresolved)
        assert self.plan is not None
        if self.phase is Phase.rerouted:
            self.streak = self.streak + 1 if healthy else 0
            window = t - self.last_error_at >= self._monitoring_seconds()
            if self.streak >= self.config.healthy_checks_to_restore and window:
                self.stage = -1
                return self._next_stage(t)
            self.next_at = t + self.config.check_interval_seconds
            return None
        if not healthy:
            self.phase, self.streak, self.stage = Phase.rerouted, 0, -1
            self.next_at = t + self.config.check_interval_seconds
            return Effect(restore_fraction=0.0)
        return self._next_stage(t)

    def _next_stage(self, t: float) -> Effect:
        assert self.plan is not None
        stages = self.plan.restore_stages or (1.0,)
        self.stage += 1
        fraction = stages[self.stage] if self.stage < len(stages) else 1.0
        if fraction >= 1.0:
            return self._end(t, Phase.resolved)
        self.phase = Phase.restoring
        self.next_at = t + self._stage_hold_seconds()
        return Effect(restore_fraction=fraction)

    def _end(self, t: float, phase: Phase) -> Effect:
        self.phase, self.ended_at = phase, t
        hold = self.failed if phase is Phase.unresolved else frozenset()
        return Effect(finished=True, hold_open=hold)

    def _stage_hold_seconds(self) -> float:
        assert self.plan is not None
        configured = self.config.stage_hold_seconds
        return configured if configured is not None else float(self.plan.stage_hold_seconds)

    def _monitoring_seconds(self) -> float:
        assert self.plan is not None
        configured = self.config.monitoring_seconds
        return configured if configured is not None else float(self.plan.monitoring_seconds)
