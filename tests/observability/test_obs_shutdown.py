"""`switchyard api` as a real process: JSON access lines with the request's ids, /metrics after
traffic, and SIGTERM that lets an in-flight request finish; the worker's shutdown grace."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_KEYS, TEST_SECRET
from prometheus_client.parser import text_string_to_metric_families
from temporalio.testing import WorkflowEnvironment

from api.auth import Role
from switchyard.settings import Settings
from worker.main import build_worker

ROOT = Path(__file__).resolve().parents[2]
BASE = "/api/v1/enhanced-traffic-coordination"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(
    url: str, body: object = None, headers: dict[str, str] | None = None, timeout: float = 30
) -> tuple[int, str]:
    """One HTTP request; (status, body) whatever the status."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def silent_temporal() -> Iterator[socket.socket]:
    """A TCP port that accepts connections and never answers: Temporal hanging."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(30)
    yield listener
    listener.close()


def start_api(tmp_path: Path, port: int, temporal: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env.update(
        {
            "SWITCHYARD_ENV": "test",
            "SWITCHYARD_HOME": str(tmp_path / "home"),
            "SWITCHYARD_DATABASE_URL": f"sqlite:///{tmp_path / 'api.db'}",
            "SWITCHYARD_CATALOG_PATH": str(ROOT / "providers.yaml"),
            "SWITCHYARD_JWT_SECRET": TEST_SECRET,
            "SWITCHYARD_ENCRYPTION_KEYS": TEST_KEYS,
            "SWITCHYARD_TEMPORAL_ADDRESS": temporal,
            "SWITCHYARD_LOG_FORMAT": "json",
            "SWITCHYARD_SHUTDOWN_GRACE_SECONDS": "20",
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "switchyard", "api", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_up(api: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the API exited during start-up"
        try:
            if call(f"{api}/metrics", timeout=2)[0] == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the API did not come up within 60 s")


def decisions_served(api: str) -> float:
    status, text = call(f"{api}/metrics")
    assert status == 200
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "switchyard_decisions_total" and sample.labels["service"] == "stripe"
    )


@pytest.mark.slow
def test_api_process_logs_ids_and_drains_in_flight_requests_on_sigterm(
    tmp_path: Path, silent_temporal: socket.socket, token: Callable[..., str]
) -> None:
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    temporal = f"127.0.0.1:{silent_temporal.getsockname()[1]}"
    process = start_api(tmp_path, port, temporal)
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(process.stderr or []), daemon=True)
    reader.start()
    try:
        wait_up(api, process)
        headers = {
            "Authorization": f"Bearer {token(Role.operator, sub='obs-alice')}",
            "X-Request-ID": "obs-req-1",
        }
        status, body = call(
            f"{api}{BASE}/execute-coordination",
            {"serviceName": "stripe", "operation": "payment_processing"},
            headers,
        )
        assert status == 200, body
        coordination_id = json.loads(body)["data"]["coordinationId"]
        assert decisions_served(api) == 1

        # Health asks Temporal, which never answers: the request is in flight once Temporal
        # sees the connection, and stays so until health's own 3 s check timeout.
        with ThreadPoolExecutor(1) as pool:
            health = pool.submit(call, f"{api}{BASE}/health", None, {"X-Request-ID": "obs-drain"})
            connection, _ = silent_temporal.accept()
            process.send_signal(signal.SIGTERM)
            status, body = health.result(timeout=60)
            connection.close()
        assert status == 200, body  # answered, not cut off: degraded, Temporal is down
        assert json.loads(body)["data"]["checks"]["temporal"]["status"] == "down"
        # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly.
        assert process.wait(60) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(10)

    lines = [json.loads(line) for line in stderr if line.startswith("{")]
    assert len(lines) == len([line for line in stderr if line.strip()]), "every line is JSON"
    assert not any("color_message" in line for line in lines)  # uvicorn's ANSI copy is dropped
    access = {line.get("request_id"): line for line in lines if line["logger"] == "uvicorn.access"}
    coordination = access["obs-req-1"]
    assert coordination["principal"] == "obs-alice"
    assert coordination["coordination_id"] == coordination_id
    assert coordination["status"] == 200 and coordination["method"] == "POST"
    assert access["obs-drain"]["status"] == 200  # the drained request was served and logged
    messages = [line["message"] for line in lines]
    assert "Application shutdown complete." in messages  # the lifespan closed the store


async def test_worker_lets_activities_finish_for_the_shutdown_grace(
    time_env: WorkflowEnvironment, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(shutdown_grace_seconds=25)
    with ThreadPoolExecutor(32) as executor:
        worker = build_worker(time_env.client, settings, executor)
    config: Any = worker.config()
    assert config["graceful_shutdown_timeout"] == timedelta(seconds=25)
