"""Starting, changing and reading a service's EmergencyOverrideWorkflow from outside it."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from switchyard.settings import Settings
from workflows.emergency import EmergencyOverrideWorkflow
from workflows.emergency_types import (
    Activation,
    CancelRequest,
    EmergencyOverrideInput,
    EmergencyStatus,
    ExtendRequest,
    ExtendResult,
    workflow_id_for,
)

QUERY_TIMEOUT = timedelta(seconds=5)


def start_operation(
    params: EmergencyOverrideInput, settings: Settings, summary: str
) -> WithStartWorkflowOperation[EmergencyOverrideWorkflow, EmergencyStatus]:
    """The start half of an update-with-start: one emergency per service (FAIL on conflict)."""
    return WithStartWorkflowOperation(
        EmergencyOverrideWorkflow.run,
        params,
        id=workflow_id_for(params.service),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        static_summary=summary,
    )


async def start_emergency(
    client: Client, start: WithStartWorkflowOperation[EmergencyOverrideWorkflow, EmergencyStatus]
) -> Activation:
    """Start the emergency and wait for its activation (Temporal errors propagate; a
    running emergency of the service is WorkflowAlreadyStartedError)."""
    return await client.execute_update_with_start_workflow(
        EmergencyOverrideWorkflow.activation, start_workflow_operation=start
    )


async def wait_for_activation(client: Client, workflow_id: str) -> Activation:
    """The running emergency's activation, once it is active."""
    handle = client.get_workflow_handle(workflow_id)
    return await handle.execute_update(EmergencyOverrideWorkflow.activation)


async def extend_emergency(client: Client, service: str, request: ExtendRequest) -> ExtendResult:
    """Move the running emergency's deadline later."""
    handle = client.get_workflow_handle(workflow_id_for(service), result_type=EmergencyStatus)
    return await handle.execute_update(EmergencyOverrideWorkflow.extend, request)


async def cancel_emergency(client: Client, service: str, request: CancelRequest) -> EmergencyStatus:
    """End the running emergency now; its final status."""
    handle = client.get_workflow_handle(workflow_id_for(service), result_type=EmergencyStatus)
    return await handle.execute_update(EmergencyOverrideWorkflow.cancel, request)


async def running_status(client: Client, workflow_id: str) -> EmergencyStatus | None:
    """The running workflow's status query, or None when it is not running or does not answer."""
    handle = client.get_workflow_handle(workflow_id, result_type=EmergencyStatus)
    try:
        described = await handle.describe(rpc_timeout=QUERY_TIMEOUT)
        if described.status != WorkflowExecutionStatus.RUNNING:
            return None
        return await handle.query(EmergencyOverrideWorkflow.status, rpc_timeout=QUERY_TIMEOUT)
    except RPCError:
        return None


async def started_with(client: Client, workflow_id: str) -> EmergencyOverrideInput | None:
    """The running emergency's start input, read from its history (no worker needed)."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        async for event in handle.fetch_history_events(page_size=1, rpc_timeout=QUERY_TIMEOUT):
            started = event.workflow_execution_started_event_attributes
            values = await client.data_converter.decode(
                started.input.payloads, [EmergencyOverrideInput]
            )
            return values[0] if values else None
    except RPCError:
        return None
    return None
