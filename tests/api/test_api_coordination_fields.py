"""The coordination answer's computed fields: monitoringActive follows the health sweep, not
the request's flag; crossStreamCoordinated follows the correlation check (docs/ROUTING.md,
Answer fields)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from api.auth import Role
from routing.health import MonitoringConfig
from store.base import utcnow
from store.db import transaction
from store.health import sweep
from store.models import MonitoringSession, ProviderService

URL = "/api/v1/enhanced-traffic-coordination/execute-coordination"
Auth = Callable[..., dict[str, str]]


def _decide(client: TestClient, auth: Auth, **body: Any) -> dict[str, Any]:
    request = {"serviceName": "stripe", "operation": "payment_processing", **body}
    response = client.post(URL, json=request, headers=auth(Role.operator))
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def _refresh(client: TestClient) -> None:
    client.app.state.runtime.snapshot.refresh()  # type: ignore[attr-defined]


MONITORED = {"coordinationRequirements": {"requireRealTimeMonitoring": True}}


def test_monitoring_active_follows_the_sweep_not_the_flag(
    api_client: TestClient, auth: Auth, sessions: sessionmaker[Session]
) -> None:
    # Asked for, but no sweep has assessed the nodes: a session opens, monitoring is not live.
    asked = _decide(api_client, auth, **MONITORED)
    assert asked["backendAgentIntegration"]["monitoringActive"] is False
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(MonitoringSession)) == 1

    with transaction(sessions) as session:
        sweep(session, utcnow(), MonitoringConfig())
    _refresh(api_client)
    # Not asked for, and live all the same: the sweep assessed stripe's nodes just now.
    unasked = _decide(api_client, auth)
    assert unasked["backendAgentIntegration"]["monitoringActive"] is True

    # The last sweep an hour ago: nobody is watching any more.
    with transaction(sessions) as session:
        session.execute(update(ProviderService).values(assessed_at=utcnow() - timedelta(hours=1)))
    _refresh(api_client)
    stale = _decide(api_client, auth, **MONITORED)
    assert stale["backendAgentIntegration"]["monitoringActive"] is False
