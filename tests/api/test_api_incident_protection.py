"""Cascade prevention on execute-coordination: an open incident's blast radius budgets retries
and keeps the last of the budget for CRITICAL/HIGH traffic; nothing changes without one.

The incident is written to the store as its workflow would record it (the workflow's side is
tested in tests/workflows/test_incident_workflow.py and tests/api/test_api_incidents.py).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from test_api_coordination_seed import SEED_REQUEST, URL

from api.auth import Role
from api.runtime import ApiRuntime
from routing.budget import period_start
from routing.types import BudgetPeriod
from store.base import utcnow
from store.db import transaction
from store.models import BudgetSpend, Event, IncidentRow


def open_incident(
    sessions: sessionmaker[Session], client: TestClient, radius: list[str], ended: bool = False
) -> str:
    """An incident row guarding `radius`, and the API's snapshot reloaded."""
    now = utcnow()
    incident_id = f"incident_{int(now.timestamp())}_protect{len(radius)}"
    with transaction(sessions) as session:
        session.add(
            IncidentRow(
                incident_id=incident_id,
                workflow_id=f"incident:{incident_id}",
                status="ended" if ended else "open",
                phase="recovering",
                opened_at=now - timedelta(minutes=2),
                services=radius[:1],
                blast_radius=[] if ended else radius,
            )
        )
    runtime(client).snapshot.refresh()
    return incident_id


def runtime(client: TestClient) -> ApiRuntime:
    value: ApiRuntime = client.app.state.runtime  # type: ignore[attr-defined]
    return value


def spend(sessions: sessionmaker[Session], client: TestClient, service: str, spent: float) -> None:
    now = utcnow()
    with transaction(sessions) as session:
        session.add(
            BudgetSpend(
                service=service,
                period_start=period_start(BudgetPeriod.daily, now),
                period="daily",
                spent=spent,
                decisions=1,
            )
        )
    runtime(client).snapshot.refresh()


def request(
    priority: str = "CRITICAL",
    criticality: str = "REVENUE_BLOCKING",
    failed: list[str] | None = None,
) -> dict[str, Any]:
    body = copy.deepcopy(SEED_REQUEST)
    metadata = body["routingContext"]["requestMetadata"]
    metadata["priority"] = priority
    metadata["businessCriticality"] = criticality
    # Without the seed's urgency and operational priority, which would escalate it to CRITICAL.
    body["businessContext"] = {"revenueImpact": 5000, "customerImpact": "moderate"}
    if failed is not None:
        body["routingContext"]["failedProviders"] = failed
    return body


def refused_count(client: TestClient, reason: str) -> float:
    text = client.get("/metrics").text
    pattern = rf'switchyard_incident_refused_total{{reason="{reason}",service="stripe"}} (\S+)'
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


def test_no_incident_no_block_and_the_seed_answer_is_unchanged(
    api_client: TestClient, auth: Callable[..., dict[str, str]], sessions: sessionmaker[Session]
) -> None:
    open_incident(sessions, api_client, ["stripe"], ended=True)  # an ended one guards nothing
    response = api_client.post(URL, json=SEED_REQUEST, headers=auth(Role.operator))
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert "incident" not in data
    assert data["backendAgentIntegration"]["crossStreamCoordinated"] is True
    assert data["metadata"]["appliedOptimizations"] == [
        "intelligent_routing",
        "backend_agent_coordination",
    ]


def test_a_protected_decision_names_its_incident_and_protections(
    api_client: TestClient, auth: Callable[..., dict[str, str]], sessions: sessionmaker[Session]
) -> None:
    incident_id = open_incident(sessions, api_client, ["stripe", "avalara"])
    body = request()
    body["backendAgentContext"] = {}  # no stream of its own: coordinated by the incident alone
    body["coordinationRequirements"] = {}
    response = api_client.post(URL, json=body, headers=auth(Role.operator))
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    block = data["incident"]
    assert block["incidentId"] == incident_id
    assert block["protections"] == ["retry_budget", "priority_reservation"]
    assert (block["retriesPerRequest"], block["reservedShare"]) == (2, 0.3)
    assert data["backendAgentIntegration"]["crossStreamCoordinated"] is True
    assert data["backendAgentIntegration"]["errorStreamRegistered"] is False
    assert "cascade_protection" in data["metadata"]["appliedOptimizations"]


