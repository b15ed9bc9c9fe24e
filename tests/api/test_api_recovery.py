"""backend-agent-error over HTTP against the real Temporal dev server and a worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from fastapi.testclient import TestClient
from harness import live_api
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.auth import Role
from store.models import ErrorStream, RoutingOverrideRow
from switchyard.settings import Settings

BASE = "/api/v1/enhanced-traffic-coordination"

SEED_ERROR: dict[str, Any] = {
    "errorType": "performance_degradation",
    "serviceName": "samsara",
    "operation": "gps_tracking",
    "severity": "high",
    "errorMessage": "GPS tracking response time exceeded 2000ms threshold",
    "businessImpact": {"revenueAtRisk": 2000, "customerImpact": "moderate", "timeToResolution": 15},
    "errorDetails": {
        "failedProviders": ["samsara_primary"],
        "retryAttempts": 2,
        "cascadingServices": ["route_optimization", "driver_notifications"],
    },
    "streamId": "error_stream_samsara_002",
    "recoveryStrategyId": "samsara_failover_strategy",
    "monitoringSessionId": "monitoring_session_samsara_003",
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


async def _post(client: TestClient, path: str, body: object, headers: dict[str, str]) -> Any:
    return await asyncio.to_thread(client.post, BASE + path, json=body, headers=headers)


async def _get(client: TestClient, path: str, headers: dict[str, str]) -> Any:
    return await asyncio.to_thread(client.get, BASE + path, headers=headers)


async def test_seed_error_reroutes_and_next_coordination_avoids_the_failed_provider(
    live: TestClient,
    auth: Callable[..., dict[str, str]],
    sessions: sessionmaker[Session],
    dev_env: WorkflowEnvironment,
) -> None:
    headers = auth(Role.operator)
    response = await _post(live, "/backend-agent-error", SEED_ERROR, headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["message"] == "Backend Agent error handled successfully"
    result = body["data"]["coordinationResult"]
    assert result["coordinationId"].startswith("backend_error_coordination_")
    assert result["routingDecision"]["selectedNode"] == {
        "nodeId": "samsara_backup",
        "providerName": "Samsara Backup",
        "region": "us-west",
        "successRate": 98.8,
        "costPerRequest": 0.055,
    }
    decision = result["optimizationDecision"]
    assert decision["selectedStrategy"] == "AVAILABILITY_FOCUSED"
    plan = decision["optimizationPlan"]
    assert (plan["primaryAction"], plan["estimatedCost"], plan["estimatedLatency"]) == (
        "enable_multi_provider_redundancy",
        0.061,
        300,
    )
    agent = body["data"]["backendAgentResponse"]
    assert agent["errorHandled"] is True
    assert agent["coordinationId"] == result["coordinationId"]
    assert agent["recoveryStrategy"] == "AVAILABILITY_FOCUSED"
    assert agent["estimatedResolutionTime"] == 5
    assert agent["workflowId"] == "recovery:samsara:error_stream_samsara_002"
    assert agent["cascadingServices"] == ["driver_notifications", "route_optimization"]

    # Operators find it in the Temporal UI by its typed search attributes.
    query = (
        'ServiceName = "samsara" AND Phase = "rerouted" AND Severity = "high" '
        'AND RecoveryStrategy = "AVAILABILITY_FOCUSED"'
    )
    found: list[str] = []
    for _ in range(50):
        found = [w.id async for w in dev_env.client.list_workflows(query)]
        if found:
            break
        await asyncio.sleep(0.2)
    assert agent["workflowId"] in found

    # The very next coordination for the service avoids the failed provider.
    coordination = await _post(
        live,
        "/execute-coordination",
        {"serviceName": "samsara", "operation": "gps_tracking"},
        headers,
    )
    assert coordination.status_code == 200, coordination.text
    data = coordination.json()["data"]
    assert data["routingDecision"]["selectedNode"]["nodeId"] != "samsara_primary"
    assert data["routingDecision"]["routingStrategy"] == "AVAILABILITY_FOCUSED"
    assert data["backendAgentIntegration"]["recoveryStrategyActivated"] is True
    # The redundancy plan is carried out: gps_tracking is idempotent (providers.yaml), so the
    # decision carries a hedge to the plan's standby and pays for the share it is sent.
    routed = data["routingDecision"]
    assert routed["selectedNode"]["nodeId"] == "samsara_backup"
    assert routed["hedge"] == {
        "nodeId": "samsara_secondary_eu",
        "providerName": "Samsara Secondary (EU)",
        "region": "eu-west",
        "delayMs": 500.0,
        "share": 0.1,
        "costPerRequest": 0.06,
    }
    assert routed["estimatedCost"] == 0.061
    # A retry after the backup failed goes to the standby first.
    retry = await _post(
        live,
        "/execute-coordination",
        {
            "serviceName": "samsara",
            "operation": "gps_tracking",
            "routingContext": {"failedProviders": ["samsara_backup"]},
        },
        headers,
    )
    assert retry.status_code == 200, retry.text
    assert retry.json()["data"]["routingDecision"]["selectedNode"]["nodeId"] == (
        "samsara_secondary_eu"
    )

    # A repeated error of the stream joins the running workflow.
    again = await _post(live, "/backend-agent-error", SEED_ERROR, headers)
    assert again.status_code == 200
    joined = again.json()["data"]["backendAgentResponse"]
    assert joined["workflowId"] == agent["workflowId"]
    assert joined["errorCount"] == 2 and joined["joinedExistingRecovery"] is True

    status = await _get(live, f"/recoveries/{agent['workflowId']}", auth(Role.viewer))
    assert status.status_code == 200, status.text
    view = status.json()["data"]
    assert view["phase"] == "rerouted" and view["errorCount"] == 2
    assert view["failedProviders"] == ["samsara_primary"]
    assert view["temporalUiUrl"].endswith("recovery%3Asamsara%3Aerror_stream_samsara_002")
    assert [step["step"] for step in view["timeline"]][:2] == ["started", "error_reported"]

    active = (await _get(live, "/active-coordinations", auth(Role.viewer))).json()["data"]
    assert [c["workflowId"] for c in active["coordinations"]] == [agent["workflowId"]]
    connections = (await _get(live, "/backend-agent-connections", auth(Role.viewer))).json()
    stream = connections["data"]["connections"][0]
    assert stream["streamId"] == "error_stream_samsara_002" and stream["errors"] == 2
    assert stream["monitoringSessions"] == ["monitoring_session_samsara_003"]

    cancelled = await _post(
        live, f"/recoveries/{agent['workflowId']}/cancel", {"reason": "test over"}, headers
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["data"]["phase"] == "cancelled"
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(RoutingOverrideRow)) == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"serviceName": "paypal"}, "serviceName"),
        ({"severity": "apocalyptic"}, "severity"),
        ({"streamId": ""}, "streamId"),
        (
            {"errorDetails": {"failedProviders": ["stripe_primary_us_east"]}},
            "errorDetails.failedProviders",
        ),
        ({"businessImpact": {"revenueAtRisk": -5}}, "businessImpact.revenueAtRisk"),
    ],
)
async def test_bad_input_is_422_naming_the_field(
    live: TestClient,
    auth: Callable[..., dict[str, str]],
    change: dict[str, Any],
    field: str,
    sessions: sessionmaker[Session],
) -> None:
    response = await _post(
        live, "/backend-agent-error", {**SEED_ERROR, **change}, auth(Role.operator)
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert field in [d["field"] for d in error["details"]]
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(ErrorStream)) == 0


def test_temporal_unreachable_is_503_and_writes_nothing(
    clean_store: Engine,
    make_settings: Callable[..., Settings],
    auth: Callable[..., dict[str, str]],
    sessions: sessionmaker[Session],
) -> None:
    settings = make_settings(temporal_address="127.0.0.1:1")
    with TestClient(create_app(settings, prepare=False)) as client:
        response = client.post(
            BASE + "/backend-agent-error", json=SEED_ERROR, headers=auth(Role.operator)
        )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "temporal_unavailable"
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(ErrorStream)) == 0


async def test_viewer_cannot_report_errors(
    live: TestClient, auth: Callable[..., dict[str, str]]
) -> None:
    response = await _post(live, "/backend-agent-error", SEED_ERROR, auth(Role.viewer))
    assert response.status_code == 403
