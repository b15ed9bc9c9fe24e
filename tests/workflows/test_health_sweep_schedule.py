"""The HealthSweep schedule on the real dev server: idempotent registration and a real run."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.monitoring import MonitoringActivities
from switchyard.settings import Settings
from worker.setup import ensure_health_sweep
from workflows.health_sweep import HealthSweepWorkflow
from workflows.health_sweep_types import SweepResult

pytestmark = pytest.mark.devserver


async def _interval(client: Client, schedule_id: str) -> timedelta:
    described = await client.get_schedule_handle(schedule_id).describe()
    return described.schedule.spec.intervals[0].every


async def test_registration_creates_once_and_follows_setting_changes(
    dev_env: WorkflowEnvironment, make_settings: Callable[..., Settings]
) -> None:
    client = dev_env.client
    schedule_id = f"test-sweep-{uuid.uuid4().hex[:8]}"
    settings = make_settings()
    try:
        assert await ensure_health_sweep(client, settings, schedule_id) == "created"
        assert await ensure_health_sweep(client, settings, schedule_id) == "unchanged"
        described = await client.get_schedule_handle(schedule_id).describe()
        action = described.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert action.workflow == "HealthSweepWorkflow"
        assert action.task_queue == settings.temporal_task_queue
        assert await _interval(client, schedule_id) == timedelta(seconds=10)

        slower = settings.model_copy(update={"health_sweep_interval_seconds": 30.0})
        await client.get_schedule_handle(schedule_id).pause(note="operator pause")
        assert await ensure_health_sweep(client, slower, schedule_id) == "updated"
        assert await _interval(client, schedule_id) == timedelta(seconds=30)
        # An operator's pause survives a worker restart with new settings.
        described = await client.get_schedule_handle(schedule_id).describe()
        assert described.schedule.state.paused
    finally:
        await client.get_schedule_handle(schedule_id).delete()


async def test_a_scheduled_run_sweeps_the_store(
    dev_env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
) -> None:
    client = dev_env.client
    schedule_id = f"test-sweep-{uuid.uuid4().hex[:8]}"
    settings = make_settings(health_sweep_interval_seconds=3600)
    activities = MonitoringActivities(sessions, settings, client)
    with ThreadPoolExecutor(max_workers=4) as executor:
        async with Worker(
            client,
            task_queue=settings.temporal_task_queue,
            workflows=[HealthSweepWorkflow],
            activities=activities.all(),
            activity_executor=executor,
        ):
            try:
                await ensure_health_sweep(client, settings, schedule_id)
                handle = client.get_schedule_handle(schedule_id)
                await handle.trigger()
                run_id = None
                for _ in range(100):
                    recent = (await handle.describe()).info.recent_actions
                    if recent:
                        action = recent[-1].action
                        assert isinstance(action, ScheduleActionExecutionStartWorkflow)
                        run_id = action.workflow_id
                        break
                    await asyncio.sleep(0.1)
                assert run_id is not None and run_id.startswith("switchyard-health-sweep")
                result = await asyncio.wait_for(
                    client.get_workflow_handle(run_id, result_type=SweepResult).result(), 30
                )
            finally:
                await client.get_schedule_handle(schedule_id).delete()
    assert result.nodes > 0 and result.degraded == [] and result.recoveries == []
