"""When the store refuses what the snapshot allowed, the decision is made again, not mislabelled."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from api.auth import Role
from store.base import utcnow
from store.db import transaction
from store.models import BudgetSpend, Coordination, Emergency, ProviderService

URL = "/api/v1/enhanced-traffic-coordination/execute-coordination"
BODY = {"serviceName": "stripe", "operation": "payment_processing"}


def freeze_snapshot(client: TestClient) -> None:
    """Load the snapshot once and stop its background reloads: it goes stale on purpose."""
    cache = client.app.state.runtime.snapshot  # type: ignore[attr-defined]
    cache.refresh()
    cache.stop()


def test_emergency_ended_after_the_snapshot_is_not_claimed(
    api_client: TestClient, auth: Callable[..., dict[str, str]], sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as session:
        session.add(
            Emergency(
                coordination_id="emergency_1_abcdef",
                workflow_id="emergency:stripe",
                service="stripe",
                emergency_reason="r",
                business_justification="j",
                max_budget_override=100.0,
                deadline=utcnow() + timedelta(minutes=30),
            )
        )
    freeze_snapshot(api_client)
    # The emergency ends in the store; this API process has not reloaded yet.
    with transaction(sessions) as session:
        session.execute(update(Emergency).values(status="ended", ended_at=utcnow()))

    response = api_client.post(URL, json=BODY, headers=auth(Role.operator))

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["routingDecision"]["selectedNode"]["nodeId"] != "stripe_premium_emergency"
    assert data["metadata"]["coordinationStrategy"] != "emergency_coordination"
    assert "emergency_override" not in data["metadata"]["appliedOptimizations"]
    with sessions() as session:
        row = session.get(Coordination, data["coordinationId"])
        assert row is not None and row.emergency_workflow_id is None
        assert session.scalar(select(BudgetSpend.spent)) == row.estimated_cost


def test_stale_budget_figure_still_uses_what_is_left(
    api_client: TestClient, auth: Callable[..., dict[str, str]], sessions: sessionmaker[Session]
) -> None:
    # Budget 0.1: after two primary decisions (0.058) only 0.042 is left, which the primary
    # (0.029) still fits but the snapshot, reloaded before the spend, does not know.
    with transaction(sessions) as session:
        session.execute(
            update(ProviderService).where(ProviderService.name == "stripe").values(budget_limit=0.1)
        )
    freeze_snapshot(api_client)
    nodes = []
    for _ in range(4):
        response = api_client.post(URL, json=BODY, headers=auth(Role.operator))
        nodes.append(response.status_code)
    with sessions() as session:
        spent = session.scalar(select(BudgetSpend.spent))
    assert nodes[:3] == [200, 200, 200]
    assert nodes[3] == 503
    assert spent is not None and spent <= 0.1
