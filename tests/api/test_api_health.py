"""GET health reports real checks: database, Temporal, and a worker polling the task queue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from harness import live_worker
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.routes import health as health_routes
from store.base import utcnow
from store.db import make_engine, make_session_factory, transaction
from store.models import IncidentRow
from switchyard.settings import Settings

URL = "/api/v1/enhanced-traffic-coordination/health"


def _health(settings: Settings) -> tuple[int, dict[str, Any]]:
    with TestClient(create_app(settings, prepare=False)) as client:
        response = client.get(URL)  # no token: health stays open
    return response.status_code, response.json()


async def test_degraded_without_a_worker_then_healthy_with_one(
    dev_env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(temporal_address=dev_env.client.service_client.config.target_host)

    status, body = await asyncio.to_thread(_health, settings)
    assert status == 200
    data = body["data"]
    assert data["status"] == "degraded"
    assert data["checks"]["database"]["status"] == "operational"
    assert data["checks"]["temporal"]["status"] == "operational"
    assert data["checks"]["worker"]["status"] == "degraded"
    assert data["backendAgentIntegration"]["recoveryService"] == "degraded"

    async with live_worker(dev_env.client, sessions, settings.temporal_task_queue):
        for _ in range(50):  # the poller shows up in the task queue description within ~1 s
            status, body = await asyncio.to_thread(_health, settings)
            if body["data"]["status"] == "healthy":
                break
            await asyncio.sleep(0.2)
    data = body["data"]
    assert data["status"] == "healthy", data["checks"]
    assert set(data["services"].values()) == {"operational"}
    assert set(data["backendAgentIntegration"].values()) == {"operational"}
    assert isinstance(data["activeCoordinations"], int)


def test_temporal_down_is_degraded_not_an_error(
    clean_store: Engine, make_settings: Callable[..., Settings]
) -> None:
    status, body = _health(make_settings(temporal_address="127.0.0.1:1"))
    assert status == 200
    assert body["data"]["status"] == "degraded"
    assert body["data"]["checks"]["temporal"]["status"] == "down"
    assert body["data"]["services"]["fallbackManager"] == "down"


def test_database_down_is_unhealthy_503(
    clean_store: Engine, make_settings: Callable[..., Settings]
) -> None:
    app = create_app(make_settings(temporal_address="127.0.0.1:1"), prepare=False)
    with TestClient(app) as client:
        # The running app loses its database: nothing answers on port 1.
        unreachable = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
        app.state.runtime.sessions = make_session_factory(unreachable)
        response = client.get(URL)
    assert response.status_code == 503
    assert response.json()["data"]["status"] == "unhealthy"
    assert response.json()["data"]["checks"]["database"]["status"] == "down"


def test_the_cross_stream_coordinator_is_the_correlation_not_the_database(
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(temporal_address="127.0.0.1:1")
    now = utcnow()
    with transaction(sessions) as session:
        session.add(
            IncidentRow(
                incident_id="incident_health_probe",
                workflow_id="incident:incident_health_probe",
                status="open",
                phase="recovering",
                opened_at=now,
                last_error_at=now,
                services=["stripe"],
                blast_radius=["stripe"],
            )
        )
    _, body = _health(settings)
    correlation = body["data"]["checks"]["correlation"]
    assert correlation["status"] == "operational"
    assert "1 open incident" in correlation["detail"]
    assert body["data"]["backendAgentIntegration"]["crossStreamCoordinator"] == "operational"

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("correlation broken")

    monkeypatch.setattr(health_routes, "correlate_error", broken)
    _, body = _health(settings)
    data = body["data"]
    assert data["checks"]["database"]["status"] == "operational"
    assert data["checks"]["correlation"]["status"] == "down"
    assert data["backendAgentIntegration"]["crossStreamCoordinator"] == "down"
    assert data["status"] == "degraded"
