"""GET health: real checks of the database, Temporal and the worker, in the contract's shape."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from api.deps import RuntimeDep
from api.runtime import ApiRuntime
from api.schemas.common import Envelope, ResponseModel
from routing.incidents import ErrorSignal
from store.base import utcnow
from store.incidents import correlate_error, open_incidents
from store.status import live_counts

router = APIRouter(tags=["health"])
T = TypeVar("T")

CheckStatus = Literal["operational", "degraded", "down"]
# A polling worker re-polls at least every ~70 s (long polls last up to a minute).
POLLER_FRESH_SECONDS = 75
CHECK_TIMEOUT_SECONDS = 3.0


class HealthServices(ResponseModel):
    """Switchyard's own components."""

    enhanced_coordinator: CheckStatus
    routing_service: CheckStatus
    optimization_service: CheckStatus
    fallback_manager: CheckStatus


class BackendAgentHealth(ResponseModel):
    """Components the backend agents depend on."""

    cross_stream_coordinator: CheckStatus
    recovery_service: CheckStatus
    monitoring_service: CheckStatus


class HealthCheck(ResponseModel):
    """One underlying check."""

    status: CheckStatus
    detail: str
    latency_ms: float


class HealthDocument(ResponseModel):
    """The health document."""

    status: Literal["healthy", "degraded", "unhealthy"]
    timestamp: datetime
    services: HealthServices
    backend_agent_integration: BackendAgentHealth
    active_coordinations: int
    backend_connections: int
    checks: dict[str, HealthCheck]


async def _timed(coro: Awaitable[T]) -> tuple[float, T]:
    started = asyncio.get_running_loop().time()
    result = await asyncio.wait_for(coro, CHECK_TIMEOUT_SECONDS)
    return (asyncio.get_running_loop().time() - started) * 1000, result


def _db_counts(runtime: ApiRuntime) -> tuple[int, int]:
    with runtime.sessions() as session:
        counts = live_counts(session=session, since=utcnow() - timedelta(minutes=15))
    return counts.active_coordinations, counts.backend_connections


async def check_database(runtime: ApiRuntime) -> tuple[HealthCheck, tuple[int, int]]:
    """SELECT 1 plus the counts the document reports."""
    try:
        ms, counts = await _timed(asyncio.to_thread(_db_counts, runtime))
        return HealthCheck(status="operational", detail="reachable", latency_ms=round(ms, 2)), (
            counts
        )
    except Exception as exc:
        return HealthCheck(status="down", detail=exc.__class__.__name__, latency_ms=0), (0, 0)


# A signal no incident can match (no service, node or stream of that name): the probe runs
# every correlation rule over the store's open incidents and consumer graph, and claims nothing.
PROBE_SERVICE = "__health_probe__"


def _correlation_probe(runtime: ApiRuntime) -> int:
    with runtime.sessions() as session:
        now = utcnow()
        probe = ErrorSignal(PROBE_SERVICE, frozenset(), frozenset(), now)
        correlate_error(session, probe)
        return len(open_incidents(session))


async def check_correlation(runtime: ApiRuntime) -> HealthCheck:
    """The cross-stream correlation (api/incidents.py): a probe error correlated against the
    open incidents and the consumer graph, read-only."""
    try:
        ms, incidents = await _timed(asyncio.to_thread(_correlation_probe, runtime))
    except Exception as exc:
        return HealthCheck(status="down", detail=exc.__class__.__name__, latency_ms=0)
    return HealthCheck(
        status="operational",
        detail=f"correlating against {incidents} open incident(s)",
        latency_ms=round(ms, 2),
    )


async def check_temporal(runtime: ApiRuntime) -> tuple[HealthCheck, HealthCheck]:
    """Temporal reachable, and a worker polling the task queue recently."""
    try:
        ms, client = await _timed(runtime.temporal())
        ms2, _ = await _timed(client.service_client.check_health())
        temporal = HealthCheck(
            status="operational", detail="reachable", latency_ms=round(ms + ms2, 2)
        )
    except Exception as exc:
        down = HealthCheck(
            status="down", detail=f"unreachable: {exc.__class__.__name__}", latency_ms=0
        )
        return down, HealthCheck(status="down", detail="Temporal unreachable", latency_ms=0)
    try:
        request = DescribeTaskQueueRequest(
            namespace=runtime.settings.temporal_namespace,
            task_queue=TaskQueue(name=runtime.settings.temporal_task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
        ms, response = await _timed(client.workflow_service.describe_task_queue(request))
        now = datetime.now(UTC)
        fresh = [
            p
            for p in response.pollers
            if (now - p.last_access_time.ToDatetime(tzinfo=UTC)).total_seconds()
            < POLLER_FRESH_SECONDS
        ]
        if fresh:
            worker = HealthCheck(
                status="operational",
                detail=f"{len(fresh)} poller(s) on {runtime.settings.temporal_task_queue!r}",
                latency_ms=round(ms, 2),
            )
        else:
            worker = HealthCheck(
                status="degraded",
                detail=f"no worker polling {runtime.settings.temporal_task_queue!r}",
                latency_ms=round(ms, 2),
            )
    except Exception as exc:
        worker = HealthCheck(status="down", detail=exc.__class__.__name__, latency_ms=0)
    return temporal, worker


def _worst(*statuses: CheckStatus) -> CheckStatus:
    for status in ("down", "degraded"):
        if status in statuses:
            return status
    return "operational"


@router.get(
    "/health",
    response_model=Envelope[HealthDocument],
    responses={503: {"model": Envelope[HealthDocument]}},
)
async def health(runtime: RuntimeDep) -> JSONResponse:
    """Healthy only when the database, Temporal and a worker are all operational."""
    (database, counts), (temporal, worker), correlation = await asyncio.gather(
        check_database(runtime), check_temporal(runtime), check_correlation(runtime)
    )
    snapshot_ok: CheckStatus = "operational" if runtime.snapshot.current.nodes else "degraded"
    if runtime.snapshot.last_error:
        snapshot_ok = "degraded"
    overall: Literal["healthy", "degraded", "unhealthy"]
    if database.status == "down":
        overall = "unhealthy"
    elif (
        _worst(database.status, temporal.status, worker.status, snapshot_ok, correlation.status)
        == "operational"
    ):
        overall = "healthy"
    else:
        overall = "degraded"
    document = HealthDocument(
        status=overall,
        timestamp=utcnow(),
        services=HealthServices(
            enhanced_coordinator=database.status,
            routing_service=_worst(snapshot_ok, database.status),
            optimization_service=snapshot_ok,
            fallback_manager=_worst(temporal.status, worker.status),
        ),
        backend_agent_integration=BackendAgentHealth(
            cross_stream_coordinator=correlation.status,
            recovery_service=_worst(temporal.status, worker.status),
            monitoring_service=_worst(database.status, temporal.status),
        ),
        active_coordinations=counts[0],
        backend_connections=counts[1],
        checks={
            "database": database,
            "temporal": temporal,
            "worker": worker,
            "correlation": correlation,
        },
    )
    body = Envelope[HealthDocument](data=document).model_dump(mode="json", by_alias=True)
    return JSONResponse(body, status_code=503 if overall == "unhealthy" else 200)
