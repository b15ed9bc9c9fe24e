"""Inputs and outputs of HealthMonitorWorkflow and HealthSweepWorkflow, and the activities
they call.

New fields always get defaults so that recorded histories keep decoding.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field
from temporalio import activity

from routing.recovery import Severity

# The one long-running monitor: a fixed id, so every worker's start-up finds the same one.
MONITOR_WORKFLOW_ID = "switchyard-health-monitor"
# Sweeps per monitor run before it continues as new: an hour at the default 10 s interval,
# a history of a few thousand events.
MONITOR_TICKS_PER_RUN = 360
# The schedule earlier versions registered (one workflow per sweep); start-up deletes it.
SWEEP_SCHEDULE_ID = "switchyard-health-sweep"
# Activity names as recorded in histories.
SWEEP_HEALTH = "monitoring.sweep_health"
START_RECOVERIES = "monitoring.start_recoveries"


def monitor_stream_id(node_id: str) -> str:
    """The error stream a monitor-started recovery of this node reports on."""
    return f"monitor_{node_id}"


class SweepInput(BaseModel):
    """One sweep run; `start_recoveries=False` only re-scores (for a dry run)."""

    start_recoveries: bool = True


class SweepHealthInput(BaseModel):
    """The sweep activity's input (nothing yet: the store holds the state)."""


class BreakerChange(BaseModel):
    """A breaker the sweep moved (OPEN -> HALF_OPEN after its break)."""

    node_id: str
    service: str
    previous_state: str
    state: str
    reason: str = ""


class DegradedNode(BaseModel):
    """A node that needs a recovery, and why (ErrorReport terms)."""

    node_id: str
    service: str
    error_type: str  # provider_outage | performance_degradation | predicted_failure
    severity: Severity
    detail: str = ""


class SweepHealthResult(BaseModel):
    """What the sweep activity re-scored, moved and found degraded."""

    nodes: int = 0
    changed: int = 0
    transitions: list[BreakerChange] = Field(default_factory=list)
    degraded: list[DegradedNode] = Field(default_factory=list)


class StartRecoveriesInput(BaseModel):
    """Start (or find running) one ErrorRecoveryWorkflow per degraded node."""

    nodes: list[DegradedNode]
    request_key: str = ""  # dedupes a retried activity's reports inside the recovery


class StartOutcome(StrEnum):
    """What starting a recovery for a degraded node came to."""

    started = "started"
    joined = "joined"  # the stream's recovery was running and took the report
    already_running = "already_running"
    would_strand = "would_strand"  # holding the node out would leave its service no node
    no_route = "no_route"
    refused = "refused"


class RecoveryStart(BaseModel):
    """What happened for one degraded node."""

    node_id: str
    workflow_id: str
    outcome: StartOutcome
    selected_node: str | None = None
    detail: str = ""


class StartRecoveriesResult(BaseModel):
    """One entry per degraded node."""

    recoveries: list[RecoveryStart] = Field(default_factory=list)


class SweepResult(BaseModel):
    """A sweep run's result, visible in the Temporal UI."""

    nodes: int = 0
    changed: int = 0
    transitions: list[BreakerChange] = Field(default_factory=list)
    degraded: list[DegradedNode] = Field(default_factory=list)
    recoveries: list[RecoveryStart] = Field(default_factory=list)


class MonitorConfig(BaseModel):
    """What the monitor's start-up gives it; the `configure` signal replaces it while it runs
    (a worker started with a new interval), effective from the next wait."""

    interval_seconds: float = Field(default=10.0, ge=1)
    start_recoveries: bool = True  # False only re-scores (a dry run)


class MonitorState(BaseModel):
    """What the monitor keeps across its runs (carried through continue-as-new): counters,
    the pause, and the last sweep."""

    runs: int = 1
    sweeps: int = 0
    failed_sweeps: int = 0
    transitions: int = 0
    recoveries_started: int = 0
    paused: bool = False
    pause_reason: str = ""
    last_sweep_at: str | None = None
    last_sweep: SweepResult | None = None
    last_error: str = ""  # the last sweep's failure; empty when it succeeded


class MonitorInput(BaseModel):
    """One run of HealthMonitorWorkflow; `carried` is set when a run continues as new."""

    config: MonitorConfig = Field(default_factory=MonitorConfig)
    ticks_per_run: int = Field(default=MONITOR_TICKS_PER_RUN, ge=1)
    carried: MonitorState | None = None


class PauseRequest(BaseModel):
    """The `pause` signal: no sweep until `resume`; kept across runs and worker restarts."""

    reason: str = ""


class MonitorStatus(BaseModel):
    """The `status` query: the configuration, the state across runs, this run's sweeps."""

    config: MonitorConfig
    state: MonitorState
    ticks_this_run: int = 0


class SweepSteps:
    """The activities the sweep calls: name, input and output of each.

    Called by method reference; activities.monitoring.MonitoringActivities implements them.
    """

    @activity.defn(name=SWEEP_HEALTH)
    def sweep_health(self, data: SweepHealthInput) -> SweepHealthResult:
        """Re-score every node, half-open breakers whose break is over, list degraded nodes."""
        raise NotImplementedError

    @activity.defn(name=START_RECOVERIES)
    async def start_recoveries(self, data: StartRecoveriesInput) -> StartRecoveriesResult:
        """Start a recovery for each degraded node that has none running."""
        raise NotImplementedError
