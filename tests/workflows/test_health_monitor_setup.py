"""The health monitor's start-up on the real dev server: one monitor however often workers
start, a new interval handed to the running one, the earlier schedule deleted, and the
Temporal UI filter that lists recoveries without the monitor."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleSpec,
    ScheduleState,
    WorkflowExecutionStatus,
)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.monitoring import MonitoringActivities
from switchyard.settings import Settings
from worker.main import WORKFLOWS
from worker.setup import ensure_health_monitor, retire_sweep_schedule
from workflows.health_monitor import HealthMonitorWorkflow
from workflows.health_sweep import HealthSweepWorkflow
from workflows.health_sweep_types import MonitorStatus, SweepInput
from workflows.incident_types import IncidentInput
from workflows.search import OPERATOR_WORKFLOWS_QUERY

pytestmark = pytest.mark.devserver


@asynccontextmanager
async def monitor_worker(
    client: Client, sessions: sessionmaker[Session], settings: Settings
) -> AsyncIterator[None]:
    activities = MonitoringActivities(sessions, settings, client)
    with ThreadPoolExecutor(max_workers=4) as executor:
        async with Worker(
            client,
            task_queue=settings.temporal_task_queue,
            workflows=WORKFLOWS,
            activities=activities.all(),
            activity_executor=executor,
        ):
            yield


async def _until_status(
    client: Client, workflow_id: str, check: Callable[[MonitorStatus], bool]
) -> MonitorStatus:
    handle = client.get_workflow_handle(workflow_id)
    for _ in range(100):
        status = await handle.query(HealthMonitorWorkflow.status)
        if check(status):
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"the monitor's status never matched: {status}")


async def _terminate(client: Client, workflow_id: str) -> None:
    handle = client.get_workflow_handle(workflow_id)
    if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
        await handle.terminate("test over")


async def test_every_start_up_finds_the_one_monitor_and_hands_it_the_settings(
    dev_env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
) -> None:
    client = dev_env.client
    workflow_id = f"test-monitor-{uuid.uuid4().hex[:8]}"
    settings = make_settings(health_sweep_interval_seconds=3600)
    async with monitor_worker(client, sessions, settings):
        try:
            first = await ensure_health_monitor(client, settings, workflow_id)
            # The first sweep runs at once, with the real activity on the store.
            status = await _until_status(client, workflow_id, lambda s: s.state.sweeps == 1)
            assert status.state.last_sweep is not None and status.state.last_sweep.nodes > 0
            # A second worker's start-up (or a restart) joins it, with a new interval.
            slower = settings.model_copy(update={"health_sweep_interval_seconds": 7200.0})
            assert await ensure_health_monitor(client, slower, workflow_id) == first
            status = await _until_status(
                client, workflow_id, lambda s: s.config.interval_seconds == 7200
            )
            assert status.state.sweeps == 1 and status.state.runs == 1
            described = await client.get_workflow_handle(workflow_id).describe()
            assert described.run_id == first and described.status == WorkflowExecutionStatus.RUNNING

            # An ended monitor (terminated by an operator) is started again.
            await client.get_workflow_handle(workflow_id).terminate("operator")
            again = await ensure_health_monitor(client, settings, workflow_id)
            assert again != first
            await _until_status(client, workflow_id, lambda s: s.state.sweeps == 1)
        finally:
            await _terminate(client, workflow_id)


async def test_start_up_deletes_the_earlier_sweep_schedule(
    dev_env: WorkflowEnvironment, make_settings: Callable[..., Settings]
) -> None:
    client = dev_env.client
    schedule_id = f"test-sweep-{uuid.uuid4().hex[:8]}"
    settings = make_settings()
    # The schedule an earlier version registered (paused here: it must not run in the test).
    await client.create_schedule(
        schedule_id,
        Schedule(
            action=ScheduleActionStartWorkflow(
                HealthSweepWorkflow.run,
                SweepInput(),
                id=schedule_id,
                task_queue=settings.temporal_task_queue,
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=10))]),
            state=ScheduleState(paused=True),
        ),
    )
    assert await retire_sweep_schedule(client, schedule_id) is True
    with pytest.raises(RPCError) as gone:
        await client.get_schedule_handle(schedule_id).describe()
    assert gone.value.status == RPCStatusCode.NOT_FOUND
    assert await retire_sweep_schedule(client, schedule_id) is False  # idempotent


async def test_the_operator_filter_lists_incidents_and_leaves_the_monitor_out(
    dev_env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
) -> None:
    client = dev_env.client
    prefix = f"test-filter-{uuid.uuid4().hex[:8]}"
    settings = make_settings(health_sweep_interval_seconds=3600)
    ours = f"WorkflowId STARTS_WITH '{prefix}'"
    async with monitor_worker(client, sessions, settings):
        try:
            await ensure_health_monitor(client, settings, f"{prefix}-monitor")
            # An incident nobody works on: only its listing matters here.
            await client.start_workflow(
                "IncidentWorkflow",
                IncidentInput(incident_id="incident_filter"),
                id=f"{prefix}-incident",
                task_queue=f"{prefix}-nobody",
            )
            listed: list[str] = []
            for _ in range(100):  # visibility follows the starts within a moment
                listed = sorted([w.workflow_type or "" async for w in client.list_workflows(ours)])
                if len(listed) == 2:
                    break
                await asyncio.sleep(0.1)
            assert listed == ["HealthMonitorWorkflow", "IncidentWorkflow"]
            query = f"{OPERATOR_WORKFLOWS_QUERY} AND {ours}"
            filtered = [w.id async for w in client.list_workflows(query)]
            assert filtered == [f"{prefix}-incident"]
        finally:
            await _terminate(client, f"{prefix}-monitor")
            await _terminate(client, f"{prefix}-incident")
