"""Every decision-side field of execute-coordination changes something: a decision, a refusal,
a stored value or a reported figure (docs/ROUTING.md)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker
from test_api_coordination_seed import SEED_REQUEST, URL

import api.coordinator
import api.decision_writer
from api.auth import Role
from store.db import transaction
from store.decisions import Booking, DecisionCharge, Refusal, RefusalKind, book_decisions
from store.models import Coordination, Emergency, NodeHealthRow

Auth = Callable[..., dict[str, str]]


def seed(**changes: Any) -> dict[str, Any]:
    """The seed's first request with `changes` merged into its top-level blocks."""
    body = copy.deepcopy(SEED_REQUEST)
    for block, values in changes.items():
        if values is None:
            del body[block]
        else:
            body[block] = {**body[block], **values}
    return body


def post(client: TestClient, auth: Auth, body: dict[str, Any]) -> Any:
    return client.post(URL, json=body, headers=auth(Role.operator))


def decision_of(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


# -- businessContext --------------------------------------------------------------------------

# NORMAL priority with a latency gap: LATENCY_OPTIMIZED unless the business context escalates.
ORDINARY = {
    "requestMetadata": {"requestId": "r1", "priority": "NORMAL", "businessCriticality": "STANDARD"},
    "budgetConstraints": {"remainingBudget": 1000, "costPerRequestLimit": 0.1},
    "performanceContext": {"currentLatency": 800, "targetLatency": 300},
}


@pytest.mark.parametrize(
    ("context", "field"),
    [
        ({"revenueImpact": 10_000}, "businessContext.revenueImpact"),
        ({"operationalPriority": "critical"}, "businessContext.operationalPriority"),
        ({"timeSensitivity": "urgent"}, "businessContext.timeSensitivity"),
    ],
)
def test_business_context_escalates_like_critical_priority(
    api_client: TestClient, auth: Auth, context: dict[str, Any], field: str
) -> None:
    body = {"serviceName": "stripe", "operation": "payment_processing", "routingContext": ORDINARY}

    plain = decision_of(post(api_client, auth, body))["routingDecision"]
    escalated = decision_of(post(api_client, auth, {**body, "businessContext": context}))

    assert (plain["routingStrategy"], plain["strategyReason"]) == (
        "LATENCY_OPTIMIZED",
        "latency_gap",
    )
    assert plain["escalatedBy"] == []
    decision = escalated["routingDecision"]
    assert (decision["routingStrategy"], decision["strategyReason"]) == (
        "HEALTH_BASED",
        "critical_traffic",
    )
    assert decision["escalatedBy"] == [field]


def test_revenue_threshold_comes_from_the_settings(
    make_settings: Callable[..., Any], auth: Auth, clean_store: Any
) -> None:
    from api.app import create_app

    body = {
        "serviceName": "stripe",
        "operation": "payment_processing",
        "routingContext": ORDINARY,
        "businessContext": {"revenueImpact": 5000},
    }
    for threshold, strategy in ((10_000, "LATENCY_OPTIMIZED"), (5000, "HEALTH_BASED")):
        app = create_app(make_settings(escalation_revenue_impact=threshold))
        with TestClient(app) as client:
            decision = decision_of(post(client, auth, body))["routingDecision"]
        assert decision["routingStrategy"] == strategy


def test_business_context_is_stored_with_the_coordination(
    api_client: TestClient, auth: Auth, sessions: sessionmaker[Session]
) -> None:
    with_context = decision_of(post(api_client, auth, seed()))
    without = decision_of(post(api_client, auth, seed(businessContext=None)))

    with sessions() as session:
        stored = session.get(Coordination, with_context["coordinationId"])
        bare = session.get(Coordination, without["coordinationId"])
        assert stored is not None and bare is not None
        assert (
            stored.revenue_impact,
            stored.customer_impact,
            stored.operational_priority,
            stored.time_sensitivity,
        ) == (5000, "moderate", "high", "urgent")
        assert (bare.revenue_impact, bare.customer_impact) == (None, None)


def test_customer_impact_sets_risk_mitigation(api_client: TestClient, auth: Auth) -> None:
    moderate = decision_of(post(api_client, auth, seed()))
    severe = decision_of(post(api_client, auth, seed(businessContext={"customerImpact": "severe"})))

    # The seed's node (99.8 %, health 95) clears the bar of moderate impact, not of severe.
    assert moderate["businessOutcome"]["riskMitigation"] == "high"
    assert severe["businessOutcome"]["riskMitigation"] == "medium"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("customerImpact", "somewhat"),
        ("operationalPriority", "urgent"),
        ("timeSensitivity", "asap"),
        ("revenueImpact", -1),
    ],
)
def test_bad_business_context_is_a_422_naming_the_field(
    api_client: TestClient, auth: Auth, field: str, value: Any
) -> None:
    response = post(api_client, auth, seed(businessContext={field: value}))

    assert response.status_code == 422, response.text
    assert f"businessContext.{field}" in response.text


