"""Helpers for recovery workflow tests: a worker on the test store and a started recovery."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from activities.incident import IncidentActivities
from activities.recovery import RecoveryActivities
from store.db import transaction
from store.models import Event, NodeHealthRow, RoutingOverrideRow
from switchyard.settings import Settings
from workflows.incident import IncidentWorkflow
from workflows.recovery import ErrorRecoveryWorkflow
from workflows.recovery_types import ErrorReport, RecoveryConfig, RecoveryInput, RecoveryStatus

HISTORIES = Path(__file__).parent / "histories"

SEED_REPORT = ErrorReport(
    error_type="performance_degradation",
    severity="high",
    operation="gps_tracking",
    error_message="GPS tracking response time exceeded 2000ms threshold",
    failed_providers=["samsara_primary"],
    retry_attempts=2,
    cascading_services=["route_optimization", "driver_notifications"],
    revenue_at_risk=2000,
    customer_impact="moderate",
    time_to_resolution_minutes=15,
)


@asynccontextmanager
async def recovery_worker(
    client: Client, sessions: sessionmaker[Session], task_queue: str
) -> AsyncIterator[Worker]:
    """A worker running ErrorRecoveryWorkflow (and the incidents its errors join) with real
    activities on the test store."""
    settings = Settings(temporal_task_queue=task_queue)
    activities = [
        *RecoveryActivities(sessions, settings).all(),
        *IncidentActivities(sessions, settings, client).all(),
    ]
    with ThreadPoolExecutor(max_workers=8) as executor:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[ErrorRecoveryWorkflow, IncidentWorkflow],
            activities=activities,
            activity_executor=executor,
        ) as worker:
            yield worker


async def start_recovery(
    client: Client, task_queue: str, service: str = "samsara", **config: object
) -> WorkflowHandle[ErrorRecoveryWorkflow, RecoveryStatus]:
    """Start a recovery with a fresh id and a fresh stream."""
    stream = f"stream_{uuid.uuid4().hex[:8]}"
    return await client.start_workflow(
        ErrorRecoveryWorkflow.run,
        RecoveryInput(service=service, stream_id=stream, config=RecoveryConfig(**config)),
        id=f"recovery:{service}:{stream}",
        task_queue=task_queue,
    )


def set_breaker(sessions: sessionmaker[Session], node_id: str, state: str) -> None:
    """Make a node look broken (OPEN) or healthy (CLOSED) to the health checks."""
    with transaction(sessions) as session:
        session.execute(
            update(NodeHealthRow)
            .where(NodeHealthRow.node_id == node_id)
            .values(breaker_state=state, breaker_forced=None)
        )


def override_of(sessions: sessionmaker[Session], workflow_id: str) -> RoutingOverrideRow | None:
    """The workflow's override row, if any."""
    with sessions() as session:
        return session.get(RoutingOverrideRow, workflow_id)


def event_types(sessions: sessionmaker[Session], workflow_id: str) -> list[str]:
    """Outbox event types written for a workflow, in order."""
    with sessions() as session:
        return list(
            session.scalars(
                select(Event.event_type).where(Event.workflow_id == workflow_id).order_by(Event.id)
            )
        )


async def save_history(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """Record a finished run's history for the replay test."""
    history = await handle.fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    (HISTORIES / f"{name}.json").write_text(history.to_json())
