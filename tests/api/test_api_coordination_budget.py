"""Server-side budgets on execute-coordination: never overspent, even by concurrent requests."""

from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker
from test_api_coordination_seed import SEED_REQUEST, URL

import api.decision_writer
from api.auth import Role
from store.db import transaction
from store.decisions import Booking, DecisionCharge, Refusal, RefusalKind
from store.models import BudgetSpend, Coordination, Emergency, Event, ProviderService

Auth = Callable[..., dict[str, str]]
EPSILON = 1e-9


def set_budget(
    client: TestClient, sessions: sessionmaker[Session], service: str, limit: float
) -> None:
    """Change a service's budget in the store and reload the API's snapshot."""
    with transaction(sessions) as session:
        session.execute(
            update(ProviderService)
            .where(ProviderService.name == service)
            .values(budget_limit=limit)
        )
    client.app.state.runtime.snapshot.refresh()  # type: ignore[attr-defined]


def spend(sessions: sessionmaker[Session], service: str) -> tuple[float, int]:
    """Money booked and decisions charged for the service, as committed."""
    with sessions() as session:
        row = session.execute(
            select(
                func.coalesce(func.sum(BudgetSpend.spent), 0.0),
                func.coalesce(func.sum(BudgetSpend.decisions), 0),
            ).where(BudgetSpend.service == service)
        ).one()
        return float(row[0]), int(row[1])


def recorded(sessions: sessionmaker[Session], service: str) -> tuple[int, float]:
    """Recorded coordinations of the service and the sum of their estimated costs."""
    with sessions() as session:
        row = session.execute(
            select(func.count(), func.coalesce(func.sum(Coordination.estimated_cost), 0.0)).where(
                Coordination.service == service
            )
        ).one()
        return int(row[0]), float(row[1])


def with_budget(remaining: float | None) -> dict[str, Any]:
    """The seed request with another client remainingBudget (None: no client budget)."""
    body = copy.deepcopy(SEED_REQUEST)
    constraints = body["routingContext"]["budgetConstraints"]
    if remaining is None:
        del constraints["remainingBudget"]
    else:
        constraints["remainingBudget"] = remaining
    return body


def reasons(response: Any) -> dict[str, str]:
    """nodeId -> reason of a 503 no_eligible_node answer."""
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "no_eligible_node"
    return {e["nodeId"]: e["reason"] for e in error["details"]["excludedNodes"]}


def test_decision_and_spend_are_committed_before_the_answer(
    api_client: TestClient, auth: Auth, sessions: sessionmaker[Session]
) -> None:
    for n in range(1, 4):
        response = api_client.post(URL, json=SEED_REQUEST, headers=auth(Role.operator))
        assert response.status_code == 200
        data = response.json()["data"]
        # a new connection sees the row and the charge as soon as the answer arrived
        with sessions() as session:
            row = session.get(Coordination, data["coordinationId"])
            assert row is not None
            assert row.node_id == data["routingDecision"]["selectedNode"]["nodeId"]
            assert row.estimated_cost == data["routingDecision"]["estimatedCost"]
            assert row.response["routingDecision"] == data["routingDecision"]
            assert row.backend_integrated is True
            events = session.scalar(
                select(func.count())
                .select_from(Event)
                .where(Event.coordination_id == data["coordinationId"])
            )
            assert events == 2
        spent, decisions = spend(sessions, "stripe")
        assert decisions == n
        assert spent == pytest.approx(0.029 * n)