def test_retries_beyond_the_budget_are_refused_and_announced(
    api_client: TestClient, auth: Callable[..., dict[str, str]], sessions: sessionmaker[Session]
) -> None:
    incident_id = open_incident(sessions, api_client, ["stripe"])
    headers = auth(Role.operator)
    protector = runtime(api_client).incidents
    clock = [1000.0]  # held still, so the window does not depend on how fast the test runs
    protector.clock = lambda: clock[0]
    before = refused_count(api_client, "retry_budget_exhausted")
    # Three failed nodes named: more retries than one request may take during an incident.
    storm = request(
        failed=["stripe_primary_us_east", "stripe_secondary_us_west", "stripe_premium_emergency"]
    )
    response = api_client.post(URL, json=storm, headers=headers)
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "retry_budget_exhausted"
    assert incident_id in error["message"] and "2 are allowed" in error["message"]
    assert error["details"]["incidentId"] == incident_id
    # The service's retry budget: max(min_retries=10, 20% of first attempts) per minute.
    retry = request(failed=["stripe_primary_us_east"])
    codes = [api_client.post(URL, json=retry, headers=headers).status_code for _ in range(12)]
    assert codes == [200] * 10 + [503] * 2
    for _ in range(60):  # 60 first attempts let 12 retries through: 2 more
        assert api_client.post(URL, json=request(), headers=headers).status_code == 200
    codes = [api_client.post(URL, json=retry, headers=headers).status_code for _ in range(3)]
    assert codes == [200, 200, 503]
    assert refused_count(api_client, "retry_budget_exhausted") - before == 4
    clock[0] += 61  # a minute later the window is empty: retries go through again
    assert api_client.post(URL, json=retry, headers=headers).status_code == 200

    protector.announce(protector.take())
    with sessions() as session:
        events = session.scalars(
            select(Event).where(Event.event_type == "incident_protection").order_by(Event.id)
        ).all()
    # The announcer may have sent some already (once a second): every refusal once, in all.
    assert sum(e.payload["refused"] for e in events) == 4
    assert {e.payload["incidentId"] for e in events} == {incident_id}
    assert {e.payload["reason"] for e in events} == {"retry_budget_exhausted"}


@pytest.mark.parametrize(
    ("priority", "criticality", "code"),
    [
        ("LOW", "STANDARD", 503),
        ("NORMAL", "LOW", 503),
        ("LOW", "REVENUE_BLOCKING", 200),
        ("HIGH", "STANDARD", 200),
        ("CRITICAL", "STANDARD", 200),
    ],
)
def test_the_last_of_the_budget_is_kept_for_important_traffic(
    api_client: TestClient,
    auth: Callable[..., dict[str, str]],
    sessions: sessionmaker[Session],
    priority: str,
    criticality: str,
    code: int,
) -> None:
    # stripe's daily budget is 5000: 4000 spent leaves 20%, under the 30% kept back.
    spend(sessions, api_client, "stripe", 4000)
    body = request(priority, criticality)
    body["routingContext"]["budgetConstraints"] = {}
    unguarded = api_client.post(URL, json=body, headers=auth(Role.operator))
    assert unguarded.status_code == 200, unguarded.text  # no incident: nothing is shed
    open_incident(sessions, api_client, ["stripe"])
    response = api_client.post(URL, json=body, headers=auth(Role.operator))
    assert response.status_code == code, response.text
    if code == 503:
        error = response.json()["error"]
        assert error["code"] == "shed_for_incident"
        assert "kept for CRITICAL and HIGH" in error["message"]
