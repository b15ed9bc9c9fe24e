"""emergency-override: start, extend, cancel and read a service's EmergencyOverrideWorkflow."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated, TypeVar

from fastapi import APIRouter, Header, Response
from temporalio.client import (
    Client,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError

from api.coordinator import new_coordination_id, require_service
from api.deps import Commander, Reader, RuntimeDep, get_temporal
from api.errors import ApiError, temporal_error
from api.paths import PREFIX
from api.runtime import ApiRuntime
from api.schemas.common import Envelope, ErrorEnvelope
from api.schemas.emergency import (
    CancelEmergencyRequest,
    EmergencyExtension,
    EmergencyNode,
    EmergencyOverrideRequest,
    EmergencyOverrideResult,
    EmergencyView,
    ExtendEmergencyRequest,
)
from store.base import iso_z, utcnow
from store.emergencies import active_emergency, last_emergency
from store.models import Emergency
from temporal_client import emergencies
from workflows.emergency_types import (
    Activation,
    CancelRequest,
    EmergencyOverrideInput,
    EmergencyStatus,
    ExtendRequest,
    workflow_id_for,
)

router = APIRouter(tags=["emergency"])
BASE = "/emergency-override"
ERRORS = {code: {"model": ErrorEnvelope} for code in (401, 403, 404, 409, 422, 503, 504)}
# How long a request waits for a worker to act on an update before answering 504.
WORKER_WAIT_SECONDS = 30.0
# Update failures raised by the workflow (ApplicationError type) -> HTTP status and code.
UPDATE_FAILURES = {
    "EmergencyEnded": (409, "emergency_ended"),
    "EmergencyNotActive": (409, "emergency_not_active"),
    "EmergencyAlreadyActive": (409, "emergency_already_active"),
    "DurationLimit": (422, "validation_error"),
    "InvalidRequest": (422, "validation_error"),
    "UnknownService": (422, "validation_error"),
    "NoEligibleNode": (503, "no_eligible_node"),
}

T = TypeVar("T")


def _url(service: str, action: str = "") -> str:
    return f"{PREFIX}{BASE}/{service}" + (f"/{action}" if action else "")


async def _within_worker_wait(call: Awaitable[T], workflow_id: str) -> T:
    """Await a call that needs a worker; 504 (the workflow keeps going) when none answers."""
    try:
        return await asyncio.wait_for(call, WORKER_WAIT_SECONDS)
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError) as exc:
        raise ApiError(
            504,
            "worker_unavailable",
            f"no worker acted on workflow {workflow_id!r} within {WORKER_WAIT_SECONDS:g} s; "
            "it proceeds when a worker runs: read its status before retrying",
            {"workflowId": workflow_id},
        ) from exc


def _update_error(exc: WorkflowUpdateFailedError, service: str) -> ApiError:
    cause = exc.cause
    kind = cause.type if isinstance(cause, ApplicationError) else None
    status, code = UPDATE_FAILURES.get(kind or "", (409, "emergency_conflict"))
    message = cause.message if isinstance(cause, ApplicationError) else str(exc)
    details: object = list(cause.details) if isinstance(cause, ApplicationError) else None
    if code == "validation_error":
        field = {"DurationLimit": "minutes", "UnknownService": "serviceName"}.get(kind or "", "")
        details = [{"field": field or "body", "message": message}]
        message = f"invalid request: {field or 'body'}"
    elif code == "no_eligible_node":
        first = details[0] if isinstance(details, list) and details else {}
        details = {"serviceName": service, **(first if isinstance(first, dict) else {})}
    return ApiError(status, code, message, details)


def _temporal_error(exc: RPCError, service: str) -> ApiError:
    return temporal_error(
        exc, f"no emergency is running for {service!r}; GET {_url(service)} shows the last one"
    )


def _active_row(runtime: ApiRuntime, service: str) -> Emergency | None:
    with runtime.sessions() as session:
        return active_emergency(session=session, service=service)


def _last_row(runtime: ApiRuntime, service: str) -> Emergency | None:
    with runtime.sessions() as session:
        return last_emergency(session=session, service=service)


async def _already_running(runtime: ApiRuntime, client: Client, service: str) -> ApiError:
    """409 naming the running emergency and where to extend it."""
    workflow_id = workflow_id_for(service)
    coordination_id: str | None = None
    deadline: datetime | None = None
    row = await asyncio.to_thread(_active_row, runtime, service)
    if row is not None and row.workflow_id == workflow_id:
        coordination_id, deadline = row.coordination_id, row.deadline
    else:  # still activating: only the workflow knows
        status = await emergencies.running_status(client, workflow_id)
        if status is not None:
            coordination_id, deadline = status.coordination_id, status.deadline
    until = f" until {iso_z(deadline)}" if deadline is not None else ""
    return ApiError(
        409,
        "emergency_already_active",
        f"an emergency override is already running for {service!r}{until}; "
        f"extend it with POST {_url(service, 'extend')}",
        {
            "workflowId": workflow_id,
            "coordinationId": coordination_id,
            "deadline": iso_z(deadline) if deadline is not None else None,
            "extendUrl": _url(service, "extend"),
            "statusUrl": _url(service),
        },
    )


async def _replayed(
    client: Client, params: EmergencyOverrideInput, workflow_id: str
) -> tuple[EmergencyOverrideInput, Activation] | None:
    """The running emergency's answer when it was started by this keyed request, else None.

    A retry after a timeout (a 504, a lost connection) finds the emergency its first attempt
    started: it waits for that activation instead of being told an emergency is running.
    """
    running = await emergencies.started_with(client, workflow_id)
    if running is None or running.idempotency_key != params.idempotency_key:
        return None
    if not running.same_request(params):
        raise ApiError(
            409,
            "idempotency_key_reused",
            "this Idempotency-Key started an emergency with a different request; "
            "use a new key per request",
            {"workflowId": workflow_id, "coordinationId": running.coordination_id},
        )
    activation = await _within_worker_wait(
        emergencies.wait_for_activation(client, workflow_id), workflow_id
    )
    return running, activation


async def _replay_or_conflict(
    runtime: ApiRuntime, client: Client, params: EmergencyOverrideInput, workflow_id: str
) -> tuple[EmergencyOverrideInput, Activation]:
    """A keyed retry's start input and activation; otherwise the 409 naming the running one."""
    try:
        replayed = await _replayed(client, params, workflow_id) if params.idempotency_key else None
    except WorkflowUpdateFailedError as exc:
        raise _update_error(exc, params.service) from exc
    except RPCError as exc:
        raise _temporal_error(exc, params.service) from exc
    if replayed is None:
        raise await _already_running(runtime, client, params.service)
    return replayed


