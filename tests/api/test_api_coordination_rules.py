"""execute-coordination beyond the contract's example: validation, auth, refusals, determinism."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from test_api_coordination_seed import SEED_REQUEST, URL

from api.auth import Role
from store.db import transaction
from store.models import ErrorStream, MonitoringSession, NodeHealthRow

Auth = Callable[..., dict[str, str]]


def request_with(*changes: tuple[str, Any]) -> dict[str, Any]:
    """The seed request with dotted paths set (a value of ... deletes the key)."""
    body = copy.deepcopy(SEED_REQUEST)
    for path, value in changes:
        *parents, leaf = path.split(".")
        target: dict[str, Any] = body
        for key in parents:
            target = target[key]
        if value is ...:
            del target[leaf]
        else:
            target[leaf] = value
    return body


def refused_fields(response: Any) -> list[str]:
    """The fields a 422 envelope names."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "validation_error"
    fields = [d["field"] for d in body["error"]["details"]]
    assert body["error"]["message"] == "invalid request: " + ", ".join(sorted(set(fields)))
    return fields


# (changes, the field the 422 must name)
INVALID: list[tuple[list[tuple[str, Any]], str]] = [
    ([("serviceName", "paypal")], "serviceName"),
    ([("serviceName", ...)], "serviceName"),
    ([("serviceName", "")], "serviceName"),
    ([("serviceName", 42)], "serviceName"),
    ([("operation", ...)], "operation"),
    (
        [("routingContext.budgetConstraints.remainingBudget", -1)],
        "routingContext.budgetConstraints.remainingBudget",
    ),
    (
        [("routingContext.budgetConstraints.remainingBudget", "plenty")],
        "routingContext.budgetConstraints.remainingBudget",
    ),
    (
        [("routingContext.budgetConstraints.costPerRequestLimit", 0)],
        "routingContext.budgetConstraints.costPerRequestLimit",
    ),
    (
        [("routingContext.budgetConstraints.budgetPeriod", "fortnightly")],
        "routingContext.budgetConstraints.budgetPeriod",
    ),
    (
        [("routingContext.requestMetadata.priority", "URGENT")],
        "routingContext.requestMetadata.priority",
    ),
    ([("routingContext.preferredStrategy", "CHEAPEST")], "routingContext.preferredStrategy"),
    (
        [("routingContext.performanceContext.targetLatency", [300])],
        "routingContext.performanceContext.targetLatency",
    ),
    (
        [("coordinationRequirements.requireBackendAgentSync", "sometimes")],
        "coordinationRequirements.requireBackendAgentSync",
    ),
    ([("backendAgentContext", "error_stream_stripe_001")], "backendAgentContext"),
    ([("unexpected", True)], "unexpected"),
    (
        [("routingContext.budgetConstraints.currency", "EUR")],
        "routingContext.budgetConstraints.currency",
    ),
    (
        [("routingContext.failedProviders", "stripe_primary_us_east")],
        "routingContext.failedProviders",
    ),
    (
        [("routingContext.failedProviders", ["stripe_primary_us_east", "paypal_main"])],
        "routingContext.failedProviders.1",
    ),
    (
        [("routingContext.failedProviders", ["samsara_primary"])],
        "routingContext.failedProviders.0",
    ),
]


def test_invalid_requests_are_422_naming_the_field(api_client: TestClient, auth: Auth) -> None:
    for changes, field in INVALID:
        response = api_client.post(URL, json=request_with(*changes), headers=auth(Role.operator))
        assert field in refused_fields(response), (changes, response.text)


def test_unknown_service_names_the_known_ones(api_client: TestClient, auth: Auth) -> None:
    response = api_client.post(
        URL, json=request_with(("serviceName", "paypal")), headers=auth(Role.operator)
    )
    [detail] = response.json()["error"]["details"]
    assert detail["field"] == "serviceName"
    assert "paypal" in detail["message"] and "stripe" in detail["message"]


def test_body_that_is_not_json_is_422(api_client: TestClient, auth: Auth) -> None:
    headers = {**auth(Role.operator), "Content-Type": "application/json"}
    response = api_client.post(URL, content=b"{not json", headers=headers)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


def test_auth_is_required_and_operate_permission_checked(
    api_client: TestClient, auth: Auth
) -> None:
    missing = api_client.post(URL, json=SEED_REQUEST)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "unauthorized"
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    forged = api_client.post(URL, json=SEED_REQUEST, headers={"Authorization": "Bearer x.y.z"})
    assert forged.status_code == 401
    for role in (Role.viewer, Role.incident_commander):
        refused = api_client.post(URL, json=SEED_REQUEST, headers=auth(role))
        assert refused.status_code == 403, role
        error = refused.json()["error"]
        assert error["code"] == "forbidden"
        assert "operate" in error["message"]
    for role in (Role.operator, Role.admin):
        assert api_client.post(URL, json=SEED_REQUEST, headers=auth(role)).status_code == 200


def test_no_eligible_node_is_503_naming_each_reason(api_client: TestClient, auth: Auth) -> None:
    body = request_with(("routingContext.budgetConstraints.costPerRequestLimit", 0.001))
    response = api_client.post(URL, json=body, headers=auth(Role.operator))
    assert response.status_code == 503, response.text
    envelope = response.json()
    assert envelope["success"] is False
    error = envelope["error"]
    assert error["code"] == "no_eligible_node"
    assert "stripe" in error["message"]
    reasons = {e["nodeId"]: e["reason"] for e in error["details"]["excludedNodes"]}
    assert reasons == {
        "stripe_primary_us_east": "cost_above_limit",
        "stripe_secondary_us_west": "cost_above_limit",
        "stripe_premium_emergency": "emergency_only",
    }
    details = {e["nodeId"]: e["detail"] for e in error["details"]["excludedNodes"]}
    assert details["stripe_primary_us_east"] == "cost 0.029 above costPerRequestLimit 0.001"


