"""Joining, resolving and reading IncidentWorkflows from outside them."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from switchyard.settings import Settings
from workflows.incident import IncidentWorkflow
from workflows.incident_types import (
    IncidentInput,
    IncidentMember,
    IncidentStatus,
    JoinResult,
    ResolveIncident,
    incident_workflow_id,
)


def new_incident_id(now: datetime, key: str | None = None) -> str:
    """`incident_{unix seconds}_{12 hex}`: random, or derived from `key` so that a retried
    step names the same incident."""
    tail = hashlib.sha256(key.encode()).hexdigest()[:12] if key else secrets.token_hex(6)
    return f"incident_{int(now.timestamp())}_{tail}"


class IncidentEnded(Exception):
    """The incident has ended: it takes no member any more."""


async def join_incident(
    client: Client, settings: Settings, incident_id: str, member: IncidentMember
) -> JoinResult:
    """Add the member to the incident, starting the incident when it does not run yet
    (update-with-start, USE_EXISTING). An incident that has ended refuses the member with
    IncidentEnded: its validator while it is ending, the server once it has closed (its id is
    never reused: an ended incident is not started again). Other Temporal errors propagate."""
    start = WithStartWorkflowOperation(
        IncidentWorkflow.run,
        IncidentInput(incident_id=incident_id, poll_seconds=settings.incident_poll_seconds),
        id=incident_workflow_id(incident_id),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        static_summary=f"Incident {incident_id}: {member.service} {member.error_type}",
    )
    try:
        return await client.execute_update_with_start_workflow(
            IncidentWorkflow.add_member, member, start_workflow_operation=start
        )
    except (WorkflowUpdateFailedError, WorkflowAlreadyStartedError) as exc:
        raise IncidentEnded(incident_id) from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.ALREADY_EXISTS:
            raise IncidentEnded(incident_id) from exc
        raise


async def resolve_incident(
    client: Client, incident_id: str, request: ResolveIncident
) -> IncidentStatus:
    """An operator ends the incident; its final status."""
    handle = client.get_workflow_handle(incident_workflow_id(incident_id))
    return await handle.execute_update(IncidentWorkflow.resolve, request)


async def incident_status(client: Client, incident_id: str) -> IncidentStatus:
    """The incident's status query (its timeline included)."""
    handle = client.get_workflow_handle(incident_workflow_id(incident_id))
    return await handle.query(IncidentWorkflow.status)
