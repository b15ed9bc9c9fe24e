"""Inputs and outputs of HealthSweepWorkflow and its activities.

New fields always get defaults so that recorded histories keep decoding.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

SWEEP_SCHEDULE_ID = "switchyard-health-sweep"
SWEEP_WORKFLOW_ID = "switchyard-health-sweep"  # the schedule appends each run's start time
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
    severity: str
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


class RecoveryStart(BaseModel):
    """What happened for one degraded node."""

    node_id: str
    workflow_id: str
    outcome: str  # started | joined | already_running | would_strand | no_route | refused
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
