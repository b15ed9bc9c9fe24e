"""Inputs, outputs and state of ErrorRecoveryWorkflow, and the activities it calls.

New fields always get defaults so that recorded histories keep decoding.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field
from temporalio import activity

from routing.recovery import Severity

# Activity names as recorded in histories: renaming one breaks replay of running recoveries.
HANDLE_ERROR = "recovery.handle_error"
APPLY_OVERRIDE = "recovery.apply_override"
CHECK_HEALTH = "recovery.check_health"
PUBLISH_EVENT = "recovery.publish_event"
FINISH = "recovery.finish"


class RecoveryPhase(StrEnum):
    """Where a recovery is; also the Phase search attribute."""

    waiting = "waiting"  # started, no error applied yet
    rerouted = "rerouted"  # override applied, monitoring the failed providers
    restoring = "restoring"  # staged restore in progress
    escalated = "escalated"  # timeToResolution passed, still monitoring
    resolved = "resolved"
    unresolved = "unresolved"  # gave up after the monitoring maximum; routing left safe
    cancelled = "cancelled"


TERMINAL_PHASES = frozenset(
    {RecoveryPhase.resolved, RecoveryPhase.unresolved, RecoveryPhase.cancelled}
)


class RecoverySource(StrEnum):
    """Who started a recovery."""

    backend_agent = "backend_agent"  # backend-agent-error
    monitor = "monitor"  # the health sweep found a degraded node


class RecoveryConfig(BaseModel):
    """Timers of a recovery. Defaults are production values; tests shorten them."""

    check_interval_seconds: float = 30.0
    healthy_checks_to_restore: int = 2
    max_monitoring_minutes: float = 120.0
    stage_hold_seconds: float | None = None  # None: the plan's hold
    monitoring_seconds: float | None = None  # None: the plan's minimum monitoring window


class RecoveryInput(BaseModel):
    """Start input: which stream of which service this workflow recovers."""

    service: str
    stream_id: str
    source: RecoverySource = RecoverySource.backend_agent
    config: RecoveryConfig = RecoveryConfig()


class ErrorReport(BaseModel):
    """One error of the stream (the backend-agent-error body, normalised)."""

    error_type: str
    severity: Severity
    operation: str = ""
    error_message: str = ""
    failed_providers: list[str] = Field(default_factory=list)
    retry_attempts: int = 0
    cascading_services: list[str] = Field(default_factory=list)
    revenue_at_risk: float = 0.0
    customer_impact: str = ""
    time_to_resolution_minutes: float = 15.0
    recovery_strategy_id: str | None = None
    monitoring_session_id: str | None = None
    request_key: str = ""  # caller-supplied dedupe key for the same delivery
    incident_id: str | None = None  # the cross-stream incident the error was correlated into
    incident_rule: str = "new"  # the correlation rule that chose it (routing/incidents.py)


class NodeSummary(BaseModel):
    """A node as reported to callers."""

    node_id: str
    provider_name: str
    region: str
    success_rate: float
    cost_per_request: float
    health_score: float
    latency_ms: float


class RoutePlan(BaseModel):
    """The route a recovery selected (result of the plan activity)."""

    strategy: str
    action: str
    rule: str
    selected: NodeSummary
    standby: NodeSummary | None = None
    excluded_nodes: list[str] = Field(default_factory=list)
    estimated_cost: float
    estimated_latency: float
    restore_stages: list[float] = Field(default_factory=list)
    stage_hold_seconds: float
    monitoring_seconds: float
    estimated_resolution_minutes: float
    # How the estimate was made: "history" (median of the service's resolved recoveries under
    # the same strategy, resolution_samples of them) or "plan_timers".
    resolution_basis: str = "plan_timers"
    resolution_samples: int = 0
    # The catalog's recovery plan the route follows (None: the recovery table chose), and
    # what became of the id the report named (routing.recovery.PlanStatus).
    recovery_plan_id: str | None = None
    requested_plan_id: str | None = None
    plan_status: str = "none"
    # The severity the report was handled with (raised once the caller's retries are spent).
    handled_severity: str | None = None


class ReportResult(BaseModel):
    """What report_error answers once the route is applied."""

    workflow_id: str
    coordination_id: str
    error_count: int
    joined_existing: bool
    plan: RoutePlan
    phase: RecoveryPhase


class TimelineStep(BaseModel):
    """One step of the recovery, for the status query and the UI."""

    at: datetime
    step: str
    detail: str = ""


class RecoveryStatus(BaseModel):
    """The status query's answer."""

    workflow_id: str
    service: str
    stream_id: str
    source: RecoverySource
    phase: RecoveryPhase
    severity: Severity | None = None
    strategy: str | None = None
    action: str | None = None
    selected_node: str | None = None
    failed_providers: list[str] = Field(default_factory=list)
    cascading_services: list[str] = Field(default_factory=list)
    error_count: int = 0
    restore_fraction: float = 0.0
    escalated: bool = False
    started_at: datetime | None = None
    ended_at: datetime | None = None
    timeline: list[TimelineStep] = Field(default_factory=list)
    incident_id: str | None = None
    recovery_plan_id: str | None = None  # the catalog plan the recovery is pinned to
    unknown_plan_ids: list[str] = Field(default_factory=list)  # named, but no such plan


