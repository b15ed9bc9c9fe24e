"""Cross-stream incidents: list them, read one (members, impact, protections, timeline),
resolve one (docs/INCIDENTS.md)."""

from __future__ import annotations

import asyncio
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError

from api.deps import Commander, Reader, RuntimeDep, get_temporal
from api.errors import ApiError, temporal_error
from api.routes.recovery import workflow_ui_url
from api.runtime import ApiRuntime
from api.schemas.common import Envelope, ErrorEnvelope
from api.schemas.incidents import (
    IncidentList,
    IncidentMemberView,
    IncidentSummary,
    IncidentView,
    Protections,
    ResolveIncidentRequest,
    TimelineEntryView,
)
from store.incidents import incident, incidents
from store.models import IncidentRow
from temporal_client.incidents import incident_status, resolve_incident
from workflows.incident_types import IncidentMember, IncidentPhase, ResolveIncident

router = APIRouter(tags=["incidents"])
ERRORS = {code: {"model": ErrorEnvelope} for code in (401, 403, 404, 409, 422, 503)}


def _summary(row: IncidentRow) -> IncidentSummary:
    return IncidentSummary(
        incident_id=row.incident_id,
        phase=row.phase,
        open=row.status == "open",
        opened_at=row.opened_at,
        last_error_at=row.last_error_at,
        ended_at=row.ended_at,
        services=list(row.services),
        cascading_services=list(row.cascading),
        blast_radius=list(row.blast_radius),
        members=len(row.members),
        revenue_at_risk=row.revenue_at_risk,
        severity=row.severity,
        customer_impact=row.customer_impact,
        expected_resolution_at=row.expected_resolution_at,
    )


@router.get(
    "/incidents",
    response_model=Envelope[IncidentList],
    responses=ERRORS,  # type: ignore[arg-type]
)
def list_incidents(
    runtime: RuntimeDep,
    _: Reader,
    service: Annotated[str | None, Query(max_length=64)] = None,
    phase: Annotated[IncidentPhase | None, Query()] = None,
) -> Envelope[IncidentList]:
    """Incidents, open ones first (newest first within each), by service and phase."""
    with runtime.sessions() as session:
        rows = incidents(session, service=service, phase=phase.value if phase else None)
        return Envelope(data=IncidentList(incidents=[_summary(r) for r in rows]))


@router.get(
    "/incidents/{incident_id}",
    response_model=Envelope[IncidentView],
    responses=ERRORS,  # type: ignore[arg-type]
)
async def get_incident(incident_id: str, runtime: RuntimeDep, _: Reader) -> Envelope[IncidentView]:
    """One incident: members, services hit and cascading, impact, protections, timeline."""
    row = await asyncio.to_thread(_row, runtime, incident_id)
    timeline: list[TimelineEntryView] = []
    try:  # the timeline lives in the workflow; the store has the rest
        client = await get_temporal(runtime)
        status = await incident_status(client, incident_id)
        timeline = [
            TimelineEntryView(at=t.at, step=t.step, detail=t.detail) for t in status.timeline
        ]
    except (ApiError, RPCError):
        pass
    return Envelope(data=_view(runtime, row, timeline))


@router.post(
    "/incidents/{incident_id}/resolve",
    response_model=Envelope[IncidentView],
    responses=ERRORS,  # type: ignore[arg-type]
)
async def post_resolve_incident(
    incident_id: str, body: ResolveIncidentRequest, runtime: RuntimeDep, principal: Commander
) -> Envelope[IncidentView]:
    """Incident commander: the incident is over; end it (its recoveries go on by themselves)."""
    ended = await asyncio.to_thread(_row, runtime, incident_id)
    if ended.status != "open":
        raise ApiError(
            409, "incident_ended", f"incident {incident_id} has ended: {ended.end_reason or ''}"
        )
    client = await get_temporal(runtime)
    request = ResolveIncident(reason=body.reason, operator=principal.subject)
    try:
        status = await resolve_incident(client, incident_id, request)
    except WorkflowUpdateFailedError as exc:
        raise ApiError(409, "incident_ended", str(exc.cause or exc)) from exc
    except RPCError as exc:
        raise temporal_error(exc, f"no running incident {incident_id!r}") from exc
    await asyncio.to_thread(runtime.snapshot.refresh)  # its protections are lifted now
    row = await asyncio.to_thread(_row, runtime, incident_id)
    timeline = [TimelineEntryView(at=t.at, step=t.step, detail=t.detail) for t in status.timeline]
    return Envelope(message="Incident resolved", data=_view(runtime, row, timeline))


def _row(runtime: ApiRuntime, incident_id: str) -> IncidentRow:
    with runtime.sessions() as session:
        row = incident(session, incident_id)
    if row is None:
        raise ApiError(404, "not_found", f"no incident {incident_id!r}")
    return row


def _view(runtime: ApiRuntime, row: IncidentRow, timeline: list[TimelineEntryView]) -> IncidentView:
    settings = runtime.settings
    members = [IncidentMember.model_validate(m) for m in row.members]
    protections = (
        Protections(
            services=list(row.blast_radius),
            retries_per_request=settings.incident_retries_per_request,
            retry_ratio=settings.incident_retry_ratio,
            retry_window_seconds=settings.incident_retry_window_seconds,
            min_retries=settings.incident_min_retries,
            reserved_share=settings.incident_reserved_share,
        )
        if row.status == "open"
        else None
    )
    query = quote(f'IncidentId="{row.incident_id}"', safe="")
    namespace = quote(settings.temporal_namespace, safe="")
    return IncidentView(
        **_summary(row).model_dump(),
        end_reason=row.end_reason,
        failed_nodes=list(row.failed_nodes),
        member_streams=[
            IncidentMemberView(
                recovery_workflow_id=m.recovery_workflow_id,
                stream_id=m.stream_id,
                service_name=m.service,
                error_type=m.error_type,
                severity=m.severity.value,
                failed_providers=m.failed_providers,
                cascading_services=m.cascading_services,
                revenue_at_risk=m.revenue_at_risk,
                customer_impact=m.customer_impact,
                correlation_rule=m.rule,
                joined_at=m.joined_at,
                expected_resolution_at=m.expected_resolution_at,
                stream_status=m.stream_status,
                temporal_ui_url=workflow_ui_url(runtime, m.recovery_workflow_id),
            )
            for m in members
        ],
        timeline=timeline,
        protections=protections,
        workflow_id=row.workflow_id,
        temporal_ui_url=workflow_ui_url(runtime, row.workflow_id),
        recoveries_query=f"{settings.temporal_ui_url}/namespaces/{namespace}/workflows?query={query}",
    )
