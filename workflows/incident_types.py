"""Inputs, outputs and state of IncidentWorkflow, and the activities it calls.

New fields always get defaults so that recorded histories keep decoding.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field
from temporalio import activity

from routing.recovery import Severity, worst_severity

# Activity names as recorded in histories.
RECORD_INCIDENT = "incident.record"
MEMBER_PHASES = "incident.member_phases"
JOIN_INCIDENT = "incident.join"

# Stream statuses of a recovery that has ended (the recovery's outcome).
ENDED_STREAM_STATUSES = frozenset({"resolved", "unresolved", "cancelled"})
CUSTOMER_IMPACT_ORDER = ("", "none", "minimal", "low", "moderate", "high", "severe", "critical")


def incident_workflow_id(incident_id: str) -> str:
    """The workflow id of an incident."""
    return f"incident:{incident_id}"


def worst_impact(current: str, new: str) -> str:
    """The more serious of two customer impacts (unknown words rank lowest)."""

    def rank(impact: str) -> int:
        word = impact.lower()
        return CUSTOMER_IMPACT_ORDER.index(word) if word in CUSTOMER_IMPACT_ORDER else 0

    return new if rank(new) > rank(current) else current


class IncidentPhase(StrEnum):
    """Where an incident is, from its members' recoveries."""

    recovering = "recovering"  # its members' recoveries re-route and watch their providers
    escalated = "escalated"  # a running member passed its caller's timeToResolution
    resolved = "resolved"  # every member ended, or an operator resolved it


class IncidentMember(BaseModel):
    """One error stream of the incident: its recovery and what it put at risk."""

    recovery_workflow_id: str
    stream_id: str
    service: str
    error_type: str = ""
    severity: Severity = Severity.low
    failed_providers: list[str] = Field(default_factory=list)
    cascading_services: list[str] = Field(default_factory=list)
    revenue_at_risk: float = 0.0
    customer_impact: str = ""
    rule: str = "new"  # the correlation rule that brought it in
    joined_at: datetime
    expected_resolution_at: datetime | None = None
    stream_status: str = "recovering"  # its recovery's stream status, as last polled

    @property
    def ended(self) -> bool:
        """True once its recovery has ended."""
        return self.stream_status in ENDED_STREAM_STATUSES


class TimelineEntry(BaseModel):
    """One step of the incident."""

    at: datetime
    step: str
    detail: str = ""


class IncidentState(BaseModel):
    """Everything the incident knows; carried across continue-as-new."""

    incident_id: str
    opened_at: datetime
    members: list[IncidentMember] = Field(default_factory=list)
    timeline: list[TimelineEntry] = Field(default_factory=list)
    phase: IncidentPhase = IncidentPhase.recovering
    ended_at: datetime | None = None
    end_reason: str = ""
    blast_radius: list[str] = Field(default_factory=list)

    def services(self) -> list[str]:
        """Services its error streams hit directly."""
        return sorted({m.service for m in self.members})

    def cascading(self) -> list[str]:
        """Services its errors named as cascading."""
        return sorted({s for m in self.members for s in m.cascading_services})

    def failed_nodes(self) -> list[str]:
        """Every failed node its errors named."""
        return sorted({p for m in self.members for p in m.failed_providers})

    def revenue_at_risk(self) -> float:
        """Revenue at risk summed over its members (each stream once)."""
        return round(sum(m.revenue_at_risk for m in self.members), 2)

    def severity(self) -> Severity:
        """The worst severity of its members."""
        worst = Severity.low
        for member in self.members:
            worst = worst_severity(worst, member.severity)
        return worst

    def customer_impact(self) -> str:
        """The worst customer impact of its members."""
        worst = ""
        for member in self.members:
            worst = worst_impact(worst, member.customer_impact)
        return worst

    def last_error_at(self) -> datetime:
        """When its latest member joined."""
        return max((m.joined_at for m in self.members), default=self.opened_at)

    def expected_resolution_at(self) -> datetime | None:
        """When its last member is expected to be resolved."""
        times = [m.expected_resolution_at for m in self.members if m.expected_resolution_at]
        return max(times) if times else None


class IncidentInput(BaseModel):
    """Start input of an incident."""

    incident_id: str
    poll_seconds: float = 30.0  # how often the members' recoveries are looked at
    max_members_per_run: int = 200  # continue-as-new after this many members joined in a run
    carried: IncidentState | None = None  # the state continued from the previous run


class JoinResult(BaseModel):
    """What add_member answers."""

    incident_id: str
    joined_existing: bool  # the incident already had other streams
    member_count: int
    revenue_at_risk: float
    phase: IncidentPhase


class ResolveIncident(BaseModel):
    """An operator ends the incident."""

    reason: str = Field(min_length=1, max_length=1000)
    operator: str = ""


class IncidentStatus(BaseModel):
    """The status query's answer."""

    incident_id: str
    phase: IncidentPhase
    opened_at: datetime
    last_error_at: datetime
    ended_at: datetime | None = None
    end_reason: str = ""
    members: list[IncidentMember] = Field(default_factory=list)
    services: list[str] = Field(default_factory=list)
    cascading: list[str] = Field(default_factory=list)
    blast_radius: list[str] = Field(default_factory=list)
    failed_nodes: list[str] = Field(default_factory=list)
    revenue_at_risk: float = 0.0
    severity: Severity = Severity.low
    customer_impact: str = ""
    expected_resolution_at: datetime | None = None
    timeline: list[TimelineEntry] = Field(default_factory=list)


# ---- activity inputs / outputs ----


class RecordIncidentInput(BaseModel):
    """Write the incident's row and announce the change."""

    key: str
    status: IncidentStatus
    event: str  # incident_opened | incident_updated | incident_resolved
    detail: str = ""


class RecordedIncident(BaseModel):
    """The blast radius the store computed with the catalog's consumer graph."""

    blast_radius: list[str] = Field(default_factory=list)


class MemberPhasesInput(BaseModel):
    """Which streams to look at."""

    stream_ids: list[str]


class MemberPhases(BaseModel):
    """Each stream's status (a stream the store does not know is absent)."""

    statuses: dict[str, str] = Field(default_factory=dict)


class JoinIncidentInput(BaseModel):
    """A recovery joins its stream to the incident its error was correlated into."""

    incident_id: str
    member: IncidentMember


class JoinedIncident(BaseModel):
    """The incident the member is in: the one asked for, or, when that one had ended
    meanwhile, the new one opened for it."""

    incident_id: str
    member_count: int = 0


class IncidentSteps:
    """The activities of incidents, IncidentWorkflow's and the recovery's joining step: name,
    input and output of each.

    Called by method reference; activities.incident.IncidentActivities implements them.
    """

    @activity.defn(name=RECORD_INCIDENT)
    def record_incident(self, data: RecordIncidentInput) -> RecordedIncident:
        """Upsert the incident's row (members, impact, blast radius) and publish the event."""
        raise NotImplementedError

    @activity.defn(name=MEMBER_PHASES)
    def member_phases(self, data: MemberPhasesInput) -> MemberPhases:
        """The current status of the members' error streams."""
        raise NotImplementedError

    @activity.defn(name=JOIN_INCIDENT)
    async def join_incident(self, data: JoinIncidentInput) -> JoinedIncident:
        """Add a recovery to its incident (update-with-start): called by the recovery."""
        raise NotImplementedError
