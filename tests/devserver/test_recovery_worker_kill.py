"""A worker SIGKILLed mid-recovery: a new worker finishes it, each effect applied once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment

from store.models import AppliedEffect, ErrorEvent, Event, RoutingOverrideRow
from switchyard.settings import Settings
from workflows.recovery import ErrorRecoveryWorkflow
from workflows.recovery_types import ErrorReport, RecoveryConfig, RecoveryInput, RecoveryPhase

pytestmark = pytest.mark.devserver


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """`switchyard worker` as its own process, configured through SWITCHYARD_* variables."""
    env = {
        **os.environ,
        "SWITCHYARD_ENV": "test",
        "SWITCHYARD_HOME": str(settings.home),
        "SWITCHYARD_DATABASE_URL": settings.database_url,
        "SWITCHYARD_TEMPORAL_ADDRESS": settings.temporal_address,
        "SWITCHYARD_TEMPORAL_TASK_QUEUE": settings.temporal_task_queue,
        "SWITCHYARD_JWT_SECRET": settings.jwt_secret,
        "SWITCHYARD_ENCRYPTION_KEYS": settings.encryption_keys,
        "SWITCHYARD_CATALOG_PATH": str(settings.catalog_path),
    }
    handle = open(log, "ab")  # noqa: SIM115 (the child writes to it)
    return subprocess.Popen(
        [sys.executable, "-m", "switchyard", "worker"],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )


async def test_sigkilled_worker_recovery_completes_with_effects_applied_once(
    dev_env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    settings = make_settings(temporal_address=dev_env.client.service_client.config.target_host)
    log = tmp_path / "worker.log"
    first = start_worker(settings, log)
    stream = f"kill_{uuid.uuid4().hex[:6]}"
    workflow_id = f"recovery:samsara:{stream}"
    config = RecoveryConfig(
        check_interval_seconds=1,
        healthy_checks_to_restore=2,
        monitoring_seconds=2,
        stage_hold_seconds=2,
    )
    start = WithStartWorkflowOperation(
        ErrorRecoveryWorkflow.run,
        RecoveryInput(service="samsara", stream_id=stream, config=config),
        id=workflow_id,
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    report = ErrorReport(
        error_type="service_unavailable", severity="high", failed_providers=["samsara_primary"]
    )
    try:
        result = await asyncio.wait_for(
            dev_env.client.execute_update_with_start_workflow(
                ErrorRecoveryWorkflow.report_error, report, start_workflow_operation=start
            ),
            timeout=60,
        )
        assert result.plan.selected.node_id == "samsara_backup"
        handle = dev_env.client.get_workflow_handle_for(ErrorRecoveryWorkflow.run, workflow_id)
        # Kill the worker once the recovery is in the middle of its staged restore.
        for _ in range(200):
            status = await handle.query(ErrorRecoveryWorkflow.status)
            if status.phase is RecoveryPhase.restoring:
                break
            await asyncio.sleep(0.1)
        assert status.phase is RecoveryPhase.restoring
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        await asyncio.sleep(1)
        second = start_worker(settings, log)
        try:
            final = await asyncio.wait_for(handle.result(), timeout=90)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(20)
    finally:
        if first.poll() is None:
            first.kill()

    assert final.phase is RecoveryPhase.resolved
    with sessions() as session:
        applied = session.scalars(
            select(Event.event_type).where(
                Event.workflow_id == workflow_id, Event.event_type == "recovery_route_applied"
            )
        ).all()
        assert len(applied) == 1  # the override for the error was applied exactly once
        assert session.scalar(select(func.count()).select_from(ErrorEvent)) == 1
        assert session.get(RoutingOverrideRow, workflow_id) is None
        keys = session.scalars(
            select(AppliedEffect.key).where(AppliedEffect.key.like(f"{workflow_id}/%"))
        ).all()
        assert len(keys) == len(set(keys))
        resolved = session.scalars(
            select(Event.event_type).where(
                Event.workflow_id == workflow_id, Event.event_type == "recovery_resolved"
            )
        ).all()
        assert len(resolved) == 1
