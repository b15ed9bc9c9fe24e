"""GET /metrics: counters move with traffic, state families come from the snapshot and store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api import metrics
from api.app import create_app
from api.auth import Role
from store.base import utcnow
from store.db import transaction
from store.models import Emergency, ErrorStream
from store.status import PhaseCounts
from switchyard.settings import Settings

BASE = "/api/v1/enhanced-traffic-coordination"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient, headers: dict[str, str] | None = None) -> Samples:
    """Every sample of one scrape: (name, labels) -> value."""
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value, 0 when it does not exist yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def client(clean_store: Engine, make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """The API with Temporal out of reach (no test here needs it)."""
    settings = make_settings(temporal_address="127.0.0.1:1")
    with TestClient(create_app(settings, prepare=False)) as test_client:
        yield test_client


def coordinate(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    response = client.post(
        BASE + "/execute-coordination",
        json={"serviceName": "stripe", "operation": "payment_processing"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def test_counters_move_with_traffic(
    client: TestClient, auth: Callable[..., dict[str, str]]
) -> None:
    operator = auth(Role.operator)
    before = scrape(client)
    decisions = [coordinate(client, operator) for _ in range(3)]
    outcomes = {
        "outcomes": [
            {"nodeId": "stripe_primary_us_east", "success": i >= 2, "latencyMs": 120}
            for i in range(5)
        ]
    }
    assert client.post(BASE + "/outcomes", json=outcomes, headers=operator).status_code == 202
    client.app.state.runtime.snapshot.refresh()  # type: ignore[attr-defined]
    after = scrape(client)

    node = decisions[0]["routingDecision"]["selectedNode"]["nodeId"]
    strategy = decisions[0]["routingDecision"]["routingStrategy"]
    assert all(d["routingDecision"]["selectedNode"]["nodeId"] == node for d in decisions)
    labels = {"service": "stripe", "strategy": strategy, "node": node}
    assert value(after, "switchyard_decisions_total", **labels) - value(
        before, "switchyard_decisions_total", **labels
    ) == pytest.approx(3)
    assert value(after, "switchyard_decision_seconds_count", service="stripe") - value(
        before, "switchyard_decision_seconds_count", service="stripe"
    ) == pytest.approx(3)
    # Sequential requests: three batches of one, whichever way the store writes them.
    batches = sum(
        value(after, "switchyard_decision_batch_seconds_count", path=path)
        - value(before, "switchyard_decision_batch_seconds_count", path=path)
        for path in ("two_round_trips", "step_by_step")
    )
    assert batches == pytest.approx(3)
    assert value(after, "switchyard_decision_batch_size_sum") - value(
        before, "switchyard_decision_batch_size_sum"
    ) == pytest.approx(3)
    cost = sum(d["routingDecision"]["estimatedCost"] for d in decisions)
    assert value(after, "switchyard_decision_cost_total", service="stripe") - value(
        before, "switchyard_decision_cost_total", service="stripe"
    ) == pytest.approx(cost)
    for result, moved in (("success", 3), ("failure", 2)):
        assert value(after, "switchyard_outcomes_ingested_total", result=result) - value(
            before, "switchyard_outcomes_ingested_total", result=result
        ) == pytest.approx(moved)
    route = {"method": "POST", "route": "/execute-coordination", "status": "200"}
    assert value(after, "switchyard_http_requests_total", **route) - value(
        before, "switchyard_http_requests_total", **route
    ) == pytest.approx(3)
    # The snapshot's budget figure: this store started empty, so it is exactly these three.
    assert value(
        after, "switchyard_budget_spent", service="stripe", period="daily"
    ) == pytest.approx(cost)
    assert value(after, "switchyard_budget_limit", service="stripe", period="daily") > 0
    assert value(after, "switchyard_store_up") == 1


def test_breaker_state_follows_a_forced_breaker(
    client: TestClient, auth: Callable[..., dict[str, str]]
) -> None:
    node = "samsara_primary"
    forced = client.post(
        f"{BASE}/providers/{node}/breaker",
        json={"state": "OPEN", "reason": "provider maintenance"},
        headers=auth(Role.incident_commander),
    )
    assert forced.status_code == 200, forced.text
    client.app.state.runtime.snapshot.refresh()  # type: ignore[attr-defined]
    samples = scrape(client)
    states = {
        state: value(samples, "switchyard_breaker_state", service="samsara", node=node, state=state)
        for state in ("CLOSED", "OPEN", "HALF_OPEN")
    }
    assert states == {"CLOSED": 0, "OPEN": 1, "HALF_OPEN": 0}
    other = {"service": "samsara", "node": "samsara_backup", "state": "CLOSED"}
    assert value(samples, "switchyard_breaker_state", **other) == 1


def test_recoveries_and_emergencies_by_phase_come_from_the_store(
    client: TestClient, sessions: sessionmaker[Session]
) -> None:
    now = utcnow()
    with transaction(sessions) as session:
        for stream, status in (("a", "recovering"), ("b", "recovering"), ("c", "resolved")):
            session.add(
                ErrorStream(
                    stream_id=stream,
                    service="maps",
                    status=status,
                    workflow_id=f"recovery:{stream}",
                )
            )
        # A stream only touched by coordinations has no recovery: not counted.
        session.add(ErrorStream(stream_id="d", service="maps", status="registered"))
        for key, status, reason in (("e1", "ended", "expired"), ("e2", "active", None)):
            session.add(
                Emergency(
                    coordination_id=key,
                    workflow_id="emergency:twilio",
                    service="twilio",
                    status=status,
                    end_reason=reason,
                    emergency_reason="outage",
                    business_justification="sms must go out",
                    max_budget_override=100,
                    deadline=now + timedelta(minutes=5),
                )
            )
    samples = scrape(client)
    assert value(samples, "switchyard_recoveries", service="maps", phase="recovering") == 2
    assert value(samples, "switchyard_recoveries", service="maps", phase="resolved") == 1
    assert value(samples, "switchyard_recoveries", service="maps", phase="registered") == 0
    assert (
        value(
            samples, "switchyard_emergencies", service="twilio", phase="ended", end_reason="expired"
        )
        == 1
    )
    assert (
        value(samples, "switchyard_emergencies", service="twilio", phase="active", end_reason="")
        == 1
    )


def test_websocket_figures_come_from_the_events_hub(client: TestClient) -> None:
    client.app.state.events_hub = SimpleNamespace(clients=3, delivered=41)  # type: ignore[attr-defined]
    samples = scrape(client)
    assert value(samples, "switchyard_websocket_clients") == 3
    assert value(samples, "switchyard_events_delivered_total") == 41
    client.app.state.events_hub = None  # type: ignore[attr-defined]
    samples = scrape(client)
    assert ("switchyard_websocket_clients", frozenset()) not in samples


def test_store_outage_leaves_the_rest_of_the_scrape(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(_runtime: object) -> PhaseCounts:
        raise ConnectionError("store unreachable")

    monkeypatch.setattr(metrics, "phase_counts", down)
    samples = scrape(client)
    assert value(samples, "switchyard_store_up") == 0
    assert not any(name == "switchyard_recoveries" for name, _ in samples)
    assert any(name == "switchyard_breaker_state" for name, _ in samples)


def test_metrics_are_open_by_default_and_stay_out_of_the_openapi_document(
    client: TestClient,
) -> None:
    assert client.get("/metrics").status_code == 200
    assert "/metrics" not in client.app.openapi()["paths"]  # type: ignore[attr-defined]


def test_metrics_can_require_a_viewer_token(
    clean_store: Engine, make_settings: Callable[..., Settings], token: Callable[..., str]
) -> None:
    settings = make_settings(temporal_address="127.0.0.1:1", metrics_require_token=True)
    with TestClient(create_app(settings, prepare=False)) as locked:
        missing = locked.get("/metrics")
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "unauthorized"
        assert locked.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        viewer = {"Authorization": f"Bearer {token(Role.viewer)}"}
        assert value(scrape(locked, viewer), "switchyard_store_up") == 1