def test_server_budget_is_spent_then_refused(
    api_client: TestClient, auth: Auth, sessions: sessionmaker[Session]
) -> None:
    set_budget(api_client, sessions, "stripe", 0.1)
    served = 0
    while True:
        response = api_client.post(URL, json=SEED_REQUEST, headers=auth(Role.operator))
        if response.status_code != 200:
            break
        served += 1
        assert served < 10, "the budget was never enforced"
        spent, _ = spend(sessions, "stripe")
        assert spent <= 0.1 + EPSILON
    # 3 x 0.029 = 0.087; a fourth request at 0.029 or 0.032 would pass 0.1
    assert served == 3
    assert reasons(response) == {
        "stripe_primary_us_east": "budget_exhausted",
        "stripe_secondary_us_west": "budget_exhausted",
        "stripe_premium_emergency": "emergency_only",
    }
    spent, decisions = spend(sessions, "stripe")
    assert spent == pytest.approx(0.087)
    assert decisions == 3
    assert recorded(sessions, "stripe") == (3, pytest.approx(0.087))
    # still refused once the snapshot has caught up with the spend
    api_client.app.state.runtime.snapshot.refresh()  # type: ignore[attr-defined]
    again = api_client.post(URL, json=SEED_REQUEST, headers=auth(Role.operator))
    assert reasons(again)["stripe_primary_us_east"] == "budget_exhausted"
    # other services keep their own budgets
    twilio = {"serviceName": "twilio", "operation": "sms"}
    assert api_client.post(URL, json=twilio, headers=auth(Role.operator)).status_code == 200


def test_tighter_of_client_and_server_budget_wins(
    api_client: TestClient, auth: Auth, sessions: sessionmaker[Session]
) -> None:
    # Room for the primary (0.029) but not the secondary (0.032), from either side.
    set_budget(api_client, sessions, "stripe", 0.03)
    server_tight = api_client.post(URL, json=with_budget(1000), headers=auth(Role.operator))
    assert server_tight.status_code == 200
    excluded = server_tight.json()["data"]["routingDecision"]["excludedNodes"]
    assert {e["nodeId"]: e["reason"] for e in excluded}["stripe_secondary_us_west"] == (
        "budget_exhausted"
    )
    # 0.001 left on the server now: even a generous client budget cannot buy a request
    refused = api_client.post(URL, json=with_budget(1000), headers=auth(Role.operator))
    assert reasons(refused)["stripe_primary_us_east"] == "budget_exhausted"

    set_budget(api_client, sessions, "stripe", 5000)
    client_tight = api_client.post(URL, json=with_budget(0.03), headers=auth(Role.operator))
    assert client_tight.status_code == 200
    excluded = client_tight.json()["data"]["routingDecision"]["excludedNodes"]
    detail = {e["nodeId"]: e["detail"] for e in excluded}["stripe_secondary_us_west"]
    assert detail == "cost 0.032 above remaining budget 0.03"
    refused = api_client.post(URL, json=with_budget(0.02), headers=auth(Role.operator))
    assert reasons(refused)["stripe_primary_us_east"] == "budget_exhausted"
    assert spend(sessions, "stripe") == (pytest.approx(0.058), 2)


def test_concurrent_requests_never_overspend(
    api_client: TestClient, auth: Auth, sessions: sessionmaker[Session]
) -> None:
    limit = 0.5  # 17 requests at 0.029; 48 are sent
    set_budget(api_client, sessions, "stripe", limit)
    headers = auth(Role.operator)
    body = with_budget(None)

    def send(_: int) -> int:
        return int(api_client.post(URL, json=body, headers=headers).status_code)

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(send, range(48)))
    assert set(statuses) <= {200, 503}, statuses
    served = statuses.count(200)
    spent, decisions = spend(sessions, "stripe")
    assert spent <= limit + EPSILON
    assert decisions == served
    count, cost = recorded(sessions, "stripe")
    assert count == served
    assert cost == pytest.approx(spent)
    # nothing fitting is left: the budget was used, not lost to refused races
    assert limit - spent < 0.032
    assert served >= 15


def test_a_charge_refused_twice_is_503_not_500(
    api_client: TestClient,
    auth: Auth,
    stripe_emergency: Emergency,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The snapshot shows an active emergency with headroom, but the store refuses every charge
    # (the emergency just ended and the budget is spent by another replica): after the retry
    # the answer must be a 503 envelope, not an internal error.
    def refuse(_: Any, charges: list[DecisionCharge]) -> Booking:
        detail = "daily budget of 5000 for 'stripe' is spent"
        return Booking([Refusal(RefusalKind.budget, detail, 5000.0) for _ in charges], 0.0)

    monkeypatch.setattr(api.decision_writer, "book_decisions", refuse)
    response = api_client.post(URL, json=SEED_REQUEST, headers=auth(Role.operator))
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "budget_exhausted"
    assert error["details"]["serviceName"] == "stripe"
