"""Response and request models of the incident endpoints (docs/INCIDENTS.md)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from api.schemas.common import ResponseModel, WireModel


class IncidentMemberView(ResponseModel):
    """One error stream of the incident and its recovery."""

    recovery_workflow_id: str
    stream_id: str
    service_name: str
    error_type: str
    severity: str
    failed_providers: list[str]
    cascading_services: list[str]
    revenue_at_risk: float
    customer_impact: str
    correlation_rule: str
    joined_at: datetime
    expected_resolution_at: datetime | None
    stream_status: str
    temporal_ui_url: str


class IncidentSummary(ResponseModel):
    """An incident in a list."""

    incident_id: str
    phase: str
    open: bool
    opened_at: datetime
    last_error_at: datetime
    ended_at: datetime | None
    services: list[str]
    cascading_services: list[str]
    blast_radius: list[str]
    members: int
    revenue_at_risk: float
    severity: str
    customer_impact: str
    expected_resolution_at: datetime | None


class IncidentList(ResponseModel):
    """Incidents, open ones first."""

    incidents: list[IncidentSummary]


class TimelineEntryView(ResponseModel):
    """One step of the incident."""

    at: datetime
    step: str
    detail: str


class Protections(ResponseModel):
    """What the services in the blast radius get while the incident is open."""

    services: list[str]
    retries_per_request: int
    retry_ratio: float
    retry_window_seconds: float
    min_retries: int
    reserved_share: float


class IncidentView(IncidentSummary):
    """One incident in full."""

    end_reason: str | None
    failed_nodes: list[str]
    member_streams: list[IncidentMemberView]
    timeline: list[TimelineEntryView]
    protections: Protections | None
    workflow_id: str
    temporal_ui_url: str
    recoveries_query: str  # the Temporal UI's query listing its member recoveries


class ResolveIncidentRequest(WireModel):
    """Body of POST incidents/{incidentId}/resolve."""

    reason: str = Field(min_length=1, max_length=160)
