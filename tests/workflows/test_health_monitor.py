"""HealthMonitorWorkflow on the time-skipping server: it sweeps on its timer with the real
sweep activity on the test store, continues as new after `ticks_per_run` sweeps carrying its
counters, survives a failing sweep, and takes `configure`, `pause` and `resume`.

Record the replay histories with
`SWITCHYARD_RECORD_HISTORIES=1 .venv/bin/pytest tests/workflows/test_health_monitor.py`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from recovery_harness import save_history
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from test_health_sweep import PRIMARY, FakeRecoveryStarter, _fail_primary

from activities.monitoring import MonitoringActivities
from store.models import Event
from switchyard.settings import Settings
from workflows.health_monitor import HealthMonitorWorkflow
from workflows.health_sweep_types import (
    SWEEP_HEALTH,
    MonitorConfig,
    MonitorInput,
    MonitorStatus,
    PauseRequest,
    SweepHealthInput,
    SweepHealthResult,
)

RECORD = os.environ.get("SWITCHYARD_RECORD_HISTORIES") == "1"


class CountingSweep:
    """The real sweep activity, counted; fails the sweeps whose number is in `failing`."""

    def __init__(self, real: MonitoringActivities, failing: frozenset[int] = frozenset()) -> None:
        self.real = real
        self.failing = failing
        self.sweeps = 0  # sweeps asked for (a failing one counts once, whatever its retries)
        self.attempts = 0

    @activity.defn(name=SWEEP_HEALTH)
    def sweep_health(self, data: SweepHealthInput) -> SweepHealthResult:
        self.attempts += 1
        if activity.info().attempt == 1:
            self.sweeps += 1
        if self.sweeps in self.failing:
            raise ApplicationError("the store is away", non_retryable=True)
        return self.real.sweep_health(data)


@asynccontextmanager
async def monitor_worker(
    client: Client, sweep: CountingSweep, starter: FakeRecoveryStarter
) -> AsyncIterator[str]:
    """A worker with the monitor, the counted sweep and the fake starter; yields its queue."""
    queue = f"monitor-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(max_workers=4) as executor:
        async with Worker(
            client,
            task_queue=queue,
            workflows=[HealthMonitorWorkflow],
            activities=[sweep.sweep_health, starter.start_recoveries],
            activity_executor=executor,
        ):
            yield queue


async def _start(
    client: Client, queue: str, ticks_per_run: int, interval: float = 10.0
) -> WorkflowHandle[HealthMonitorWorkflow, None]:
    return await client.start_workflow(
        HealthMonitorWorkflow.run,
        MonitorInput(config=MonitorConfig(interval_seconds=interval), ticks_per_run=ticks_per_run),
        id=f"health-monitor-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
    )


async def _status(client: Client, workflow_id: str) -> MonitorStatus:
    # Without a run id the query reaches the run that is current.
    return await client.get_workflow_handle(workflow_id).query(HealthMonitorWorkflow.status)


async def _runs(
    client: Client, handle: WorkflowHandle[HealthMonitorWorkflow, None]
) -> list[WorkflowHandle[Any, Any]]:
    """Every run of the monitor's chain, oldest first (following continue-as-new)."""
    runs: list[WorkflowHandle[Any, Any]] = []
    run_id = handle.first_execution_run_id or handle.run_id
    while run_id:
        run = client.get_workflow_handle(handle.id, run_id=run_id)
        runs.append(run)
        last = (await run.fetch_history()).events[-1]
        run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    return runs


async def _end(
    env: WorkflowEnvironment, handle: WorkflowHandle[HealthMonitorWorkflow, None]
) -> None:
    # A workflow left running would keep the shared time-skipping server from skipping time.
    latest = env.client.get_workflow_handle(handle.id)
    if (await latest.describe()).status == WorkflowExecutionStatus.RUNNING:
        await latest.terminate("test over")


