"""active-coordinations and backend-agent-connections, read from the store."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from api.deps import Reader, RuntimeDep, SessionDep
from api.routes.recovery import workflow_ui_url
from api.schemas.common import Envelope, ErrorEnvelope
from api.schemas.recovery import (
    ActiveCoordination,
    ActiveCoordinations,
    BackendAgentConnection,
    BackendAgentConnections,
)
from store.base import utcnow
from store.emergencies import active_emergencies
from store.recoveries import error_streams, monitoring_sessions_by_stream, running_recoveries

router = APIRouter(tags=["recovery"])
ERRORS = {code: {"model": ErrorEnvelope} for code in (401, 403)}


@router.get(
    "/active-coordinations",
    response_model=Envelope[ActiveCoordinations],
    responses=ERRORS,  # type: ignore[arg-type]
)
def get_active_coordinations(
    session: SessionDep, runtime: RuntimeDep, _: Reader
) -> Envelope[ActiveCoordinations]:
    """Running recoveries and emergencies with phase and age, oldest first."""
    now = utcnow()
    items: list[ActiveCoordination] = []
    for stream in running_recoveries(session=session):
        assert stream.workflow_id is not None
        items.append(
            ActiveCoordination(
                workflow_id=stream.workflow_id,
                kind="recovery",
                service_name=stream.service,
                phase=stream.status,
                started_at=stream.first_seen,
                age_seconds=round((now - stream.first_seen).total_seconds(), 1),
                temporal_ui_url=workflow_ui_url(runtime, stream.workflow_id),
            )
        )
    for emergency in active_emergencies(session=session):
        items.append(
            ActiveCoordination(
                workflow_id=emergency.workflow_id,
                kind="emergency",
                service_name=emergency.service,
                phase="active" if emergency.deadline > now else "expiring",
                started_at=emergency.started_at,
                age_seconds=round((now - emergency.started_at).total_seconds(), 1),
                temporal_ui_url=workflow_ui_url(runtime, emergency.workflow_id),
                deadline=emergency.deadline,
            )
        )
    items.sort(key=lambda item: item.started_at)
    recoveries = sum(1 for i in items if i.kind == "recovery")
    return Envelope(
        data=ActiveCoordinations(
            total=len(items),
            recoveries=recoveries,
            emergencies=len(items) - recoveries,
            coordinations=items,
        )
    )


@router.get(
    "/backend-agent-connections",
    response_model=Envelope[BackendAgentConnections],
    responses=ERRORS,  # type: ignore[arg-type]
)
def get_backend_agent_connections(
    session: SessionDep, _: Reader
) -> Envelope[BackendAgentConnections]:
    """Every reporting stream: last seen, errors, syncs and monitoring sessions."""
    recent = utcnow() - timedelta(minutes=15)
    sessions_by_stream = monitoring_sessions_by_stream(session=session)
    connections = [
        BackendAgentConnection(
            stream_id=stream.stream_id,
            service_name=stream.service,
            status=stream.status,
            first_seen=stream.first_seen,
            last_seen=stream.last_seen,
            errors=stream.error_count,
            syncs=stream.sync_count,
            workflow_id=stream.workflow_id,
            monitoring_sessions=sorted(
                set(sessions_by_stream.get(stream.stream_id, ()))
                | ({stream.monitoring_session_id} if stream.monitoring_session_id else set())
            ),
            cascading_services=stream.cascading_services,
        )
        for stream in error_streams(session=session)
    ]
    return Envelope(
        data=BackendAgentConnections(
            total=len(connections),
            active_last_15_minutes=sum(1 for c in connections if c.last_seen >= recent),
            connections=connections,
        )
    )
