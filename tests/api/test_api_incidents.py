"""Cross-stream incidents over HTTP, with the real Temporal dev server and a worker: errors
correlated into one incident, its views, its end, and the protections of its blast radius."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_asyncio
from fastapi.testclient import TestClient
from harness import live_api
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.testing import WorkflowEnvironment
from test_api_recovery import BASE, SEED_ERROR

from api.auth import Role
from store.models import Event
from switchyard.settings import Settings

MAPS_ERROR: dict[str, Any] = {
    "errorType": "rate_limit_exceeded",
    "serviceName": "maps",
    "operation": "route_calculation",
    "severity": "medium",
    "errorMessage": "Mapbox answered 429 for route calculations",
    "businessImpact": {"revenueAtRisk": 1200, "customerImpact": "high", "timeToResolution": 20},
    "errorDetails": {"failedProviders": ["mapbox_primary"], "retryAttempts": 3},
    "streamId": "error_stream_maps_001",
}
STRIPE_ERROR: dict[str, Any] = {
    "errorType": "service_unavailable",
    "serviceName": "stripe",
    "operation": "payment_processing",
    "severity": "critical",
    "errorMessage": "Stripe answered 503",
    "businessImpact": {"revenueAtRisk": 5000, "customerImpact": "severe", "timeToResolution": 10},
    "errorDetails": {"failedProviders": ["stripe_primary_us_east"]},
    "streamId": "error_stream_stripe_009",
}


@pytest_asyncio.fixture
async def live(
    dev_env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
) -> AsyncIterator[TestClient]:
    """The API and a worker on the dev server; incidents look at their members twice a second."""
    settings = make_settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        incident_poll_seconds=0.5,
    )
    async with live_api(dev_env.client, sessions, settings) as client:
        yield client


async def call(
    client: TestClient, method: str, path: str, headers: dict[str, str], body: Any = None
) -> Any:
    return await asyncio.to_thread(client.request, method, BASE + path, json=body, headers=headers)


async def report(
    client: TestClient, body: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    response = await call(client, "POST", "/backend-agent-error", headers, body)
    assert response.status_code == 200, response.text
    agent: dict[str, Any] = response.json()["data"]["backendAgentResponse"]
    return agent


async def until(predicate: Callable[[], Any], seconds: float = 20.0) -> Any:
    for _ in range(int(seconds / 0.1)):
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached")


async def test_samsara_then_maps_is_one_incident_and_it_ends_with_its_last_recovery(
    live: TestClient,
    auth: Callable[..., dict[str, str]],
    sessions: sessionmaker[Session],
    dev_env: WorkflowEnvironment,
) -> None:
    operator, viewer = auth(Role.operator), auth(Role.viewer)
    samsara = await report(live, SEED_ERROR, operator)
    assert samsara["joinedIncident"] is False and samsara["correlationRule"] == "new"
    incident_id = samsara["incidentId"]
    assert incident_id.startswith("incident_")

    # route_optimization (cascading from samsara) uses maps: the Maps error joins.
    maps = await report(live, MAPS_ERROR, operator)
    assert maps["incidentId"] == incident_id
    assert maps["joinedIncident"] is True and maps["correlationRule"] == "cascade"
    # The same Samsara stream again: it stays one member.
    again = await report(live, SEED_ERROR, operator)
    assert again["incidentId"] == incident_id and again["correlationRule"] == "same_stream"

    # Each recovery joins its incident beside its own work: the view shows both soon.
    async def both_joined() -> dict[str, Any] | None:
        response = await call(live, "GET", f"/incidents/{incident_id}", viewer)
        data: dict[str, Any] = response.json().get("data") or {}
        return data if data.get("members") == 2 else None

    view = await until(both_joined)
    assert view["open"] is True and view["phase"] == "recovering"
    assert view["members"] == 2 and view["revenueAtRisk"] == 3200  # 2000 + 1200, once each
    assert view["services"] == ["maps", "samsara"]
    assert view["cascadingServices"] == ["driver_notifications", "route_optimization"]
    assert {"samsara", "maps", "twilio"} <= set(view["blastRadius"])
    assert view["severity"] == "high" and view["customerImpact"] == "high"
    assert [m["correlationRule"] for m in view["memberStreams"]] == ["new", "cascade"]
    assert view["protections"]["services"] == view["blastRadius"]
    assert "IncidentId%3D%22" in view["recoveriesQuery"]
    assert [t["step"] for t in view["timeline"]][:2] == ["member_joined", "member_joined"]

    listed = (await call(live, "GET", "/incidents?service=maps", viewer)).json()["data"]
    assert [i["incidentId"] for i in listed["incidents"]] == [incident_id]

    # One Temporal query lists the incident and its member recoveries.
    query = f'IncidentId = "{incident_id}"'

    async def listed_in_temporal() -> set[str]:
        found = {w.id async for w in dev_env.client.list_workflows(query)}
        return found if len(found) == 3 else set()

    assert await until(listed_in_temporal) == {
        f"incident:{incident_id}",
        samsara["workflowId"],
        maps["workflowId"],
    }

    # twilio is used by driver_notifications: its decisions name the incident.
    decision = await call(
        live,
        "POST",
        "/execute-coordination",
        operator,
        {"serviceName": "twilio", "operation": "sms_delivery"},
    )
    assert decision.status_code == 200, decision.text
    assert decision.json()["data"]["incident"]["incidentId"] == incident_id

    for agent in (samsara, maps):
        ended = await call(
            live, "POST", f"/recoveries/{agent['workflowId']}/cancel", operator, {"reason": "over"}
        )
        assert ended.status_code == 200, ended.text

    async def closed() -> dict[str, Any] | None:
        data = (await call(live, "GET", f"/incidents/{incident_id}", viewer)).json()["data"]
        return data if not data["open"] else None

    final = await until(closed)
    assert final["phase"] == "resolved" and final["protections"] is None
    assert final["endReason"] == "every member recovery has ended"
    assert [m["streamStatus"] for m in final["memberStreams"]] == ["cancelled", "cancelled"]
    with sessions() as session:
        types = session.scalars(
            select(Event.event_type)
            .where(Event.workflow_id == f"incident:{incident_id}")
            .order_by(Event.id)
        ).all()
    assert types[0] == "incident_opened" and types[-1] == "incident_resolved"
    # Nothing guards twilio any more.
    decision = await call(
        live,
        "POST",
        "/execute-coordination",
        operator,
        {"serviceName": "twilio", "operation": "sms_delivery"},
    )
    assert "incident" not in decision.json()["data"]


async def test_unrelated_errors_open_two_incidents_and_an_operator_resolves_one(
    live: TestClient, auth: Callable[..., dict[str, str]]
) -> None:
    operator = auth(Role.operator)
    samsara = await report(live, SEED_ERROR, operator)
    stripe = await report(live, STRIPE_ERROR, operator)
    assert stripe["incidentId"] != samsara["incidentId"]
    assert stripe["joinedIncident"] is False and stripe["correlationRule"] == "new"

    async def both_listed() -> set[str]:
        listed = (await call(live, "GET", "/incidents", auth(Role.viewer))).json()["data"]
        found = {i["incidentId"] for i in listed["incidents"]}
        return found if len(found) == 2 else set()

    assert await until(both_listed) == {samsara["incidentId"], stripe["incidentId"]}
    path = f"/incidents/{stripe['incidentId']}/resolve"
    refused = await call(live, "POST", path, operator, {"reason": "fixed"})
    assert refused.status_code == 403  # incident_commander's
    resolved = await call(live, "POST", path, auth(Role.incident_commander), {"reason": "fixed"})
    assert resolved.status_code == 200, resolved.text
    data = resolved.json()["data"]
    assert data["open"] is False and data["endReason"].endswith(": fixed")
    again = await call(live, "POST", path, auth(Role.incident_commander), {"reason": "fixed"})
    assert again.status_code == 409
    # The incident is over: the stream's next error opens a new one.
    later = copy.deepcopy(STRIPE_ERROR)
    later["streamId"] = "error_stream_stripe_010"
    fresh = await report(live, later, operator)
    assert fresh["incidentId"] not in (stripe["incidentId"], samsara["incidentId"])


async def test_bad_incident_input_is_named(
    live: TestClient, auth: Callable[..., dict[str, str]]
) -> None:
    body = {**SEED_ERROR, "incidentId": "incident_1_nothere"}
    response = await call(live, "POST", "/backend-agent-error", auth(Role.operator), body)
    assert response.status_code == 422, response.text
    assert [d["field"] for d in response.json()["error"]["details"]] == ["incidentId"]
    missing = await call(live, "GET", "/incidents/incident_1_nothere", auth(Role.viewer))
    assert missing.status_code == 404
    bad_phase = await call(live, "GET", "/incidents?phase=sideways", auth(Role.viewer))
    assert bad_phase.status_code == 422
    assert "phase" in bad_phase.text
