"""The worker process: migrations, search attributes, then workflows and activities."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.emergency import EmergencyActivities
from activities.incident import IncidentActivities
from activities.monitoring import MonitoringActivities
from activities.recovery import RecoveryActivities
from store.db import make_engine, make_session_factory
from store.prepare import prepare_store
from switchyard.settings import Settings
from temporal_client.client import connect, sdk_runtime
from worker.setup import ensure_health_monitor, ensure_search_attributes, retire_sweep_schedule
from workflows.emergency import EmergencyOverrideWorkflow
from workflows.health_monitor import HealthMonitorWorkflow
from workflows.health_sweep import HealthSweepWorkflow
from workflows.incident import IncidentWorkflow
from workflows.recovery import ErrorRecoveryWorkflow

log = logging.getLogger("switchyard.worker")

WORKFLOWS: list[type] = [
    ErrorRecoveryWorkflow,
    EmergencyOverrideWorkflow,
    HealthMonitorWorkflow,
    HealthSweepWorkflow,  # a sweep on demand; the runs an earlier schedule left
    IncidentWorkflow,
]

# Modules the sandbox shares instead of re-importing for every new workflow instance: they
# are deterministic (routing/ is pure; pydantic models are data). Re-importing them made
# sandbox creation the worker's bottleneck when many recoveries start at once; the replay
# tests keep guarding determinism.
PASSTHROUGH_MODULES = ("routing", "pydantic", "pydantic_core", "annotated_types")


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox with the shared deterministic modules passed through."""
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
    return SandboxedWorkflowRunner(restrictions=restrictions)


def all_activities(
    sessions: sessionmaker[Session], settings: Settings, client: Client
) -> list[Callable[..., Any]]:
    """Every activity the workflows call, bound to the store (tests run the same list)."""
    return [
        *RecoveryActivities(sessions, settings).all(),
        *EmergencyActivities(sessions, settings).all(),
        *MonitoringActivities(sessions, settings, client).all(),
        *IncidentActivities(sessions, settings, client).all(),
    ]


def build_worker(client: Client, settings: Settings, executor: ThreadPoolExecutor) -> Worker:
    """A worker on the task queue with every workflow and activity wired to the store."""
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    sessions = make_session_factory(engine)
    return Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=WORKFLOWS,
        activities=all_activities(sessions, settings, client),
        activity_executor=executor,
        max_concurrent_activities=32,
        workflow_runner=workflow_runner(),
        # On SIGTERM: stop polling, let running activities finish for this long, then cancel
        # the rest so Temporal retries them on another worker.
        graceful_shutdown_timeout=timedelta(seconds=settings.shutdown_grace_seconds),
    )


async def run_worker(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM, then stop polling and let running activities finish."""
    await asyncio.to_thread(prepare_store, settings)
    runtime = sdk_runtime(settings.worker_metrics_address)
    if settings.worker_metrics_address:
        log.info("Temporal SDK metrics at http://%s/metrics", settings.worker_metrics_address)
    client = await connect(settings, runtime=runtime, service_name="switchyard-worker")
    await ensure_search_attributes(client, settings.temporal_namespace)
    await retire_sweep_schedule(client)
    await ensure_health_monitor(client, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(max_workers=32, thread_name_prefix="activity") as executor:
        worker = build_worker(client, settings, executor)
        log.info("worker polling task queue %r", settings.temporal_task_queue)
        async with worker:
            await stop.wait()
            log.info("worker shutting down")
    log.info("worker stopped")
