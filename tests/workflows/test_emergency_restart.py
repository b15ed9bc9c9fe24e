"""The override ends on time even when the worker and the Temporal server were down at the deadline.

A real dev server with a persistent database file: start a 1-minute emergency, stop the worker,
stop the server, wait past the deadline, restart the server on the same file, bring a new
worker back: the emergency ends at once and routing is back to normal. Takes about 75 s.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from test_emergency_support import emergency_input, emergency_worker, fresh_ids

from routing.decide import decide
from routing.types import RoutingRequest
from store.base import utcnow
from store.models import Emergency
from store.snapshot import load_snapshot
from switchyard.settings import Settings
from workflows.emergency import EmergencyOverrideWorkflow
from workflows.emergency_types import EmergencyStatus, EndReason
from workflows.search import SEARCH_ATTRIBUTES

pytestmark = [pytest.mark.devserver, pytest.mark.slow]

TEMPORAL = Path(sys.executable).parent / "temporal"
PREMIUM = "stripe_premium_emergency"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def dev_server(db_file: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`temporal server start-dev` on a persistent file; stopped (SIGTERM) on exit."""
    command = [
        str(TEMPORAL),
        "server",
        "start-dev",
        "--db-filename",
        str(db_file),
        "--port",
        str(port),
        "--http-port",
        str(_free_port()),
        "--metrics-port",
        str(_free_port()),
        "--headless",
        "--log-level",
        "error",
    ]
    for key in SEARCH_ATTRIBUTES:
        command += ["--search-attribute", f"{key.name}=Keyword"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _connect(port: int) -> Client:
    last: Exception | None = None
    for _ in range(100):
        try:
            return await Client.connect(f"127.0.0.1:{port}", data_converter=pydantic_data_converter)
        except Exception as exc:  # not listening yet
            last = exc
            await asyncio.sleep(0.2)
    raise AssertionError(f"the dev server did not come up: {last}")


def _routes_to(sessions: sessionmaker[Session]) -> str:
    now = utcnow()
    with sessions() as session:
        snapshot = load_snapshot(session, now)
    return decide(RoutingRequest(service="stripe", operation="payment"), snapshot, now).node.node_id


async def test_emergency_ends_after_worker_and_server_restart(
    tmp_path: Path, clean_store: Engine, sessions: sessionmaker[Session], settings: Settings
) -> None:
    db_file, port = tmp_path / "temporal.db", _free_port()
    task_queue, workflow_id = fresh_ids()
    params = emergency_input(duration_minutes=1)
    normal = _routes_to(sessions)

    with dev_server(db_file, port):
        client = await _connect(port)
        async with emergency_worker(client, task_queue, sessions, settings):
            start = WithStartWorkflowOperation(
                EmergencyOverrideWorkflow.run,
                params,
                id=workflow_id,
                task_queue=task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                static_summary="restart test: 1-minute stripe emergency",
            )
            activation = await client.execute_update_with_start_workflow(
                EmergencyOverrideWorkflow.activation, start_workflow_operation=start
            )
            assert activation.deadline - activation.started_at == timedelta(minutes=1)
            assert _routes_to(sessions) == PREMIUM
        # Worker stopped; now the server goes down too.

    wait = (activation.deadline - utcnow()).total_seconds() + 2
    await asyncio.sleep(max(0.0, wait))
    # Past the deadline and nothing running: the row is still 'active', yet routing is normal.
    with sessions() as session:
        row = session.get(Emergency, params.coordination_id)
        assert row is not None and row.status == "active"
    assert _routes_to(sessions) == normal

    with dev_server(db_file, port):
        client = await _connect(port)
        handle = client.get_workflow_handle(workflow_id, result_type=EmergencyStatus)
        async with emergency_worker(client, task_queue, sessions, settings):
            back = time.monotonic()
            result = await asyncio.wait_for(handle.result(), timeout=60)
            took = time.monotonic() - back

    assert result.end_reason is EndReason.expired
    assert took < 20, f"the emergency took {took:.1f} s to end after the worker came back"
    assert result.ended_at is not None and result.ended_at >= activation.deadline
    with sessions() as session:
        row = session.get(Emergency, params.coordination_id)
        assert row is not None and (row.status, row.end_reason) == ("ended", "expired")
    assert _routes_to(sessions) == normal != PREMIUM