def test_client_remaining_budget_below_every_cost_is_503(
    api_client: TestClient, auth: Auth
) -> None:
    body = request_with(("routingContext.budgetConstraints.remainingBudget", 0.02))
    response = api_client.post(URL, json=body, headers=auth(Role.operator))
    assert response.status_code == 503
    excluded = response.json()["error"]["details"]["excludedNodes"]
    assert [e["reason"] for e in excluded] == [
        "budget_exhausted",
        "budget_exhausted",
        "emergency_only",
    ]
    assert "remaining budget 0.02" in excluded[0]["detail"]


def test_same_request_gives_the_same_decision(api_client: TestClient, auth: Auth) -> None:
    def decide() -> dict[str, Any]:
        response = api_client.post(URL, json=SEED_REQUEST, headers=auth(Role.operator))
        assert response.status_code == 200
        data: dict[str, Any] = response.json()["data"]
        return data

    first, second = decide(), decide()
    assert first["coordinationId"] != second["coordinationId"]
    # Only the caller's budget moved: the first decision's spend is tracked for the period.
    first_bound = first["routingDecision"].pop("budgetBound")
    second_bound = second["routingDecision"].pop("budgetBound")
    assert first_bound["callerRemaining"] == 1000
    assert second_bound["callerRemaining"] == round(1000 - 0.029, 6)
    assert first["routingDecision"] == second["routingDecision"]
    assert first["businessOutcome"] == second["businessOutcome"]
    assert first["metadata"] == second["metadata"]


def test_preferred_strategy_is_honoured(
    api_client: TestClient, auth: Auth, sessions: sessionmaker[Session]
) -> None:
    # The primary is now the healthiest but the slowest stripe node.
    with transaction(sessions) as session:
        session.execute(
            update(NodeHealthRow)
            .where(NodeHealthRow.node_id == "stripe_primary_us_east")
            .values(latency_p50_ms=400.0, health_score=96.0)
        )
    api_client.app.state.runtime.snapshot.refresh()  # type: ignore[attr-defined]
    expected = {
        "HEALTH_BASED": "stripe_primary_us_east",
        "COST_OPTIMIZED": "stripe_primary_us_east",
        "LATENCY_OPTIMIZED": "stripe_secondary_us_west",
        "AVAILABILITY_FOCUSED": "stripe_primary_us_east",
    }
    for strategy, node in expected.items():
        body = request_with(("routingContext.preferredStrategy", strategy))
        response = api_client.post(URL, json=body, headers=auth(Role.operator))
        assert response.status_code == 200, response.text
        decision = response.json()["data"]["routingDecision"]
        assert decision["routingStrategy"] == strategy
        assert decision["strategyReason"] == "client_preference"
        assert decision["selectedNode"]["nodeId"] == node, strategy
        assert f"using {strategy} strategy" in decision["decisionReason"]
    # without a preference the critical request is routed on health
    response = api_client.post(URL, json=SEED_REQUEST, headers=auth(Role.operator))
    decision = response.json()["data"]["routingDecision"]
    assert (decision["routingStrategy"], decision["strategyReason"]) == (
        "HEALTH_BASED",
        "critical_traffic",
    )


@pytest.mark.parametrize("strategy", ["HEALTH_BASED", "HYBRID_OPTIMIZATION"])
def test_minimal_request_is_accepted(api_client: TestClient, auth: Auth, strategy: str) -> None:
    body = {
        "serviceName": "twilio",
        "operation": "sms",
        "routingContext": {"preferredStrategy": strategy},
    }
    response = api_client.post(URL, json=body, headers=auth(Role.operator))
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["routingDecision"]["selectedNode"]["nodeId"] == "twilio_primary_us_east"
    assert data["backendAgentIntegration"]["errorStreamRegistered"] is False
    assert data["metadata"]["coordinationStrategy"] == "standard_coordination"


def test_repeated_syncs_touch_the_stream_and_the_session(
    api_client: TestClient, auth: Auth, sessions: sessionmaker[Session]
) -> None:
    for _ in range(2):
        response = api_client.post(URL, json=SEED_REQUEST, headers=auth(Role.operator))
        assert response.status_code == 200
    with sessions() as session:
        stream = session.get(ErrorStream, "error_stream_stripe_001")
        assert stream is not None
        assert stream.sync_count == 2
        assert stream.last_seen > stream.first_seen
        monitor = session.scalars(select(MonitoringSession)).one()
        assert monitor.touches == 2


def test_a_retry_names_the_nodes_it_failed_on(api_client: TestClient, auth: Auth) -> None:
    """failedProviders makes the request a retry: another healthy node first (decide_retry)."""
    headers = auth(Role.operator)
    body = request_with(("routingContext.failedProviders", ["stripe_primary_us_east"]))
    response = api_client.post(URL, json=body, headers=headers)
    assert response.status_code == 200, response.text
    decision = response.json()["data"]["routingDecision"]
    assert decision["selectedNode"]["nodeId"] == "stripe_secondary_us_west"
    excluded = {e["nodeId"]: e["reason"] for e in decision["excludedNodes"]}
    assert excluded["stripe_primary_us_east"] == "failed_provider"

    # Every regular node tried: a healthy tried node beats no answer (tier 2), and the
    # emergency-only node stays out of an ordinary request.
    both = ["stripe_primary_us_east", "stripe_secondary_us_west"]
    response = api_client.post(
        URL, json=request_with(("routingContext.failedProviders", both)), headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["routingDecision"]["selectedNode"]["nodeId"] in both
