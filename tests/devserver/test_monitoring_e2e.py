"""Monitoring end to end: outcomes open a breaker, the health monitor starts a recovery on its
own, traffic moves to the secondary, and comes back through the staged restore when the
primary's calls succeed again. API + worker + real Temporal dev server, short timers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import pytest_asyncio
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.app import create_app
from api.auth import Role
from store.models import Event
from switchyard.settings import Settings
from worker.main import WORKFLOWS, all_activities
from worker.setup import ensure_health_monitor

pytestmark = pytest.mark.devserver

BASE = "/api/v1/enhanced-traffic-coordination"
PRIMARY = "stripe_primary_us_east"
SECONDARY = "stripe_secondary_us_west"
RECOVERY = f"recovery:stripe:monitor_{PRIMARY}"
# Every wait below is bounded; together they keep the test well under a minute.
WAIT_SECONDS = 20.0


@pytest_asyncio.fixture
async def monitored(
    dev_env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
) -> AsyncIterator[TestClient]:
    """API + a full worker + the health monitor sweeping every 1 s, with short breaker/recovery
    timers."""
    client = dev_env.client
    settings = make_settings(
        temporal_address=client.service_client.config.target_host,
        health_sweep_interval_seconds=1,
        breaker_base_break_seconds=2,
        recovery_check_interval_seconds=0.5,
        recovery_healthy_checks=2,
        recovery_monitoring_seconds=1,
        recovery_stage_hold_seconds=1,
    )
    monitor_id = f"test-monitor-{uuid.uuid4().hex[:8]}"
    # Every activity the worker runs: a monitor-started recovery joins an incident too.
    activities = all_activities(sessions, settings, client)
    with ThreadPoolExecutor(max_workers=16) as executor:
        async with Worker(
            client,
            task_queue=settings.temporal_task_queue,
            workflows=WORKFLOWS,
            activities=activities,
            activity_executor=executor,
        ):
            await ensure_health_monitor(client, settings, monitor_id)
            api = TestClient(create_app(settings, prepare=False))
            await asyncio.to_thread(api.__enter__)
            try:
                yield api
            finally:
                await client.get_workflow_handle(monitor_id).terminate("test over")
                await asyncio.to_thread(api.__exit__, None, None, None)
                await _end_recovery(dev_env)


async def _end_recovery(env: WorkflowEnvironment) -> None:
    """Leave the shared dev server clean if an assertion failed mid-recovery."""
    handle = env.client.get_workflow_handle(RECOVERY)
    try:
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate("test over")
    except RPCError:
        pass


async def _call(client: TestClient, method: str, path: str, body: object = None) -> Any:
    return await asyncio.to_thread(client.request, method, BASE + path, json=body)


def _outcomes(total: int, failures: int) -> dict[str, Any]:
    failing = {round(i * total / failures) for i in range(failures)} if failures else set()
    return {
        "outcomes": [
            {"nodeId": PRIMARY, "success": i not in failing, "latencyMs": 140 + i % 25}
            for i in range(total)
        ]
    }


async def _until(check: Callable[[], Any], what: str) -> Any:
    """Poll an async check every 0.2 s until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_failures_open_the_breaker_recover_on_their_own_and_traffic_returns(
    monitored: TestClient, auth: Callable[..., dict[str, str]], sessions: sessionmaker[Session]
) -> None:
    monitored.headers.update(auth(Role.admin))  # operator, reader and commander at once

    async def routed() -> str:
        response = await _call(
            monitored,
            "POST",
            "/execute-coordination",
            {"serviceName": "stripe", "operation": "payment_processing"},
        )
        assert response.status_code == 200, response.text
        return str(response.json()["data"]["routingDecision"]["selectedNode"]["nodeId"])

    async def recovery() -> dict[str, Any] | None:
        response = await _call(monitored, "GET", f"/recoveries/{RECOVERY}")
        return response.json()["data"] if response.status_code == 200 else None

    async def breaker() -> str:
        response = await _call(monitored, "GET", f"/providers/{PRIMARY}")
        return str(response.json()["data"]["breaker"]["state"])

    assert await routed() == PRIMARY

    # 30 % of the primary's calls fail: its breaker opens in the ingestion transaction.
    failing = await _call(monitored, "POST", "/outcomes", _outcomes(100, 30))
    assert failing.status_code == 202, failing.text
    assert [t["state"] for t in failing.json()["data"]["breakerTransitions"]] == ["OPEN"]

    # Traffic moves at once; the sweep starts a recovery by itself (no error report sent).
    await _until(lambda: _is(routed, SECONDARY), "routing to move to the secondary")
    started = await _until(recovery, "the monitor's recovery to start")
    assert started["source"] == "monitor"
    assert started["failedProviders"] == [PRIMARY]
    assert started["selectedNode"] == SECONDARY
    assert "provider_outage" in [s["detail"] for s in started["timeline"]][1]

    # The break (2 s) ends: the sweep half-opens the breaker; then the calls succeed again.
    await _until(lambda: _is(breaker, "HALF_OPEN"), "the breaker to half-open")
    probes = await _call(monitored, "POST", "/outcomes", _outcomes(20, 0))
    assert [t["state"] for t in probes.json()["data"]["breakerTransitions"]] == ["CLOSED"]

    async def resolved() -> dict[str, Any] | None:
        # Traffic on the restored share keeps succeeding while the recovery restores.
        await _call(monitored, "POST", "/outcomes", _outcomes(20, 0))
        status = await recovery()
        return status if status and status["phase"] == "resolved" else None

    final = await _until(resolved, "the staged restore to finish")
    steps = [s["step"] for s in final["timeline"]]
    assert steps.count("stage_restored") == 3  # 10 %, 50 %, 100 %
    assert final["restoreFraction"] == 1.0
    await _until(lambda: _is(routed, PRIMARY), "traffic back on the primary")

    with sessions() as session:
        kinds = session.scalars(select(Event.event_type).order_by(Event.id)).all()
    sequence = [k for k in kinds if k.startswith(("breaker_", "recovery_"))]
    assert sequence[:2] == ["breaker_opened", "recovery_started"]
    assert sequence.index("breaker_half_opened") < sequence.index("breaker_closed")
    assert sequence.count("recovery_stage_restored") == 2 and sequence[-1] == "recovery_resolved"


async def _is(check: Callable[[], Any], expected: str) -> bool:
    return bool(await check() == expected)