# -- requirePredictiveAnalytics ---------------------------------------------------------------


def predict(client: TestClient, sessions: sessionmaker[Session], node_id: str, p: float) -> None:
    """Give the node a forecast of p on 50 observations and reload the snapshot."""
    with transaction(sessions) as session:
        session.execute(
            update(NodeHealthRow)
            .where(NodeHealthRow.node_id == node_id)
            .values(failure_probability=p, observations=50)
        )
    client.app.state.runtime.snapshot.refresh()  # type: ignore[attr-defined]


def predictive(flag: bool) -> dict[str, Any]:
    return seed(coordinationRequirements={"requirePredictiveAnalytics": flag})


def test_predictive_analytics_avoids_a_node_predicted_to_fail(
    api_client: TestClient, auth: Auth, sessions: sessionmaker[Session]
) -> None:
    predict(api_client, sessions, "stripe_primary_us_east", 0.6)

    plain = decision_of(post(api_client, auth, predictive(False)))
    weighed = decision_of(post(api_client, auth, predictive(True)))

    assert plain["routingDecision"]["selectedNode"]["nodeId"] == "stripe_primary_us_east"
    assert plain["routingDecision"]["predictiveAnalytics"] is None
    assert "predictive_analytics" not in plain["metadata"]["appliedOptimizations"]
    decision = weighed["routingDecision"]
    assert decision["routingStrategy"] == "HEALTH_BASED"
    assert decision["selectedNode"]["nodeId"] == "stripe_secondary_us_west"
    assert {e["nodeId"]: e["reason"] for e in decision["excludedNodes"]}[
        "stripe_primary_us_east"
    ] == "predicted_failure"
    assert decision["predictiveAnalytics"] == {
        "effect": "changed",
        "exclusionThreshold": 0.5,
        "nodeWithoutForecast": "stripe_primary_us_east",
        "forecasts": [
            {"nodeId": "stripe_primary_us_east", "failureProbability": 0.6},
            {"nodeId": "stripe_secondary_us_west", "failureProbability": 0.0},
        ],
    }
    assert "predictive_analytics" in weighed["metadata"]["appliedOptimizations"]


def test_predictive_label_only_with_a_forecast(
    api_client: TestClient, auth: Auth, sessions: sessionmaker[Session]
) -> None:
    # A fresh catalog has no observations: no forecast, so no label.
    fresh = decision_of(post(api_client, auth, predictive(True)))
    assert fresh["routingDecision"]["predictiveAnalytics"]["effect"] == "unavailable"
    assert fresh["metadata"]["appliedOptimizations"] == [
        "intelligent_routing",
        "backend_agent_coordination",
    ]

    # A forecast that keeps the choice confirms it.
    predict(api_client, sessions, "stripe_secondary_us_west", 0.2)
    confirmed = decision_of(post(api_client, auth, predictive(True)))
    assert confirmed["routingDecision"]["predictiveAnalytics"]["effect"] == "confirmed"
    assert confirmed["routingDecision"]["selectedNode"]["nodeId"] == "stripe_primary_us_east"
    assert "predictive_analytics" in confirmed["metadata"]["appliedOptimizations"]


# -- requireEmergencyOverride -----------------------------------------------------------------


def emergency_required(flag: bool) -> dict[str, Any]:
    return seed(coordinationRequirements={"requireEmergencyOverride": flag})


def test_emergency_override_required_without_one_is_a_409(
    api_client: TestClient, auth: Auth
) -> None:
    assert post(api_client, auth, emergency_required(False)).status_code == 200

    response = post(api_client, auth, emergency_required(True))

    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "emergency_not_active"
    assert "requireEmergencyOverride" in error["message"]
    assert error["details"]["field"] == "coordinationRequirements.requireEmergencyOverride"


def test_emergency_override_required_is_decided_under_the_emergency(
    api_client: TestClient, auth: Auth, stripe_emergency: Emergency
) -> None:
    body = emergency_required(True)
    # No caller limits: the premium node costs 0.15, and the emergency's cap is the bound.
    body["routingContext"]["budgetConstraints"] = {}

    data = decision_of(post(api_client, auth, body))

    decision = data["routingDecision"]
    assert (decision["routingStrategy"], decision["strategyReason"]) == (
        "HYBRID_OPTIMIZATION",
        "emergency_override",
    )
    assert decision["selectedNode"]["nodeId"] == "stripe_premium_emergency"
    assert decision["budgetBound"]["bound"] == "emergency"
    assert "emergency_override" in data["metadata"]["appliedOptimizations"]


