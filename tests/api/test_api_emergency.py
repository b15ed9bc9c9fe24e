"""The contract's emergency example over HTTP, through update-with-start on the real dev server.

A worker runs in the test on the API's task queue; the API calls are made from threads so the
worker keeps running on the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.emergency import EmergencyActivities
from api.app import create_app
from api.auth import Role
from store.models import Emergency, Event
from switchyard.settings import Settings
from workflows.emergency import EmergencyOverrideWorkflow
from workflows.emergency_types import workflow_id_for

BASE = "/api/v1/enhanced-traffic-coordination"
URL = f"{BASE}/emergency-override"
SEED_REQUEST = {
    "serviceName": "stripe",
    "operation": "payment_processing",
    "emergencyReason": "Critical payment processing outage affecting $2M+ revenue stream",
    "maxBudgetOverride": 5000,
    "durationMinutes": 30,
    "businessJustification": (
        "Revenue protection during Black Friday peak traffic - customer payment failures "
        "would result in immediate revenue loss and reputation damage"
    ),
}
PLAIN_COORDINATION = {"serviceName": "stripe", "operation": "payment_processing"}


async def _terminate_running(client: Client, workflow_id: str) -> None:
    with contextlib.suppress(RPCError):  # not running
        await client.get_workflow_handle(workflow_id).terminate(reason="test cleanup")


@asynccontextmanager
async def running_api(
    env: WorkflowEnvironment,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
) -> AsyncIterator[TestClient]:
    """The API pointed at the dev server, and a worker on its task queue."""
    target = env.client.service_client.config.target_host
    settings = make_settings(temporal_address=target)
    await _terminate_running(env.client, workflow_id_for("stripe"))
    with TestClient(create_app(settings, prepare=False)) as api:
        async with emergency_worker(env, sessions, settings):
            try:
                yield api
            finally:
                await _terminate_running(env.client, workflow_id_for("stripe"))


@asynccontextmanager
async def emergency_worker(
    env: WorkflowEnvironment, sessions: sessionmaker[Session], settings: Settings
) -> AsyncIterator[None]:
    """A worker for the emergency workflow on the settings' task queue."""
    activities = EmergencyActivities(sessions, settings)
    with ThreadPoolExecutor(max_workers=4) as executor:
        async with Worker(
            env.client,
            task_queue=settings.temporal_task_queue,
            workflows=[EmergencyOverrideWorkflow],
            activities=activities.all(),
            activity_executor=executor,
        ):
            yield


