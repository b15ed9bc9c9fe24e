"""Two `switchyard api` and two `switchyard worker` processes on one store and one Temporal
dev server behave as one of each: budgets charged once per decision, one recovery per stream
whichever API an error reaches, one emergency per service, and every flow completes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import BIN, TEST_KEYS, TEST_SECRET
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from api.auth import Role
from store.models import (
    AppliedEffect,
    BudgetSpend,
    Coordination,
    Emergency,
    ErrorEvent,
    ErrorStream,
    Event,
    RoutingOverrideRow,
)
from workflows.search import SEARCH_ATTRIBUTES

pytestmark = [pytest.mark.devserver, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BASE = "/api/v1/enhanced-traffic-coordination"
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(
    url: str, body: object = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """One JSON request; (status, document) whatever the status."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@dataclass
class Cluster:
    """The processes of the test and where to reach them."""

    apis: list[str]
    worker_metrics: list[str]
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def stop(self, name: str) -> int:
        """SIGTERM one process and wait for it."""
        process = self.processes[name]
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        return process.wait(60)

    def log_lines(self, name: str) -> list[dict[str, Any]]:
        text = (self.logs / f"{name}.log").read_text()
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def start(name: str, argv: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    handle = open(logs / f"{name}.log", "ab")  # noqa: SIM115 (the child writes to it)
    try:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    finally:
        handle.close()


def wait_for(check: Callable[[], bool], what: str, cluster: Cluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in cluster.processes.items():
            if process.poll() is not None:
                tail = (cluster.logs / f"{name}.log").read_text()[-3000:]
                raise AssertionError(f"{name} exited with {process.returncode}:\n{tail}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def pollers(api: str) -> str:
    _, health = call(f"{api}{BASE}/health")
    return str(health.get("data", {}).get("checks", {}).get("worker", {}).get("detail", ""))


@pytest.fixture
def cluster(clean_store: Engine, database_url: str, tmp_path: Path) -> Iterator[Cluster]:
    """A Temporal dev server (own db file), then 2 APIs and 2 workers on the test store."""
    logs = tmp_path / "logs"
    logs.mkdir()
    temporal_port = free_port()
    temporal_argv = [
        str(BIN / "temporal"),
        "server",
        "start-dev",
        "--db-filename",
        str(tmp_path / "temporal.db"),
        "--ip",
        "127.0.0.1",
        "--port",
        str(temporal_port),
        "--headless",
        "--log-level",
        "error",
    ]
    for key in SEARCH_ATTRIBUTES:
        temporal_argv += ["--search-attribute", f"{key.name}=Keyword"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env.update(
        {
            "SWITCHYARD_ENV": "test",
            "SWITCHYARD_DATABASE_URL": database_url,
            "SWITCHYARD_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
            "SWITCHYARD_TEMPORAL_TASK_QUEUE": f"cluster-{uuid.uuid4().hex[:8]}",
            "SWITCHYARD_JWT_SECRET": TEST_SECRET,
            "SWITCHYARD_ENCRYPTION_KEYS": TEST_KEYS,
            "SWITCHYARD_CATALOG_PATH": str(ROOT / "providers.yaml"),
            "SWITCHYARD_SNAPSHOT_POLL_SECONDS": "0.05",
            "SWITCHYARD_LOG_FORMAT": "json",
            "SWITCHYARD_RECOVERY_CHECK_INTERVAL_SECONDS": "1",
            "SWITCHYARD_RECOVERY_HEALTHY_CHECKS": "1",
            "SWITCHYARD_RECOVERY_MONITORING_SECONDS": "1",
            "SWITCHYARD_RECOVERY_STAGE_HOLD_SECONDS": "1",
        }
    )
    api_ports = [free_port(), free_port()]
    metric_ports = [free_port(), free_port()]
    cluster = Cluster(
        apis=[f"http://127.0.0.1:{p}" for p in api_ports],
        worker_metrics=[f"http://127.0.0.1:{p}/metrics" for p in metric_ports],
        logs=logs,
    )
    python = [sys.executable, "-m", "switchyard"]
    try:
        cluster.processes["temporal"] = start("temporal", temporal_argv, env, logs)
        for index, port in enumerate(metric_ports, 1):
            own = {
                **env,
                "SWITCHYARD_HOME": str(tmp_path / f"worker{index}"),
                "SWITCHYARD_WORKER_METRICS_ADDRESS": f"127.0.0.1:{port}",
            }
            cluster.processes[f"worker{index}"] = start(
                f"worker{index}", [*python, "worker"], own, logs
            )
        for index, port in enumerate(api_ports, 1):
            own = {**env, "SWITCHYARD_HOME": str(tmp_path / f"api{index}")}
            argv = [*python, "api", "--host", "127.0.0.1", "--port", str(port)]
            cluster.processes[f"api{index}"] = start(f"api{index}", argv, own, logs)
        for api in cluster.apis:
            wait_for(
                lambda api=api: pollers(api).startswith("2 poller"),  # type: ignore[misc]
                f"{api} to see both workers polling",
                cluster,
                START_TIMEOUT,
            )
        yield cluster
    finally:
        for process in cluster.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def count(sessions: sessionmaker[Session], model: type[Any], *where: Any) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_two_apis_and_two_workers_behave_as_one_of_each(
    cluster: Cluster, sessions: sessionmaker[Session], token: Callable[..., str]
) -> None:
    api1, api2 = cluster.apis
    operator = {"Authorization": f"Bearer {token(Role.operator, sub='ops-1')}"}
    commander = {"Authorization": f"Bearer {token(Role.incident_commander, sub='ic-1')}"}

    # Coordinations on both APIs at once: each charged exactly once, to one budget row.
    body = {"serviceName": "stripe", "operation": "payment_processing"}
    with ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(
                lambda i: call(f"{cluster.apis[i % 2]}{BASE}/execute-coordination", body, operator),
                range(12),
            )
        )
    assert [status for status, _ in answers] == [200] * 12, answers
    costs = [doc["data"]["routingDecision"]["estimatedCost"] for _, doc in answers]
    ids = {doc["data"]["coordinationId"] for _, doc in answers}
    assert len(ids) == 12
    with sessions() as session:
        spent = session.scalar(
            select(func.sum(BudgetSpend.spent)).where(BudgetSpend.service == "stripe")
        )
        booked = session.scalar(
            select(func.sum(BudgetSpend.decisions)).where(BudgetSpend.service == "stripe")
        )
    assert spent == pytest.approx(sum(costs))
    assert booked == 12
    assert count(sessions, Coordination, Coordination.service == "stripe") == 12
    served = [
        sum(
            v
            for (name, labels), v in scrape(f"{api}/metrics").items()
            if name == "switchyard_decisions_total" and ("service", "stripe") in labels
        )
        for api in cluster.apis
    ]
    assert served == [6, 6]  # each process counts only what it answered

    # One stream's errors through both APIs join one recovery, which completes.
    stream = f"cluster_{uuid.uuid4().hex[:6]}"
    error = {
        "errorType": "service_unavailable",
        "serviceName": "maps",
        "severity": "high",
        "errorDetails": {"failedProviders": ["mapbox_primary"]},
        "streamId": stream,
    }
    request_id = f"cluster-error-{stream}"
    status, first = call(
        f"{api1}{BASE}/backend-agent-error", error, {**operator, "X-Request-ID": request_id}
    )
    assert status == 200, first
    status, second = call(f"{api2}{BASE}/backend-agent-error", error, operator)
    assert status == 200, second
    workflow_id = first["data"]["backendAgentResponse"]["workflowId"]
    assert workflow_id == f"recovery:maps:{stream}"
    assert second["data"]["backendAgentResponse"]["workflowId"] == workflow_id
    assert first["data"]["backendAgentResponse"]["joinedExistingRecovery"] is False
    assert second["data"]["backendAgentResponse"]["joinedExistingRecovery"] is True
    assert second["data"]["backendAgentResponse"]["errorCount"] == 2
    status, routed = call(
        f"{api2}{BASE}/execute-coordination", {**body, "serviceName": "maps"}, operator
    )
    assert status == 200, routed
    assert routed["data"]["routingDecision"]["selectedNode"]["nodeId"] != "mapbox_primary"

    # An emergency activated through one API is refused through the other, then ends.
    emergency = {
        "serviceName": "twilio",
        "operation": "sms_delivery",
        "emergencyReason": "carrier outage",
        "maxBudgetOverride": 50,
        "durationMinutes": 5,
        "businessJustification": "OTP messages must go out",
    }
    status, activated = call(f"{api1}{BASE}/emergency-override", emergency, commander)
    assert status == 200, activated
    status, refused = call(f"{api2}{BASE}/emergency-override", emergency, commander)
    assert status == 409, refused
    assert refused["error"]["code"] == "emergency_already_active"
    status, cancelled = call(
        f"{api2}{BASE}/emergency-override/twilio/cancel", {"reason": "carrier is back"}, commander
    )
    assert status == 200, cancelled

    def resolved() -> bool:
        _, view = call(f"{api2}{BASE}/recoveries/{workflow_id}", headers=operator)
        return bool(view.get("data", {}).get("phase") == "resolved")

    wait_for(resolved, f"{workflow_id} to resolve", cluster, 40)
    _, ended = call(f"{api1}{BASE}/emergency-override/twilio", headers=operator)
    assert ended["data"]["running"] is False and ended["data"]["endReason"] == "cancelled"

    with sessions() as session:
        stream_row = session.get(ErrorStream, stream)
        assert stream_row is not None
        assert (stream_row.status, stream_row.error_count) == ("resolved", 2)
        keys = session.scalars(
            select(AppliedEffect.key).where(AppliedEffect.key.like(f"{workflow_id}/%"))
        ).all()
        assert keys and len(keys) == len(set(keys))
        emergencies = session.scalars(select(Emergency).where(Emergency.service == "twilio")).all()
        assert [(e.status, e.end_reason) for e in emergencies] == [("ended", "cancelled")]
    assert count(sessions, ErrorEvent, ErrorEvent.stream_id == stream) == 2
    assert count(sessions, RoutingOverrideRow, RoutingOverrideRow.workflow_id == workflow_id) == 0
    for event_type in ("recovery_resolved", "emergency_mode_activated", "emergency_mode_ended"):
        assert count(sessions, Event, Event.event_type == event_type) == 1, event_type

    # Both APIs report the same store-wide phases; each worker serves the SDK's metrics.
    for api in cluster.apis:
        samples = scrape(f"{api}/metrics")
        assert (
            samples[
                ("switchyard_recoveries", frozenset({("service", "maps"), ("phase", "resolved")}))
            ]
            == 1
        )
        ended_labels = {("service", "twilio"), ("phase", "ended"), ("end_reason", "cancelled")}
        assert samples[("switchyard_emergencies", frozenset(ended_labels))] == 1
    for url in cluster.worker_metrics:
        assert any(name.startswith("temporal_") for name, _ in scrape(url))

    # Workers stop cleanly on SIGTERM; the APIs drain and stop.
    for name in ("worker1", "worker2"):
        assert cluster.stop(name) == 0, (cluster.logs / f"{name}.log").read_text()[-4000:]
    for name in ("api1", "api2"):
        assert cluster.stop(name) in (0, -signal.SIGTERM)

    # The error's request, in API 1's JSON log: its request id, caller and workflow.
    access = [
        line
        for line in cluster.log_lines("api1")
        if line["logger"] == "uvicorn.access" and line.get("request_id") == request_id
    ]
    assert len(access) == 1, access
    assert access[0]["principal"] == "ops-1"
    assert access[0]["workflow_id"] == workflow_id
    assert any(line["message"] == "worker stopped" for line in cluster.log_lines("worker1"))
