"""Fan-out across API replicas: two API processes on one store, an event written by the
worker's activity code reaches the WebSocket clients of both (NOTIFY on PostgreSQL, the poll
on SQLite). The test process plays the worker: it runs RecoveryActivities itself."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, TEST_KEYS, TEST_SECRET
from events_support import BASE, SUBPROTOCOL, head
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from temporalio.testing import ActivityEnvironment
from websockets.sync.client import connect

from activities.recovery import RecoveryActivities
from api.auth import Role
from switchyard.settings import Settings
from workflows.recovery_types import RecoveryEventInput

START_SECONDS = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(port: int, token: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"API on {port} exited:\n{log.read_text()[-3000:]}")
        try:
            answer = httpx.get(
                f"http://127.0.0.1:{port}{BASE}/events?limit=1",
                headers={"Authorization": f"Bearer {token}"},
                timeout=2,
            )
            if answer.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"API on {port} not ready:\n{log.read_text()[-3000:]}")


@pytest.fixture
def replicas(
    clean_store: Engine, database_url: str, tmp_path: Path, token: Callable[..., str]
) -> Iterator[list[int]]:
    """Two `switchyard api` processes on the test store; yields their ports."""
    env = {
        **os.environ,
        "SWITCHYARD_ENV": "test",
        "SWITCHYARD_DATABASE_URL": database_url,
        "SWITCHYARD_JWT_SECRET": TEST_SECRET,
        "SWITCHYARD_ENCRYPTION_KEYS": TEST_KEYS,
        "SWITCHYARD_CATALOG_PATH": str(ROOT / "providers.yaml"),
        "SWITCHYARD_TEMPORAL_ADDRESS": "127.0.0.1:1",  # not needed for events
        "SWITCHYARD_SNAPSHOT_POLL_SECONDS": "0.1",
    }
    processes: list[tuple[subprocess.Popen[bytes], Path, int]] = []
    try:
        for index in range(2):
            port, log = _free_port(), tmp_path / f"api{index}.log"
            command = [sys.executable, "-m", "switchyard", "api", "--host", "127.0.0.1"]
            process = subprocess.Popen(
                [*command, "--port", str(port)],
                cwd=ROOT,
                env={**env, "SWITCHYARD_HOME": str(tmp_path / f"home{index}")},
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
            )
            processes.append((process, log, port))
        viewer = token(Role.viewer)
        for process, log, port in processes:
            _wait_ready(port, viewer, process, log)
        yield [port for _, _, port in processes]
    finally:
        for process, _, _ in processes:
            process.terminate()
        for process, _, _ in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_an_event_from_the_worker_reaches_clients_of_both_replicas(
    replicas: list[int], sessions: sessionmaker[Session], token: Callable[..., str]
) -> None:
    viewer = token(Role.viewer)
    since = head(sessions)
    with ExitStack() as stack:
        clients = [
            stack.enter_context(
                connect(
                    f"ws://127.0.0.1:{port}{BASE}/events?since={since}",
                    subprotocols=[SUBPROTOCOL, f"bearer.{viewer}"],  # type: ignore[list-item]
                    open_timeout=10,
                )
            )
            for port in replicas
        ]
        worker = RecoveryActivities(sessions, Settings(encryption_keys=TEST_KEYS))
        ActivityEnvironment().run(
            worker.publish_recovery_event,
            RecoveryEventInput(
                key="recovery:stripe:replicas/event-1",
                workflow_id="recovery:stripe:replicas",
                service="stripe",
                stream_id="replicas",
                event_type="recovery_escalated",
                payload={"errorCount": 3},
            ),
        )
        received = [json.loads(client.recv(timeout=20)) for client in clients]
    assert received[0] == received[1]
    event = received[0]
    assert event["id"] == since + 1
    assert event["eventType"] == "recovery_escalated"
    assert event["workflowId"] == "recovery:stripe:replicas" and event["errorCount"] == 3
