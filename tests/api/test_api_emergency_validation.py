"""emergency-override refusals that need no workflow engine: 401/403/422, and 503 + nothing written
when Temporal is unreachable."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.auth import Role
from store.models import AppliedEffect, Coordination, Emergency, Event
from switchyard.settings import Settings

URL = "/api/v1/enhanced-traffic-coordination/emergency-override"
SEED = {
    "serviceName": "stripe",
    "operation": "payment_processing",
    "emergencyReason": "Critical payment processing outage affecting $2M+ revenue stream",
    "maxBudgetOverride": 5000,
    "durationMinutes": 30,
    "businessJustification": "Revenue protection during Black Friday peak traffic",
}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def offline_api(
    clean_store: Engine, make_settings: Callable[..., Settings]
) -> Iterator[TestClient]:
    """The API with Temporal pointed at a port nobody listens on."""
    settings = make_settings(temporal_address=f"127.0.0.1:{_closed_port()}")
    with TestClient(create_app(settings, prepare=False)) as client:
        yield client


def _with(**changes: Any) -> dict[str, Any]:
    body = {**SEED, **changes}
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_with(durationMinutes=0), "durationMinutes"),
        (_with(durationMinutes=1441), "durationMinutes"),
        (_with(durationMinutes="soon"), "durationMinutes"),
        (_with(maxBudgetOverride=0), "maxBudgetOverride"),
        (_with(maxBudgetOverride=-5), "maxBudgetOverride"),
        (_with(emergencyReason=None), "emergencyReason"),
        (_with(emergencyReason="   "), "emergencyReason"),
        (_with(emergencyReason="x" * 1001), "emergencyReason"),
        (_with(businessJustification=None), "businessJustification"),
        (_with(businessJustification=""), "businessJustification"),
        (_with(serviceName="no_such_service"), "serviceName"),
        (_with(unexpected=True), "unexpected"),
    ],
)
def test_invalid_requests_name_the_field(
    offline_api: TestClient, auth: Callable[..., dict[str, str]], body: dict[str, Any], field: str
) -> None:
    response = offline_api.post(URL, json=body, headers=auth(Role.incident_commander))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["message"]
    assert [d["field"] for d in error["details"]] == [field]


def test_limits_are_accepted(offline_api: TestClient, auth: Callable[..., dict[str, str]]) -> None:
    # Valid at both ends: the request gets past validation to the (unreachable) engine.
    for body in (_with(durationMinutes=1), _with(durationMinutes=1440, emergencyReason="x" * 1000)):
        response = offline_api.post(URL, json=body, headers=auth(Role.incident_commander))
        assert response.status_code == 503, response.text


def test_roles(offline_api: TestClient, auth: Callable[..., dict[str, str]]) -> None:
    assert offline_api.post(URL, json=SEED).status_code == 401
    for role in (Role.viewer, Role.operator):
        response = offline_api.post(URL, json=SEED, headers=auth(role))
        assert response.status_code == 403, response.text
        for action in ("extend", "cancel"):
            body = {"minutes": 5, "reason": "x"} if action == "extend" else {"reason": "x"}
            denied = offline_api.post(f"{URL}/stripe/{action}", json=body, headers=auth(role))
            assert denied.status_code == 403


def test_temporal_unreachable_is_503_and_writes_nothing(
    offline_api: TestClient, auth: Callable[..., dict[str, str]], sessions: sessionmaker[Session]
) -> None:
    response = offline_api.post(URL, json=SEED, headers=auth(Role.incident_commander))
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "temporal_unavailable"
    assert response.headers["Retry-After"] == "5"
    with sessions() as session:
        for model in (Emergency, Coordination, Event, AppliedEffect):
            assert session.scalar(select(func.count()).select_from(model)) == 0
    for action, body in (("extend", {"minutes": 5, "reason": "x"}), ("cancel", {"reason": "x"})):
        refused = offline_api.post(
            f"{URL}/stripe/{action}", json=body, headers=auth(Role.incident_commander)
        )
        assert refused.status_code == 503


def test_status_without_any_emergency_is_404(
    offline_api: TestClient, auth: Callable[..., dict[str, str]]
) -> None:
    # Temporal is down, so the store answers: it has no emergency for stripe.
    response = offline_api.get(f"{URL}/stripe", headers=auth(Role.viewer))
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"minutes": 0, "reason": "x"}, "minutes"),
        ({"minutes": 1441, "reason": "x"}, "minutes"),
        ({"minutes": 5, "reason": " "}, "reason"),
        ({"minutes": 5}, "reason"),
    ],
)
def test_invalid_extensions_name_the_field(
    offline_api: TestClient, auth: Callable[..., dict[str, str]], body: dict[str, Any], field: str
) -> None:
    response = offline_api.post(
        f"{URL}/stripe/extend", json=body, headers=auth(Role.incident_commander)
    )
    assert response.status_code == 422, response.text
    assert [d["field"] for d in response.json()["error"]["details"]] == [field]