def _static_summary(params: EmergencyOverrideInput) -> str:
    reason = params.emergency_reason.splitlines()[0][:80]
    return (
        f"Emergency override of {params.service}: cap {params.max_budget_override:g} "
        f"for {params.duration_minutes} min ({reason})"
    )


@router.post(
    BASE,
    response_model=Envelope[EmergencyOverrideResult],
    responses=ERRORS,  # type: ignore[arg-type]
)
async def post_emergency_override(
    body: EmergencyOverrideRequest,
    runtime: RuntimeDep,
    principal: Commander,
    response: Response,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> Envelope[EmergencyOverrideResult]:
    """Raise a service's budget and open its emergency-only nodes until a durable deadline.

    With an Idempotency-Key, a retry of the same request while the emergency it started runs
    answers that emergency (header `Idempotent-Replayed: true`) instead of a 409.
    """
    require_service(runtime.snapshot.current, body.service_name)
    # Connected only after validation, so a bad request is a 422 even while Temporal is down.
    client = await get_temporal(runtime)
    workflow_id = workflow_id_for(body.service_name)
    params = EmergencyOverrideInput(
        service=body.service_name,
        operation=body.operation,
        coordination_id=new_coordination_id("emergency", utcnow()),
        emergency_reason=body.emergency_reason,
        business_justification=body.business_justification,
        max_budget_override=body.max_budget_override,
        duration_minutes=body.duration_minutes,
        requested_by=principal.subject,
        # Keyed by caller: two clients may pick the same key without colliding.
        idempotency_key=f"{principal.subject}/{idempotency_key}" if idempotency_key else "",
    )
    start = emergencies.start_operation(params, runtime.settings, _static_summary(params))
    try:
        activation = await _within_worker_wait(
            emergencies.start_emergency(client, start), workflow_id
        )
    except ApiError:
        # Given up waiting (504): the cancelled start's outcome is not news, but asyncio logs a
        # failure nobody retrieved as an error.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(start.workflow_handle(), 0.1)
        raise
    except WorkflowAlreadyStartedError:
        # Retrieve the start operation's failure too, or asyncio logs it as never retrieved.
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await start.workflow_handle()
        params, activation = await _replay_or_conflict(runtime, client, params, workflow_id)
        response.headers["Idempotent-Replayed"] = "true"
    except WorkflowUpdateFailedError as exc:
        raise _update_error(exc, body.service_name) from exc
    except RPCError as exc:
        raise _temporal_error(exc, body.service_name) from exc
    # The worker committed the emergency; route with it here at once, not after the next poll.
    await asyncio.to_thread(runtime.snapshot.refresh)
    return Envelope(
        message="Emergency coordination mode activated successfully",
        data=EmergencyOverrideResult.of(params, activation, workflow_id),
    )


@router.post(
    BASE + "/{service}/extend",
    response_model=Envelope[EmergencyExtension],
    responses=ERRORS,  # type: ignore[arg-type]
)
async def extend_emergency(
    service: str, body: ExtendEmergencyRequest, runtime: RuntimeDep, principal: Commander
) -> Envelope[EmergencyExtension]:
    """Move the running emergency's deadline later (total at most 24 h)."""
    client = await get_temporal(runtime)
    workflow_id = workflow_id_for(service)
    request = ExtendRequest(
        minutes=body.minutes, reason=body.reason, requested_by=principal.subject
    )
    try:
        result = await _within_worker_wait(
            emergencies.extend_emergency(client, service, request), workflow_id
        )
    except WorkflowUpdateFailedError as exc:
        raise _update_error(exc, service) from exc
    except RPCError as exc:
        raise _temporal_error(exc, service) from exc
    await asyncio.to_thread(runtime.snapshot.refresh)
    return Envelope(
        message="Emergency override extended",
        data=EmergencyExtension(
            workflow_id=workflow_id,
            coordination_id=result.coordination_id,
            previous_deadline=result.previous_deadline,
            deadline=result.deadline,
            duration_minutes=result.total_minutes,
            extensions=result.extensions,
        ),
    )


@router.post(
    BASE + "/{service}/cancel",
    response_model=Envelope[EmergencyView],
    responses=ERRORS,  # type: ignore[arg-type]
)
async def cancel_emergency(
    service: str, body: CancelEmergencyRequest, runtime: RuntimeDep, principal: Commander
) -> Envelope[EmergencyView]:
    """End the running emergency now; answers once routing is back to normal."""
    client = await get_temporal(runtime)
    workflow_id = workflow_id_for(service)
    request = CancelRequest(reason=body.reason, requested_by=principal.subject)
    try:
        status = await _within_worker_wait(
            emergencies.cancel_emergency(client, service, request), workflow_id
        )
    except WorkflowUpdateFailedError as exc:
        raise _update_error(exc, service) from exc
    except RPCError as exc:
        raise _temporal_error(exc, service) from exc
    await asyncio.to_thread(runtime.snapshot.refresh)
    return Envelope(
        message="Emergency override cancelled", data=EmergencyView.of_status(status, running=False)
    )


@router.get(
    BASE + "/{service}",
    response_model=Envelope[EmergencyView],
    responses=ERRORS,  # type: ignore[arg-type]
)
async def get_emergency(service: str, runtime: RuntimeDep, _: Reader) -> Envelope[EmergencyView]:
    """The running emergency (its status query), else the service's last one from the store."""
    status: EmergencyStatus | None = None
    try:
        client = await get_temporal(runtime)
    except ApiError:
        client = None  # Temporal down: the store still knows the last emergency
    if client is not None:
        status = await emergencies.running_status(client, workflow_id_for(service))
    row = await asyncio.to_thread(_last_row, runtime, service)
    if status is not None:
        view = EmergencyView.of_status(status, running=True)
        if row is not None and row.coordination_id == status.coordination_id:
            # The coordinator charges the store; the workflow only sees spend at its next poll.
            view = view.model_copy(update={"spent_under_override": row.spent})
        return Envelope(data=view)
    if row is None:
        raise ApiError(404, "not_found", f"no emergency override recorded for {service!r}")
    return Envelope(data=_store_view(runtime, row))


def _store_view(runtime: ApiRuntime, row: Emergency) -> EmergencyView:
    now = utcnow()
    active = row.status == "active" and row.deadline > now
    catalog = runtime.snapshot.current.node(row.selected_node_id or "")
    node = EmergencyNode.model_validate(catalog, from_attributes=True) if catalog else None
    return EmergencyView(
        workflow_id=row.workflow_id,
        service_name=row.service,
        coordination_id=row.coordination_id,
        # Past its deadline but not yet deactivated: it no longer routes, the worker ends it.
        phase="ending" if row.status == "active" and not active else row.status,
        running=False,
        source="store",
        started_at=row.started_at,
        deadline=row.deadline,
        remaining_seconds=round((row.deadline - now).total_seconds(), 3) if active else 0.0,
        duration_minutes=round((row.deadline - row.started_at).total_seconds() / 60),
        max_budget_override=row.max_budget_override,
        spent_under_override=row.spent,
        selected_node=node,
        end_reason=row.end_reason,
        ended_at=row.ended_at,
    )