async def _call(api: TestClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    return await asyncio.to_thread(api.request, method, url, **kwargs)


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_seed_emergency_activation_and_lifecycle(
    dev_env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
    auth: Callable[..., dict[str, str]],
) -> None:
    commander = auth(Role.incident_commander)
    async with running_api(dev_env, sessions, make_settings) as api:
        response = await _call(api, "POST", URL, json=SEED_REQUEST, headers=commander)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["success"] is True
        assert body["message"] == "Emergency coordination mode activated successfully"
        result, status = body["data"]["coordinationResult"], body["data"]["emergencyStatus"]
        coordination_id = result["coordinationId"]
        assert coordination_id.startswith("emergency_")
        assert result["routingDecision"]["selectedNode"] == {
            "nodeId": "stripe_premium_emergency",
            "providerName": "Stripe Premium Emergency",
            "successRate": 99.9,
            "costPerRequest": 0.15,
            "region": "us-east-1",
            "healthScore": 98,
        }
        assert result["routingDecision"]["routingStrategy"] == "HYBRID_OPTIMIZATION"
        assert result["metadata"] == {
            "confidenceScore": 98,
            "coordinationStrategy": "emergency_coordination",
            "appliedOptimizations": [
                "intelligent_routing",
                "backend_agent_coordination",
                "emergency_override",
            ],
        }
        deadline = _at(status.pop("deadline"))
        assert status == {
            "activated": True,
            "coordinationId": coordination_id,
            "maxBudgetOverride": 5000,
            "durationMinutes": 30,
            "estimatedCost": 0.15,
            "selectedProvider": "Stripe Premium Emergency",
            "workflowId": "emergency:stripe",
        }
        with sessions() as session:
            row = session.get(Emergency, coordination_id)
            assert row is not None and row.status == "active" and row.deadline == deadline
            event = session.scalars(
                select(Event).where(Event.event_type == "emergency_mode_activated")
            ).one()
        assert {k: event.payload[k] for k in ("serviceName", "maxBudgetOverride")} == {
            "serviceName": "stripe",
            "maxBudgetOverride": 5000,
        }
        assert event.payload["selectedProvider"] == "Stripe Premium Emergency"

        # This API process routes with the emergency at once, charging the override.
        routed = await _call(
            api,
            "POST",
            f"{BASE}/execute-coordination",
            json=PLAIN_COORDINATION,
            headers=auth(Role.operator),
        )
        assert routed.status_code == 200, routed.text
        routed_data = routed.json()["data"]
        assert (
            routed_data["routingDecision"]["selectedNode"]["nodeId"] == "stripe_premium_emergency"
        )
        assert routed_data["metadata"]["coordinationStrategy"] == "emergency_coordination"

        duplicate = await _call(api, "POST", URL, json=SEED_REQUEST, headers=commander)
        assert duplicate.status_code == 409, duplicate.text
        conflict = duplicate.json()["error"]
        assert conflict["code"] == "emergency_already_active"
        assert conflict["details"]["workflowId"] == "emergency:stripe"
        assert conflict["details"]["coordinationId"] == coordination_id
        assert _at(conflict["details"]["deadline"]) == deadline
        assert conflict["details"]["extendUrl"] == f"{URL}/stripe/extend"

        view = await _call(api, "GET", f"{URL}/stripe", headers=auth(Role.viewer))
        assert view.status_code == 200, view.text
        running = view.json()["data"]
        assert (running["phase"], running["running"], running["source"]) == (
            "active",
            True,
            "workflow",
        )
        assert running["spentUnderOverride"] == pytest.approx(0.15)
        assert running["selectedNode"]["nodeId"] == "stripe_premium_emergency"
        assert 0 < running["remainingSeconds"] <= 30 * 60

        extended = await _call(
            api,
            "POST",
            f"{URL}/stripe/extend",
            json={"minutes": 15, "reason": "still down"},
            headers=commander,
        )
        assert extended.status_code == 200, extended.text
        assert _at(extended.json()["data"]["deadline"]) == deadline + timedelta(minutes=15)
        assert extended.json()["data"]["durationMinutes"] == 45
        too_long = await _call(
            api,
            "POST",
            f"{URL}/stripe/extend",
            json={"minutes": 1400, "reason": "all week"},
            headers=commander,
        )
        assert too_long.status_code == 422, too_long.text
        assert too_long.json()["error"]["details"][0]["field"] == "minutes"

        cancelled = await _call(
            api,
            "POST",
            f"{URL}/stripe/cancel",
            json={"reason": "provider recovered"},
            headers=commander,
        )
        assert cancelled.status_code == 200, cancelled.text
        ended = cancelled.json()["data"]
        assert (ended["phase"], ended["endReason"]) == ("ended", "cancelled")
        after = await _call(
            api,
            "POST",
            f"{BASE}/execute-coordination",
            json=PLAIN_COORDINATION,
            headers=auth(Role.operator),
        )
        assert after.json()["data"]["routingDecision"]["selectedNode"]["nodeId"] != (
            "stripe_premium_emergency"
        )

        last = await _call(api, "GET", f"{URL}/stripe", headers=auth(Role.viewer))
        assert last.status_code == 200, last.text
        stored = last.json()["data"]
        assert (stored["source"], stored["running"], stored["phase"]) == ("store", False, "ended")
        assert (stored["coordinationId"], stored["endReason"]) == (coordination_id, "cancelled")
        late = await _call(
            api,
            "POST",
            f"{URL}/stripe/extend",
            json={"minutes": 5, "reason": "x"},
            headers=commander,
        )
        assert late.status_code == 404, late.text

        # The workflow id is free again: a later emergency for the service starts afresh.
        again = await _call(api, "POST", URL, json=SEED_REQUEST, headers=commander)
        assert again.status_code == 200, again.text
        assert again.json()["data"]["coordinationResult"]["coordinationId"] != coordination_id


async def test_keyed_retry_after_no_worker_finds_the_emergency_it_started(
    dev_env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
    auth: Callable[..., dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 504 (no worker yet) then a retry with the same Idempotency-Key: the first emergency.

    Without the key, or with another key, the retry is a second request and gets a 409; the
    same key with another body is a client bug and says so.
    """
    monkeypatch.setattr("api.routes.emergency.WORKER_WAIT_SECONDS", 1.0)
    target = dev_env.client.service_client.config.target_host
    settings = make_settings(temporal_address=target, temporal_task_queue="keyed-retry")
    await _terminate_running(dev_env.client, workflow_id_for("stripe"))
    keyed = {**auth(Role.incident_commander), "Idempotency-Key": "outage-42"}
    try:
        with TestClient(create_app(settings, prepare=False)) as api:
            first = await _call(api, "POST", URL, json=SEED_REQUEST, headers=keyed)
            assert first.status_code == 504, first.text
            assert first.json()["error"]["code"] == "worker_unavailable"

            async with emergency_worker(dev_env, sessions, settings):
                monkeypatch.setattr("api.routes.emergency.WORKER_WAIT_SECONDS", 30.0)
                retry = await _call(api, "POST", URL, json=SEED_REQUEST, headers=keyed)
                assert retry.status_code == 200, retry.text
                assert retry.headers["Idempotent-Replayed"] == "true"
                data = retry.json()["data"]
                coordination_id = data["coordinationResult"]["coordinationId"]
                assert data["emergencyStatus"]["activated"] is True
                with sessions() as session:
                    row = session.scalars(select(Emergency)).one()
                assert row.coordination_id == coordination_id

                other_body = {**SEED_REQUEST, "maxBudgetOverride": 6000}
                reused = await _call(api, "POST", URL, json=other_body, headers=keyed)
                assert reused.status_code == 409, reused.text
                assert reused.json()["error"]["code"] == "idempotency_key_reused"

                for headers in (
                    auth(Role.incident_commander),
                    {**auth(Role.incident_commander), "Idempotency-Key": "outage-43"},
                ):
                    second = await _call(api, "POST", URL, json=SEED_REQUEST, headers=headers)
                    assert second.status_code == 409, second.text
                    conflict = second.json()["error"]
                    assert conflict["code"] == "emergency_already_active"
                    assert conflict["details"]["coordinationId"] == coordination_id
    finally:
        await _terminate_running(dev_env.client, workflow_id_for("stripe"))