class ResolveRequest(BaseModel):
    """Operator resolution."""

    reason: str = Field(min_length=1, max_length=1000)
    operator: str = ""


class CancelRequest(BaseModel):
    """Operator cancellation."""

    reason: str = Field(min_length=1, max_length=1000)
    operator: str = ""


# ---- activity inputs / outputs ----


class HandleErrorInput(BaseModel):
    """Record an error, plan the route and apply the override, in one transaction."""

    key: str
    workflow_id: str
    service: str
    stream_id: str
    report: ErrorReport
    error_number: int
    failed_providers: list[str]  # every provider failed so far in this recovery
    severity: Severity  # the worst severity so far
    coordination_id: str
    pinned_plan_id: str | None = None  # the catalog plan an earlier report pinned


class HandleErrorResult(BaseModel):
    """The applied plan, or why no node could take over (nothing applied then)."""

    plan: RoutePlan | None = None
    no_route: str | None = None
    exclusions: list[dict[str, str]] = Field(default_factory=list)
    # The id the coordination was stored under. A workflow task retried after a crash computes
    # a new id (workflow.now() moved on) while the ledger answers with the first application.
    coordination_id: str | None = None


class ApplyOverrideInput(BaseModel):
    """Put (or move) the workflow's routing override in the store."""

    key: str
    workflow_id: str
    service: str
    stream_id: str
    plan: RoutePlan
    restore_fraction: float = 0.0
    coordination_id: str | None = None  # set when this application answers an error report
    operation: str = ""
    event: str = "recovery_route_applied"


class OverrideApplied(BaseModel):
    """The override's revision after the change."""

    revision: int = 0


class HealthCheckInput(BaseModel):
    """Which nodes to check."""

    node_ids: list[str]


class NodeCheck(BaseModel):
    """Health of one node now."""

    node_id: str
    healthy: bool
    health_score: float
    success_rate: float
    breaker_state: str
    detail: str = ""


class HealthCheckResult(BaseModel):
    """Health of the checked nodes."""

    nodes: list[NodeCheck]

    @property
    def all_healthy(self) -> bool:
        """True when every checked node is healthy."""
        return all(n.healthy for n in self.nodes)


class RecoveryEventInput(BaseModel):
    """Publish a recovery event and move the stream's status."""

    key: str
    workflow_id: str
    service: str
    stream_id: str
    event_type: str
    stream_status: str | None = None
    payload: dict[str, object] = Field(default_factory=dict)


class EventPublished(BaseModel):
    """The event published (its id is drawn at commit, after this result)."""

    event_type: str = ""


class FinishInput(BaseModel):
    """Remove the override and record how the recovery ended."""

    key: str
    workflow_id: str
    service: str
    stream_id: str
    outcome: RecoveryPhase
    reason: str = ""
    hold_open_nodes: list[str] = Field(default_factory=list)  # unresolved: keep these out
    # The run, for recovery_runs (absent in histories recorded before they were kept).
    run_key: str | None = None
    strategy: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None  # workflow time, as started_at
    declared_minutes: float | None = None
    recovery_plan_id: str | None = None


class RecoveryFinished(BaseModel):
    """How the recovery ended, as recorded."""

    outcome: RecoveryPhase | None = None


class RecoverySteps:
    """The activities ErrorRecoveryWorkflow calls: name, input and output of each.

    The workflow calls these by method reference, so it imports no store code and a changed
    signature is a type error; activities.recovery.RecoveryActivities implements them.
    """

    @activity.defn(name=HANDLE_ERROR)
    def handle_error(self, data: HandleErrorInput) -> HandleErrorResult:
        """Record the error, plan the route and apply the override, in one transaction."""
        raise NotImplementedError

    @activity.defn(name=APPLY_OVERRIDE)
    def apply_override(self, data: ApplyOverrideInput) -> OverrideApplied:
        """Put or move the workflow's routing override."""
        raise NotImplementedError

    @activity.defn(name=CHECK_HEALTH)
    def check_health(self, data: HealthCheckInput) -> HealthCheckResult:
        """Whether each node is back within its SLOs."""
        raise NotImplementedError

    @activity.defn(name=PUBLISH_EVENT)
    def publish_recovery_event(self, data: RecoveryEventInput) -> EventPublished:
        """Publish a recovery event and move the stream's status."""
        raise NotImplementedError

    @activity.defn(name=FINISH)
    def finish_recovery(self, data: FinishInput) -> RecoveryFinished:
        """Remove the override and record how the recovery ended."""
        raise NotImplementedError
