"""GET providers and the operator's breaker control over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.auth import Role
from store.models import Event, NodeHealthRow
from switchyard.settings import Settings

BASE = "/api/v1/enhanced-traffic-coordination"
PRIMARY = "stripe_primary_us_east"


def outcomes(total: int, failures: int, node: str = PRIMARY) -> dict[str, Any]:
    failing = {round(i * total / failures) for i in range(failures)} if failures else set()
    return {
        "outcomes": [
            {"nodeId": node, "success": i not in failing, "latencyMs": 150} for i in range(total)
        ]
    }


def get(client: TestClient, path: str, headers: dict[str, str]) -> Any:
    return client.get(BASE + path, headers=headers)


def command(client: TestClient, node: str, body: object, headers: dict[str, str]) -> Any:
    return client.post(f"{BASE}/providers/{node}/breaker", json=body, headers=headers)


def decision(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    client.app.state.runtime.snapshot.refresh()  # type: ignore[attr-defined]
    response = client.post(
        BASE + "/execute-coordination",
        json={"serviceName": "stripe", "operation": "payment_processing"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return dict(response.json()["data"]["routingDecision"])


def selected(client: TestClient, headers: dict[str, str]) -> str:
    return str(decision(client, headers)["selectedNode"]["nodeId"])


def test_list_shows_every_node_in_catalog_order_with_catalog_figures(
    api_client: TestClient, auth: Callable[..., dict[str, str]], settings: Settings
) -> None:
    response = get(api_client, "/providers", auth(Role.viewer))
    assert response.status_code == 200, response.text
    providers = response.json()["data"]["providers"]
    catalog = yaml.safe_load(settings.catalog_path.read_text())["services"]
    expected = [n["id"] for spec in catalog.values() for n in spec["nodes"]]
    assert [p["nodeId"] for p in providers] == expected
    primary = providers[0]
    assert primary["catalog"] == {
        "successRate": 99.8,
        "costPerRequest": 0.029,
        "latencyMs": 150,
        "healthScore": 95,
        "latencySloMs": 2000,
        "errorRateSlo": 5,
    }
    assert primary["health"]["healthScore"] == 95 and primary["health"]["observations"] == 0
    assert primary["health"]["admittedShare"] == 1.0
    assert primary["breaker"]["state"] == "CLOSED" and primary["breaker"]["forced"] is None
    assert primary["prediction"] == {
        "failureProbability": 0.0,
        "threshold": 0.8,
        "forecast": None,
    }
    assert primary["budget"] == {
        "serviceName": "stripe",
        "period": "daily",
        "limit": 5000,
        "spentInPeriod": 0,
        "remaining": 5000,
        "spentToday": 0,
    }


def test_detail_after_failures_shows_breaker_prediction_and_spend(
    api_client: TestClient, auth: Callable[..., dict[str, str]]
) -> None:
    operator = auth(Role.operator)
    assert selected(api_client, operator) == PRIMARY  # spends 0.029 on stripe today
    report = api_client.post(BASE + "/outcomes", json=outcomes(100, 30), headers=operator)
    assert report.status_code == 202
    response = get(api_client, f"/providers/{PRIMARY}", auth(Role.viewer))
    assert response.status_code == 200, response.text
    view = response.json()["data"]
    assert view["health"]["observations"] == 100
    assert view["health"]["successRate"] == 74.967 and view["health"]["healthScore"] == 15.83
    breaker = view["breaker"]
    assert breaker["state"] == "OPEN" and breaker["reason"] == "failure_rate"
    assert breaker["trips"] == 1 and 0 < breaker["secondsToHalfOpen"] <= 30
    prediction = view["prediction"]
    assert prediction["failureProbability"] == 1.0
    forecast = prediction["forecast"]
    assert forecast["samples"] == 100 and forecast["errorBreachProbability"] == 1.0
    assert forecast["horizonSeconds"] == 0  # one burst: no time span to extrapolate from
    assert view["budget"]["spentToday"] == 0.029 and view["budget"]["spentInPeriod"] == 0.029


def test_unknown_node_is_404(api_client: TestClient, auth: Callable[..., dict[str, str]]) -> None:
    response = get(api_client, "/providers/paypal_primary", auth(Role.viewer))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    held = command(api_client, "paypal_primary", {"state": "OPEN", "reason": "x"}, auth(Role.admin))
    assert held.status_code == 404


def test_forced_open_holds_until_auto_then_probes(
    api_client: TestClient, auth: Callable[..., dict[str, str]], sessions: sessionmaker[Session]
) -> None:
    commander, operator = auth(Role.incident_commander), auth(Role.operator)
    body = {"state": "OPEN", "reason": "provider announced maintenance"}
    assert command(api_client, PRIMARY, body, operator).status_code == 403
    held = command(api_client, PRIMARY, body, commander)
    assert held.status_code == 200, held.text
    assert held.json()["data"]["breaker"]["state"] == "OPEN"
    assert held.json()["data"]["breaker"]["forced"] == "OPEN"
    assert held.json()["data"]["breaker"]["secondsToHalfOpen"] is None
    assert selected(api_client, operator) == "stripe_secondary_us_west"

    # Successes do not close a forced breaker.
    api_client.post(BASE + "/outcomes", json=outcomes(50, 0), headers=operator)
    view = get(api_client, f"/providers/{PRIMARY}", operator).json()["data"]
    assert view["breaker"]["forced"] == "OPEN" and view["health"]["observations"] == 50

    auto = command(api_client, PRIMARY, {"state": "AUTO", "reason": "maintenance over"}, commander)
    assert auto.status_code == 200
    assert auto.json()["data"]["breaker"] | {"changedAt": None} == {
        "state": "HALF_OPEN",
        "forced": None,
        "trips": 0,
        "reason": "released",
        "changedAt": None,
        "openUntil": None,
        "secondsToHalfOpen": None,
    }
    probes = api_client.post(BASE + "/outcomes", json=outcomes(3, 0), headers=operator)
    assert probes.json()["data"]["nodes"][0]["breakerState"] == "CLOSED"
    with sessions() as session:
        events = session.scalars(select(Event).order_by(Event.id)).all()
    kinds = [e.event_type for e in events if e.event_type.startswith("breaker_")]
    assert kinds == ["breaker_forced", "breaker_released", "breaker_closed"]
    assert events[0].payload["reason"] == "provider announced maintenance"


def test_forced_closed_ignores_failures_and_auto_starts_a_fresh_window(
    api_client: TestClient, auth: Callable[..., dict[str, str]], sessions: sessionmaker[Session]
) -> None:
    admin, operator = auth(Role.admin), auth(Role.operator)
    body = {"state": "CLOSED", "reason": "errors are on our side"}
    assert command(api_client, PRIMARY, body, admin).status_code == 200
    failing = api_client.post(BASE + "/outcomes", json=outcomes(100, 30), headers=operator)
    assert failing.json()["data"]["breakerTransitions"] == []
    # Still eligible (no breaker exclusion), though its low health makes it lose.
    routed = decision(api_client, operator)
    assert PRIMARY not in [e["nodeId"] for e in routed["excludedNodes"]]
    assert routed["selectedNode"]["nodeId"] == "stripe_secondary_us_west"

    assert command(api_client, PRIMARY, {"state": "AUTO", "reason": "ok"}, admin).status_code == 200
    # The 30 failures before AUTO no longer count; a few successes keep it closed.
    calm = api_client.post(BASE + "/outcomes", json=outcomes(20, 0), headers=operator)
    assert calm.json()["data"]["nodes"][0]["breakerState"] == "CLOSED"
    with sessions() as session:
        health = session.get(NodeHealthRow, PRIMARY)
        assert health is not None and health.breaker_forced is None
        assert health.breaker_window_after > 0


def test_breaker_command_is_validated(
    api_client: TestClient, auth: Callable[..., dict[str, str]]
) -> None:
    bad = command(api_client, PRIMARY, {"state": "HALF_OPEN", "reason": "x"}, auth(Role.admin))
    assert bad.status_code == 422
    assert [d["field"] for d in bad.json()["error"]["details"]] == ["state"]
    blank = command(api_client, PRIMARY, {"state": "OPEN", "reason": "  "}, auth(Role.admin))
    assert blank.status_code == 422
