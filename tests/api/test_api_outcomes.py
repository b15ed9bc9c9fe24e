"""POST outcomes over HTTP: durable ingestion, breakers, validation and idempotency."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from api.auth import Role
from routing.health import MonitoringConfig
from store.base import utcnow
from store.db import transaction
from store.health import sweep
from store.models import Event, NodeHealthRow, Outcome
from store.outcomes import OutcomeReport, record_outcomes

BASE = "/api/v1/enhanced-traffic-coordination"
PRIMARY = "stripe_primary_us_east"


def batch(
    node: str = PRIMARY, total: int = 100, failures: int = 30, **extra: Any
) -> dict[str, Any]:
    """`total` outcomes for `node`, three in every ten failing (30 %) by default."""
    failing = {round(i * total / failures) for i in range(failures)} if failures else set()
    return {
        "outcomes": [
            {
                "nodeId": node,
                "success": i not in failing,
                "latencyMs": 140 + i % 20,
                **({"errorCode": "card_processor_unavailable"} if i in failing else {}),
                **extra,
            }
            for i in range(total)
        ]
    }


def post(client: TestClient, body: object, headers: dict[str, str]) -> Any:
    return client.post(BASE + "/outcomes", json=body, headers=headers)


def count(sessions: sessionmaker[Session], model: type[Any]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def route(client: TestClient, headers: dict[str, str], **requirements: bool) -> dict[str, Any]:
    body = {"serviceName": "stripe", "operation": "payment_processing"}
    if requirements:
        body["coordinationRequirements"] = requirements  # type: ignore[assignment]
    response = client.post(BASE + "/execute-coordination", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def test_failures_open_the_breaker_durably_before_the_answer(
    api_client: TestClient, auth: Callable[..., dict[str, str]], sessions: sessionmaker[Session]
) -> None:
    headers = auth(Role.operator)
    response = post(api_client, batch(), headers)
    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert (data["accepted"], data["failed"]) == (100, 30)
    assert data["breakerTransitions"] == [
        {
            "nodeId": PRIMARY,
            "serviceName": "stripe",
            "previousState": "CLOSED",
            "state": "OPEN",
            "reason": "failure_rate",
        }
    ]
    (node,) = data["nodes"]
    assert node["nodeId"] == PRIMARY and node["reported"] == 100
    assert node["observations"] == 100 and node["breakerState"] == "OPEN"
    assert node["successRate"] == 74.967 and node["failureProbability"] == 1.0

    # Written before the 202: outcomes, health, breaker and its event.
    assert count(sessions, Outcome) == 100
    with sessions() as session:
        health = session.get(NodeHealthRow, PRIMARY)
        assert health is not None and health.breaker_state == "OPEN"
        assert health.breaker_trips == 1 and health.breaker_open_until is not None
        event = session.scalars(select(Event).where(Event.event_type == "breaker_opened")).one()
        assert event.payload["nodeId"] == PRIMARY and event.payload["reason"] == "failure_rate"

    # Routing avoids the open breaker as soon as the snapshot has it.
    api_client.app.state.runtime.snapshot.refresh()  # type: ignore[attr-defined]
    decision = route(api_client, headers, requirePredictiveAnalytics=True)
    assert decision["routingDecision"]["selectedNode"]["nodeId"] == "stripe_secondary_us_west"
    excluded = {e["nodeId"]: e["reason"] for e in decision["routingDecision"]["excludedNodes"]}
    assert excluded[PRIMARY] == "breaker_open"
    # The nodes left have no outcomes yet: no forecast to weigh, and the answer says so.
    assert decision["routingDecision"]["predictiveAnalytics"]["effect"] == "unavailable"
    assert "predictive_analytics" not in decision["metadata"]["appliedOptimizations"]
    assert decision["routingDecision"]["predictedFailureProbability"] == 0.0


def test_rate_limit_refusals_trip_the_breaker_without_moving_health(
    api_client: TestClient, auth: Callable[..., dict[str, str]], sessions: sessionmaker[Session]
) -> None:
    # The same 30 failures as above, but the provider refused them for rate limiting (429):
    # no work was done, so they are refusals, not evidence of an outage.
    body = batch()
    for outcome in body["outcomes"]:
        if not outcome["success"]:
            outcome["errorCode"] = "429"
    response = post(api_client, body, auth(Role.operator))
    assert response.status_code == 202, response.text
    data = response.json()["data"]
    (node,) = data["nodes"]
    assert node["successRate"] > 99.9  # refusals move no health figure (74.967 as failures)
    assert [t["reason"] for t in data["breakerTransitions"]] == ["rate_limited"]
    with sessions() as session:
        health = session.get(NodeHealthRow, PRIMARY)
        assert health is not None and health.breaker_reason == "rate_limited"
    # The snapshot carries why the breaker is open (a retry may still use a rate-limited node).
    runtime = api_client.app.state.runtime  # type: ignore[attr-defined]
    snapshot = runtime.snapshot.refresh()
    assert snapshot.health[PRIMARY].breaker_reason == "rate_limited"


def test_successes_keep_the_breaker_closed_and_move_health_little(
    api_client: TestClient, auth: Callable[..., dict[str, str]]
) -> None:
    response = post(api_client, batch(total=5, failures=1), auth(Role.operator))
    assert response.status_code == 202
    node = response.json()["data"]["nodes"][0]
    assert node["breakerState"] == "CLOSED"
    assert response.json()["data"]["breakerTransitions"] == []
    # One failure in five, against a prior worth 20 calls: the score moves by < 100*5/25.
    assert 95 - 20 < node["healthScore"] < 95
    # Routing's snapshot knows how many outcomes the figures rest on (routing/retry.py).
    runtime = api_client.app.state.runtime  # type: ignore[attr-defined]
    assert runtime.snapshot.refresh().health[PRIMARY].observations == 5


def test_half_open_probes_close_the_breaker(
    api_client: TestClient, auth: Callable[..., dict[str, str]], sessions: sessionmaker[Session]
) -> None:
    headers = auth(Role.operator)
    assert post(api_client, batch(), headers).status_code == 202
    with transaction(sessions) as session:  # the break is over
        session.execute(
            update(NodeHealthRow)
            .where(NodeHealthRow.node_id == PRIMARY)
            .values(breaker_open_until=utcnow() - timedelta(seconds=1))
        )
    probes = post(api_client, batch(total=3, failures=0), headers).json()["data"]
    assert [(t["previousState"], t["state"]) for t in probes["breakerTransitions"]] == [
        ("OPEN", "HALF_OPEN"),
        ("HALF_OPEN", "CLOSED"),
    ]
    # The 30 old failures are still in the health window, not in the breaker's.
    again = post(api_client, batch(total=3, failures=0), headers).json()["data"]
    assert again["breakerTransitions"] == [] and again["nodes"][0]["breakerState"] == "CLOSED"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b["outcomes"][3].update(nodeId="paypal_primary"), "outcomes.3.nodeId"),
        (lambda b: b["outcomes"][3].update(latencyMs=-1), "outcomes.3.latencyMs"),
        (lambda b: b["outcomes"][0].pop("success"), "outcomes.0.success"),
        (lambda b: b["outcomes"].extend(b["outcomes"][:1] * 901), "outcomes"),
        (lambda b: b["outcomes"].clear(), "outcomes"),
        (
            lambda b: b["outcomes"][2].update(
                observedAt=(datetime.now(UTC) + timedelta(hours=1)).isoformat()
            ),
            "outcomes.2.observedAt",
        ),
        (lambda b: b["outcomes"][1].update(colour="red"), "outcomes.1.colour"),
    ],
)
def test_bad_batches_are_422_naming_index_and_field_and_write_nothing(
    api_client: TestClient,
    auth: Callable[..., dict[str, str]],
    sessions: sessionmaker[Session],
    mutate: Callable[[dict[str, Any]], object],
    field: str,
) -> None:
    body = batch()
    mutate(body)
    response = post(api_client, body, auth(Role.operator))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in [d["field"] for d in error["details"]]
    assert field in error["message"]
    assert count(sessions, Outcome) == 0


def test_idempotency_key_makes_a_repeated_batch_a_no_op(
    api_client: TestClient,
    auth: Callable[..., dict[str, str]],
    token: Callable[..., str],
    sessions: sessionmaker[Session],
) -> None:
    headers = {**auth(Role.operator), "Idempotency-Key": "batch-0001"}
    first = post(api_client, batch(), headers)
    again = post(api_client, batch(), headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert count(sessions, Outcome) == 100
    with sessions() as session:
        events = session.scalars(select(Event.event_type)).all()
        assert list(events) == ["breaker_opened"]

    other = post(api_client, batch(failures=0), headers)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    # Keys are per caller: another principal's same key is a new batch.
    stranger = {"Authorization": f"Bearer {token(Role.operator, sub='bob')}"}
    stranger["Idempotency-Key"] = "batch-0001"
    assert post(api_client, batch(failures=0), stranger).status_code == 202
    assert count(sessions, Outcome) == 200


def test_observed_at_is_kept_and_naive_times_are_utc(
    api_client: TestClient, auth: Callable[..., dict[str, str]], sessions: sessionmaker[Session]
) -> None:
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    body = {
        "outcomes": [
            {"nodeId": PRIMARY, "success": True, "latencyMs": 120, "observedAt": when.isoformat()},
            {
                "nodeId": PRIMARY,
                "success": True,
                "latencyMs": 130,
                "observedAt": when.replace(tzinfo=None).isoformat(),
                "coordinationId": "coordination_1_abc123",
                "cost": 0.029,
            },
        ]
    }
    assert post(api_client, body, auth(Role.operator)).status_code == 202
    with sessions() as session:
        rows = session.scalars(select(Outcome).order_by(Outcome.id)).all()
    assert [r.observed_at for r in rows] == [when, when]
    assert rows[1].coordination_id == "coordination_1_abc123" and rows[1].cost == 0.029


def test_drifts_notify_at_most_every_two_seconds_per_node_breaker_moves_always(
    clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    config = MonitoringConfig()
    start = utcnow()

    def record(seconds: float, latency: float, success: bool = True) -> bool:
        at = start + timedelta(seconds=seconds)
        reports = [OutcomeReport(PRIMARY, success, latency, at) for _ in range(20)]
        with transaction(sessions) as session:
            return record_outcomes(session, reports, at, config).snapshot_changed

    assert record(0.0, 1000)  # p50 150 -> 575 ms: a drift routing notices
    assert not record(1.0, 2000)  # drifts again a second later: left to the replicas' reload
    assert record(2.5, 2000)  # two seconds after the first: notified again
    assert record(2.6, 150, success=False)  # 20 failures in a row: the breaker opens at once


def test_viewers_cannot_report_and_tokens_are_required(
    api_client: TestClient, auth: Callable[..., dict[str, str]]
) -> None:
    assert post(api_client, batch(), auth(Role.viewer)).status_code == 403
    assert post(api_client, batch(), {}).status_code == 401


def test_a_few_refusals_cut_the_admitted_share_and_time_restores_it(
    api_client: TestClient, auth: Callable[..., dict[str, str]], sessions: sessionmaker[Session]
) -> None:
    # 4 refusals among 100 calls: too few to trip the breaker (5), enough to say the node is
    # at its limit. The share becomes 0.8 x 96/100 and routing offers the node that part.
    body = batch(failures=4)
    for outcome in body["outcomes"]:
        if not outcome["success"]:
            outcome["errorCode"] = "rate_limit_exceeded"
    headers = auth(Role.operator)
    response = post(api_client, body, headers)
    assert response.status_code == 202, response.text
    (node,) = response.json()["data"]["nodes"]
    assert node["breakerState"] == "CLOSED"
    assert node["admittedShare"] == pytest.approx(0.8 * 96 / 100)
    with sessions() as session:
        health = session.get(NodeHealthRow, PRIMARY)
        assert health is not None and health.admitted_share == pytest.approx(0.768)
        assert health.admitted_at is not None
    view = api_client.get(f"{BASE}/providers/{PRIMARY}", headers=auth(Role.viewer))
    assert view.status_code == 200, view.text
    assert view.json()["data"]["health"]["admittedShare"] == pytest.approx(0.768)

    runtime = api_client.app.state.runtime  # type: ignore[attr-defined]
    assert runtime.snapshot.refresh().health[PRIMARY].admitted_share == pytest.approx(0.768)
    chosen: list[str] = []
    for number in range(60):
        decision = client_route(api_client, headers, f"share-{number}")
        chosen.append(decision["routingDecision"]["selectedNode"]["nodeId"])
        if chosen[-1] != PRIMARY:
            excluded = {
                e["nodeId"]: e["reason"] for e in decision["routingDecision"]["excludedNodes"]
            }
            assert excluded[PRIMARY] == "rate_limit_share"
    # The bucket is a stable hash of the request: some requests, not all and not none.
    assert 0.5 < chosen.count(PRIMARY) / len(chosen) < 0.95
    assert chosen == [
        client_route(api_client, headers, f"share-{n}")["routingDecision"]["selectedNode"]["nodeId"]
        for n in range(60)
    ]

    # Without refusals the share grows back (1/600 per second with the breaker closed).
    with transaction(sessions) as session:
        sweep(session, utcnow() + timedelta(minutes=11), MonitoringConfig())
    with sessions() as session:
        health = session.get(NodeHealthRow, PRIMARY)
        assert health is not None and health.admitted_share == 1.0
    assert runtime.snapshot.refresh().health[PRIMARY].admitted_share == 1.0


def client_route(client: TestClient, headers: dict[str, str], request_id: str) -> dict[str, Any]:
    body = {
        "serviceName": "stripe",
        "operation": "payment_processing",
        "routingContext": {"requestMetadata": {"requestId": request_id}},
    }
    response = client.post(BASE + "/execute-coordination", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def test_refusals_show_the_node_capacity_and_each_second_sends_it_no_more(
    api_client: TestClient, auth: Callable[..., dict[str, str]], sessions: sessionmaker[Session]
) -> None:
    # Second s: the provider took 3 calls and refused 2 for rate limiting (their ends less
    # their latencies fall in s); second s - 1 is the oldest of the window and does not count.
    s = int(utcnow().timestamp()) - 5

    def outcome(start: float, latency: float, **extra: Any) -> dict[str, Any]:
        ended = datetime.fromtimestamp(start + latency / 1000.0, UTC)
        return {"nodeId": PRIMARY, "latencyMs": latency, "observedAt": ended.isoformat(), **extra}

    refusal = {"success": False, "errorCode": "429"}
    body = {
        "outcomes": [
            *(outcome(s - 1 + 0.2 * i, 120.0, success=True) for i in range(2)),
            *(outcome(s + 0.1 + 0.2 * i, 120.0, success=True) for i in range(3)),
            *(outcome(s + 0.8 + 0.05 * i, 25.0, **refusal) for i in range(2)),
        ]
    }
    headers = auth(Role.operator)
    response = post(api_client, body, headers)
    assert response.status_code == 202, response.text
    (node,) = response.json()["data"]["nodes"]
    assert node["rateCapacity"] == 3.0
    with sessions() as session:
        health = session.get(NodeHealthRow, PRIMARY)
        assert health is not None and health.rate_capacity == 3.0
        assert health.rate_capacity_at is not None
    view = api_client.get(f"{BASE}/providers/{PRIMARY}", headers=auth(Role.viewer))
    assert view.json()["data"]["health"]["rateCapacity"] == 3.0
    runtime = api_client.app.state.runtime  # type: ignore[attr-defined]
    assert runtime.snapshot.refresh().health[PRIMARY].rate_capacity == 3.0

    # Requests whose bucket the admitted share (0.8 x 3/5) admits go to the primary, at most
    # 3 of them in any one second of this API process (routing/headroom.py).
    per_second: dict[str, list[str]] = {}
    for number in range(40):
        decision = client_route(api_client, headers, f"capacity-{number}")
        second = decision["coordinationId"].split("_")[1]
        chosen = decision["routingDecision"]["selectedNode"]["nodeId"]
        per_second.setdefault(second, []).append(chosen)
        if chosen != PRIMARY:
            excluded = {
                e["nodeId"]: e["detail"] for e in decision["routingDecision"]["excludedNodes"]
            }
            assert PRIMARY in excluded
    assert all(chosen.count(PRIMARY) <= 3 for chosen in per_second.values())
    assert sum(chosen.count(PRIMARY) for chosen in per_second.values()) > 0
