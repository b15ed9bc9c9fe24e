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
from store.models import IncidentRow, MonitoringSession, ProviderService

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


def test_cross_stream_coordinated_when_the_stream_or_service_was_checked(
    api_client: TestClient, auth: Auth, sessions: sessionmaker[Session]
) -> None:
    def integration(**agent: Any) -> dict[str, Any]:
        data = _decide(api_client, auth, backendAgentContext=agent)
        block: dict[str, Any] = data["backendAgentIntegration"]
        return block

    # Nothing to check: no stream registered, no incident guarding stripe.
    assert integration()["crossStreamCoordinated"] is False
    assert integration(errorStreamId="unsynced")["crossStreamCoordinated"] is False
    # A registered stream is checked against the open incidents: none holds it.
    checked = integration(errorStreamId="stream_a", requireBackendAgentSync=True)
    assert checked["crossStreamCoordinated"] is True
    assert "correlatedIncidentId" not in checked

    # An open incident holds stream_b (not guarding stripe: its blast radius is elsewhere).
    now = utcnow()
    with transaction(sessions) as session:
        session.add(
            IncidentRow(
                incident_id="incident_holding_b",
                workflow_id="incident:incident_holding_b",
                status="open",
                phase="recovering",
                opened_at=now - timedelta(minutes=1),
                last_error_at=now - timedelta(minutes=1),
                services=["samsara"],
                blast_radius=["samsara"],
                streams=["stream_b"],
            )
        )
    _refresh(api_client)
    held = integration(errorStreamId="stream_b", requireBackendAgentSync=True)
    assert held["crossStreamCoordinated"] is True
    assert held["correlatedIncidentId"] == "incident_holding_b"
    other = integration(errorStreamId="stream_a", requireBackendAgentSync=True)
    assert "correlatedIncidentId" not in other
    # Unregistered, the stream is not checked even though an incident holds it.
    assert integration(errorStreamId="stream_b")["crossStreamCoordinated"] is False
