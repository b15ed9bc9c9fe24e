"""Starting or joining a stream's ErrorRecoveryWorkflow: shared by the API and the monitor."""

from __future__ import annotations

from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from switchyard.settings import Settings
from workflows.recovery import ErrorRecoveryWorkflow
from workflows.recovery_types import (
    CancelRequest,
    ErrorReport,
    RecoveryConfig,
    RecoveryInput,
    RecoverySource,
    RecoveryStatus,
    ReportResult,
    ResolveRequest,
)


def recovery_workflow_id(service: str, stream_id: str) -> str:
    """One workflow per error stream."""
    return f"recovery:{service}:{stream_id}"


def recovery_config(settings: Settings) -> RecoveryConfig:
    """The recovery timers configured for this deployment."""
    return RecoveryConfig(
        check_interval_seconds=settings.recovery_check_interval_seconds,
        healthy_checks_to_restore=settings.recovery_healthy_checks,
        max_monitoring_minutes=settings.recovery_max_monitoring_minutes,
        stage_hold_seconds=settings.recovery_stage_hold_seconds,
        monitoring_seconds=settings.recovery_monitoring_seconds,
    )


async def start_or_join_recovery(
    client: Client,
    settings: Settings,
    *,
    service: str,
    stream_id: str,
    report: ErrorReport,
    summary: str,
    source: RecoverySource = RecoverySource.backend_agent,
) -> ReportResult:
    """Update-with-start (USE_EXISTING): the stream's running recovery takes the error, or a
    new one starts with it; returns once the route is applied. Temporal errors propagate."""
    start = WithStartWorkflowOperation(
        ErrorRecoveryWorkflow.run,
        RecoveryInput(
            service=service, stream_id=stream_id, source=source, config=recovery_config(settings)
        ),
        id=recovery_workflow_id(service, stream_id),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=summary,
    )
    return await client.execute_update_with_start_workflow(
        ErrorRecoveryWorkflow.report_error, report, start_workflow_operation=start
    )


async def recovery_status(client: Client, workflow_id: str) -> RecoveryStatus:
    """The recovery's status query."""
    return await client.get_workflow_handle(workflow_id).query(ErrorRecoveryWorkflow.status)


async def resolve_recovery(
    client: Client, workflow_id: str, request: ResolveRequest
) -> RecoveryStatus:
    """Operator: end the recovery as resolved; its final status."""
    handle = client.get_workflow_handle(workflow_id)
    return await handle.execute_update(ErrorRecoveryWorkflow.resolve, request)


async def cancel_recovery(
    client: Client, workflow_id: str, request: CancelRequest
) -> RecoveryStatus:
    """Operator: stop the recovery and remove its override; its final status."""
    handle = client.get_workflow_handle(workflow_id)
    return await handle.execute_update(ErrorRecoveryWorkflow.cancel, request)
