"""GET active-coordinations: an emergency carries its deadline (read by clients deciding
locally, clients/python)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from conftest import TEST_KEYS
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.auth import Role
from store.base import utcnow
from store.crypto import FieldCipher
from store.db import transaction
from store.emergencies import open_emergency

BASE = "/api/v1/enhanced-traffic-coordination"


def test_an_active_emergency_is_listed_with_its_deadline(
    api_client: TestClient,
    auth: Callable[..., dict[str, str]],
    sessions: sessionmaker[Session],
) -> None:
    started = utcnow()
    deadline = started + timedelta(minutes=30)
    with transaction(sessions) as session:
        open_emergency(
            session=session,
            workflow_id="emergency:stripe",
            coordination_id="emergency_test_deadline",
            service="stripe",
            operation="payment_processing",
            emergency_reason="card processor outage",
            business_justification="checkout is down",
            max_budget_override=5000.0,
            started_at=started,
            deadline=deadline,
            cipher=FieldCipher.from_keys(TEST_KEYS),
        )
    response = api_client.get(BASE + "/active-coordinations", headers=auth(Role.viewer))
    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]["coordinations"]
    assert (item["kind"], item["serviceName"], item["phase"]) == ("emergency", "stripe", "active")
    assert datetime.fromisoformat(item["deadline"]) == deadline
