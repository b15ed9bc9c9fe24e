"""Shared pieces of the emergency workflow tests: inputs, a worker on the test store, histories.

Set SWITCHYARD_RECORD_HISTORIES=1 to re-record tests/workflows/histories/emergency_*.json
from the workflow tests (then commit them): the replay test replays every recorded history.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from activities.emergency import EmergencyActivities
from switchyard.settings import Settings
from worker.setup import ensure_search_attributes
from workflows.emergency import EmergencyOverrideWorkflow
from workflows.emergency_types import EmergencyOverrideInput

HISTORIES = Path(__file__).parent / "histories"
RECORD = os.environ.get("SWITCHYARD_RECORD_HISTORIES", "") not in ("", "0")


def emergency_input(**overrides: Any) -> EmergencyOverrideInput:
    """The seed's emergency (stripe, 5000 for 30 minutes) with a fresh coordination id."""
    values: dict[str, Any] = {
        "service": "stripe",
        "operation": "payment_processing",
        "coordination_id": f"emergency_test_{uuid.uuid4().hex[:10]}",
        "emergency_reason": "Critical payment processing outage",
        "business_justification": "Revenue protection during Black Friday peak traffic",
        "max_budget_override": 5000.0,
        "duration_minutes": 30,
        "requested_by": "test-commander",
    }
    values.update(overrides)
    return EmergencyOverrideInput(**values)


def fresh_ids() -> tuple[str, str]:
    """A task queue and a workflow id no other test uses."""
    suffix = uuid.uuid4().hex[:10]
    return f"emergency-test-{suffix}", f"emergency:stripe:{suffix}"


async def register_search_attributes(client: Client) -> None:
    """Register the keyword attributes the workflows set (the time-skipping server has none)."""
    await ensure_search_attributes(client, client.namespace)


@asynccontextmanager
async def emergency_worker(
    client: Client,
    task_queue: str,
    sessions: sessionmaker[Session],
    settings: Settings,
) -> AsyncIterator[Worker]:
    """A worker running the emergency workflow with its real activities on the test store."""
    activities = EmergencyActivities(sessions, settings)
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="emergency-test") as executor:
        worker = Worker(
            client,
            task_queue=task_queue,
            workflows=[EmergencyOverrideWorkflow],
            activities=activities.all(),
            activity_executor=executor,
        )
        async with worker:
            yield worker


async def record_history(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """Write the run's history to histories/emergency_{name}.json when recording is on."""
    if not RECORD:
        return
    history = await handle.fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    (HISTORIES / f"emergency_{name}.json").write_text(history.to_json())