async def test_the_monitor_sweeps_on_its_timer_and_continues_as_new(
    time_env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    sweep = CountingSweep(MonitoringActivities(sessions, settings))
    async with monitor_worker(time_env.client, sweep, FakeRecoveryStarter()) as queue:
        handle = await _start(time_env.client, queue, ticks_per_run=3)
        try:
            await time_env.sleep(25)  # sweeps at 0, 10 and 20 s: the first run is full
            first = await _status(time_env.client, handle.id)
            await time_env.sleep(40)  # the second run waits an interval: 30, 40, 50, 60 s
            later = await _status(time_env.client, handle.id)
            runs = await _runs(time_env.client, handle)
            if RECORD:
                await save_history(runs[0], "health_monitor_continued")
        finally:
            await _end(time_env, handle)

    assert first.state.sweeps >= 3 and first.state.failed_sweeps == 0
    assert first.state.last_sweep is not None and first.state.last_sweep.nodes > 0
    # Every run sweeps 3 times, then continues as new with the counters.
    assert later.state.runs >= 2 and later.state.sweeps > first.state.sweeps
    assert later.state.sweeps == 3 * (later.state.runs - 1) + later.ticks_this_run
    assert sweep.sweeps == later.state.sweeps  # one sweep activity per tick, no more
    assert len(runs) == later.state.runs
    first_run = await runs[0].describe()
    assert first_run.status == WorkflowExecutionStatus.CONTINUED_AS_NEW
    # One monitor chain, however many sweeps: the list holds a run per `ticks_per_run`.
    assert len(runs) < sweep.sweeps


async def test_a_failing_sweep_is_counted_and_the_next_tick_sweeps_again(
    time_env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    _fail_primary(sessions, settings, seconds_ago=40)  # the breaker half-opens at a sweep
    sweep = CountingSweep(MonitoringActivities(sessions, settings), failing=frozenset({1}))
    starter = FakeRecoveryStarter()
    async with monitor_worker(time_env.client, sweep, starter) as queue:
        handle = await _start(time_env.client, queue, ticks_per_run=100)
        try:
            await time_env.sleep(15)
            status = await _status(time_env.client, handle.id)
            await _end(time_env, handle)
            if RECORD:
                await save_history(handle, "health_monitor_failed_sweep")
        finally:
            await _end(time_env, handle)

    assert status.state.failed_sweeps == 1 and status.state.sweeps >= 1
    assert status.state.runs == 1 and status.state.transitions == 1
    assert status.state.last_error == "" and status.state.last_sweep is not None
    assert sweep.attempts == sweep.sweeps  # non-retryable: one attempt each
    # The second sweep found the primary degraded and asked for its recovery, with a key
    # of its own (a recovery dedupes reports by it).
    assert [n.node_id for n in starter.calls[0].nodes] == [PRIMARY]
    assert starter.calls[0].request_key.startswith(f"{handle.id}/")
    keys = [c.request_key for c in starter.calls]
    assert len(set(keys)) == len(keys)
    assert status.state.recoveries_started == len(starter.calls)
    with sessions() as session:
        kinds = list(session.scalars(select(Event.event_type)))
    assert kinds.count("breaker_half_opened") == 1


async def test_pause_resume_and_a_new_interval(
    time_env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    sweep = CountingSweep(MonitoringActivities(sessions, settings))
    async with monitor_worker(time_env.client, sweep, FakeRecoveryStarter()) as queue:
        handle = await _start(time_env.client, queue, ticks_per_run=2)
        try:
            await time_env.sleep(5)
            await handle.signal(HealthMonitorWorkflow.pause, PauseRequest(reason="maintenance"))
            await time_env.sleep(1)
            paused_at = (await _status(time_env.client, handle.id)).state.sweeps
            await time_env.sleep(60)
            paused = await _status(time_env.client, handle.id)
            await handle.signal(
                HealthMonitorWorkflow.configure, MonitorConfig(interval_seconds=100)
            )
            await handle.signal(HealthMonitorWorkflow.resume)
            await time_env.sleep(1)
            resumed = await _status(time_env.client, handle.id)
            await time_env.sleep(150)  # one more sweep at the new interval, not fifteen
            later = await _status(time_env.client, handle.id)
            if RECORD:
                first_run = (await _runs(time_env.client, handle))[0]
                await save_history(first_run, "health_monitor_paused")
        finally:
            await _end(time_env, handle)

    assert paused.state.paused and paused.state.pause_reason == "maintenance"
    assert paused.state.sweeps == paused_at == 1  # no sweep while paused
    assert not resumed.state.paused and resumed.state.sweeps == 2  # sweeps on resume
    # The pause crossed no run yet; the sweep on resume filled the run: continued as new.
    assert later.config.interval_seconds == 100
    assert later.state.runs == 2 and later.state.sweeps == 3
