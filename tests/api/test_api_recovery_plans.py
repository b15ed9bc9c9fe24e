"""recoveryStrategyId over HTTP: a catalog plan pins the recovery and shows in its status; an
id that names no plan is answered and recorded as such (docs/ROUTING.md, Recovery plans)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_asyncio
from fastapi.testclient import TestClient
from harness import live_api
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from temporalio.testing import WorkflowEnvironment

from api.auth import Role
from switchyard.settings import Settings

BASE = "/api/v1/enhanced-traffic-coordination"


def _error(stream: str, plan: str | None) -> dict[str, Any]:
    return {
        "errorType": "performance_degradation",
        "serviceName": "samsara",
        "operation": "gps_tracking",
        "severity": "high",
        "businessImpact": {"revenueAtRisk": 2000, "timeToResolution": 15},
        "errorDetails": {"failedProviders": ["samsara_primary"], "retryAttempts": 2},
        "streamId": stream,
        "recoveryStrategyId": plan,
    }


@pytest_asyncio.fixture
async def live(
    dev_env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
) -> AsyncIterator[TestClient]:
    """The API and a worker on the dev server, sharing the test store."""
    settings = make_settings(temporal_address=dev_env.client.service_client.config.target_host)
    async with live_api(dev_env.client, sessions, settings) as client:
        yield client


async def test_plans_pin_the_recovery_and_unknown_ids_are_reported(
    live: TestClient, auth: Callable[..., dict[str, str]]
) -> None:
    headers = auth(Role.operator)

    async def report(stream: str, plan: str | None) -> dict[str, Any]:
        response = await asyncio.to_thread(
            live.post, f"{BASE}/backend-agent-error", json=_error(stream, plan), headers=headers
        )
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    async def status(workflow_id: str) -> dict[str, Any]:
        response = await asyncio.to_thread(
            live.get, f"{BASE}/recoveries/{workflow_id}", headers=headers
        )
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()["data"]
        return view

    known = await report("stream_plan_known", "samsara_failover_strategy")
    agent = known["backendAgentResponse"]
    assert agent["recoveryPlan"] == {
        "requestedId": "samsara_failover_strategy",
        "planId": "samsara_failover_strategy",
        "status": "applied",
    }
    assert known["coordinationResult"]["optimizationDecision"]["rule"] == (
        "plan:samsara_failover_strategy"
    )
    # A later report naming another id: the recovery keeps its plan and says so.
    again = await report("stream_plan_known", "no_such_plan")
    assert again["backendAgentResponse"]["recoveryPlan"] == {
        "requestedId": "no_such_plan",
        "planId": "samsara_failover_strategy",
        "status": "pinned_elsewhere",
    }
    view = await status(agent["workflowId"])
    assert view["recoveryPlanId"] == "samsara_failover_strategy"

    unknown = await report("stream_plan_unknown", "no_such_plan")
    agent = unknown["backendAgentResponse"]
    assert agent["recoveryPlan"] == {
        "requestedId": "no_such_plan",
        "planId": None,
        "status": "unknown",
    }
    assert unknown["coordinationResult"]["optimizationDecision"]["rule"] == "major_incident"
    view = await status(agent["workflowId"])
    assert view["recoveryPlanId"] is None
    assert view["unknownPlanIds"] == ["no_such_plan"]
    assert any(step["step"] == "unknown_recovery_plan" for step in view["timeline"])

    none = await report("stream_plan_none", None)
    assert none["backendAgentResponse"]["recoveryPlan"] is None