def test_emergency_that_ends_meanwhile_refuses_a_request_that_requires_it(
    api_client: TestClient,
    auth: Auth,
    stripe_emergency: Emergency,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    test_emergency_override_required_is_decided_under_the_emergency(
        api_client, auth, stripe_emergency
    )
    real = book_decisions

    def ended(session: Session, charges: list[DecisionCharge]) -> Booking:
        # The store finds the emergency over: it refuses charges to it, books the others.
        for charge in charges:
            if charge.emergency_workflow_id is not None:
                charge.emergency_workflow_id = None
                charge.refusal = Refusal(RefusalKind.emergency, "the emergency has ended")
        booking = real(session, [c for c in charges if c.refusal is None])
        refusals = iter(booking.refusals)
        return Booking(
            [c.refusal if c.refusal is not None else next(refusals) for c in charges],
            booking.integration_ms,
        )

    monkeypatch.setattr(api.decision_writer, "book_decisions", ended)
    body = emergency_required(False)
    body["routingContext"]["budgetConstraints"] = {}

    # Without the requirement the request is decided again without the emergency...
    fallback = decision_of(post(api_client, auth, body))
    assert fallback["routingDecision"]["selectedNode"]["nodeId"] == "stripe_primary_us_east"
    # ...with it, the answer says the emergency ended.
    body["coordinationRequirements"]["requireEmergencyOverride"] = True
    response = post(api_client, auth, body)
    assert response.status_code == 409, response.text
    assert "ended" in response.json()["error"]["message"]


# -- budgetPeriod -----------------------------------------------------------------------------


def budget(period: str, remaining: float = 0.05) -> dict[str, Any]:
    body = seed()
    body["routingContext"]["budgetConstraints"] = {
        "remainingBudget": remaining,
        "costPerRequestLimit": 0.1,
        "budgetPeriod": period,
    }
    return body


def at(year: int, month: int, day: int, hour: int, minute: int, second: int) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# Two moments 60 s apart across one boundary: an hour's (10:59:30 -> 11:00:30 on a Wednesday),
# a day's, an ISO week's (Sunday -> Monday) and a month's (Thursday 31 December -> Friday).
HOUR = (at(2026, 12, 30, 10, 59, 30), at(2026, 12, 30, 11, 0, 30))
DAY = (at(2026, 12, 29, 23, 59, 30), at(2026, 12, 30, 0, 0, 30))
WEEK = (at(2026, 12, 27, 23, 59, 30), at(2026, 12, 28, 0, 0, 30))
MONTH = (at(2026, 12, 31, 23, 59, 30), at(2027, 1, 1, 0, 0, 30))


@pytest.mark.parametrize(
    ("period", "moments", "renewed"),
    [
        ("hourly", HOUR, True),
        ("daily", HOUR, False),
        ("daily", DAY, True),
        ("weekly", DAY, False),
        ("weekly", WEEK, True),
        ("monthly", WEEK, False),
        ("monthly", MONTH, True),
    ],
)
def test_budget_period_scopes_the_callers_remaining_budget(
    api_client: TestClient,
    auth: Auth,
    monkeypatch: pytest.MonkeyPatch,
    period: str,
    moments: tuple[datetime, datetime],
    renewed: bool,
) -> None:
    """The caller sends the same 0.05 twice: the second is a stale figure within its period
    (0.029 of it is spent: 0.021 buys no node) and a fresh one in the next period."""
    first_at, second_at = moments
    monkeypatch.setattr(api.coordinator, "utcnow", lambda: first_at)
    first = decision_of(post(api_client, auth, budget(period)))["routingDecision"]
    monkeypatch.setattr(api.coordinator, "utcnow", lambda: second_at)
    second = post(api_client, auth, budget(period))

    assert first["selectedNode"]["nodeId"] == "stripe_primary_us_east"
    assert first["budgetBound"] == {
        "bound": "caller",
        "period": period,
        "remaining": 0.05,
        "callerRemaining": 0.05,
        "serverRemaining": 5000.0,
    }
    if renewed:
        decision = decision_of(second)["routingDecision"]
        assert decision["budgetBound"]["callerRemaining"] == 0.05
    else:
        assert second.status_code == 503, second.text
        excluded = second.json()["error"]["details"]["excludedNodes"]
        detail = {e["nodeId"]: e["detail"] for e in excluded}["stripe_primary_us_east"]
        assert detail == "cost 0.029 above remaining budget 0.021"


def test_each_caller_has_its_own_budget(api_client: TestClient, token: Callable[..., str]) -> None:
    def as_caller(subject: str) -> Any:
        headers = {"Authorization": f"Bearer {token(Role.operator, sub=subject)}"}
        return api_client.post(URL, json=budget("daily"), headers=headers)

    assert as_caller("billing").status_code == 200
    assert as_caller("billing").status_code == 503
    # another caller's figure is its own
    assert as_caller("dispatch").status_code == 200


def test_server_bound_is_named_when_tighter(api_client: TestClient, auth: Auth) -> None:
    decision = decision_of(post(api_client, auth, budget("monthly", remaining=1e6)))

    assert decision["routingDecision"]["budgetBound"] == {
        "bound": "server",
        "period": "daily",
        "remaining": 5000.0,
        "callerRemaining": 1e6,
        "serverRemaining": 5000.0,
    }
