"""coordination-analytics and performance-metrics over HTTP: exact figures from known rows."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, event, select, update
from sqlalchemy.orm import Session, sessionmaker
from test_api_coordination_seed import SEED_REQUEST
from test_api_coordination_seed import URL as EXECUTE_URL

from api.auth import Role
from store.base import utcnow
from store.db import transaction
from store.models import (
    Coordination,
    Emergency,
    ErrorStream,
    MonitoringSession,
    NodeHealthRow,
    Outcome,
    RecoveryRun,
    RoutingOverrideRow,
)

PREFIX = "/api/v1/enhanced-traffic-coordination"
ANALYTICS = f"{PREFIX}/coordination-analytics"
METRICS = f"{PREFIX}/performance-metrics"
ISO_MILLIS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

Auth = Callable[..., dict[str, str]]


def coordination(
    coordination_id: str,
    service: str,
    at: datetime,
    *,
    integrated: bool,
    ms: float,
    savings: float,
    kind: str = "standard",
    revenue: float | None = None,
) -> Coordination:
    """A recorded coordination with the figures analytics reads."""
    return Coordination(
        coordination_id=coordination_id,
        kind=kind,
        service=service,
        operation="op",
        node_id=f"{service}_node",
        strategy="HEALTH_BASED",
        estimated_cost=0.03,
        estimated_latency=150.0,
        estimated_success_rate=99.0,
        cost_savings=savings,
        confidence_score=90.0,
        backend_integrated=integrated,
        coordination_ms=ms,
        revenue_impact=revenue,
        response={},
        created_at=at,
    )


def outcome(coordination_id: str | None, success: bool, at: datetime) -> Outcome:
    """A reported call outcome."""
    return Outcome(
        coordination_id=coordination_id,
        node_id="n",
        success=success,
        latency_ms=100.0,
        observed_at=at,
    )


def emergency(workflow_id: str, service: str, started: datetime, status: str) -> Emergency:
    """An emergency override row."""
    return Emergency(
        workflow_id=workflow_id,
        coordination_id=f"emergency_{workflow_id}",
        service=service,
        status=status,
        emergency_reason="outage",
        business_justification="revenue",
        max_budget_override=5000.0,
        started_at=started,
        deadline=started + timedelta(minutes=60),
    )


def stream(
    stream_id: str, service: str, status: str, first_seen: datetime, last_seen: datetime
) -> ErrorStream:
    """An error stream row."""
    return ErrorStream(
        stream_id=stream_id,
        service=service,
        status=status,
        first_seen=first_seen,
        last_seen=last_seen,
        cascading_services=[],
    )


def monitor(session_id: str, service: str, active: bool, last_seen: datetime) -> MonitoringSession:
    """A monitoring session row."""
    return MonitoringSession(
        session_id=session_id,
        service=service,
        active=active,
        started_at=last_seen,
        last_seen=last_seen,
    )


@pytest.fixture
def recorded(api_client: TestClient, sessions: sessionmaker[Session]) -> datetime:
    """A store with known coordinations, outcomes, emergencies, streams and sessions."""
    now = utcnow()

    def ago(**kw: float) -> datetime:
        return now - timedelta(**kw)

    with transaction(sessions) as session:
        session.add_all(
            [
                # stripe: c1 all outcomes succeeded, c2 one failed, c3 none reported, c4 failed;
                # revenue is protected by the successful ones that declared it (c1)
                coordination(
                    "c1",
                    "stripe",
                    ago(minutes=10),
                    integrated=True,
                    ms=40,
                    savings=0.071,
                    revenue=5000,
                ),
                coordination(
                    "c2",
                    "stripe",
                    ago(minutes=20),
                    integrated=False,
                    ms=60,
                    savings=0.068,
                    revenue=3000,
                ),
                coordination("c3", "stripe", ago(hours=2), integrated=True, ms=50, savings=0.05),
                coordination(
                    "c4",
                    "stripe",
                    ago(days=3),
                    integrated=True,
                    ms=100,
                    savings=0.1,
                    revenue=2000,
                ),
                coordination(
                    "s1",
                    "samsara",
                    ago(minutes=5),
                    integrated=True,
                    ms=30,
                    savings=0.005,
                    kind="backend_error",
                    revenue=800,
                ),
            ]
        )
        session.flush()
        session.add_all(
            [
                outcome("c1", True, ago(minutes=9)),
                outcome("c1", True, ago(minutes=8)),
                outcome("c2", True, ago(minutes=19)),
                outcome("c2", False, ago(minutes=18)),
                outcome("c4", False, ago(days=3)),
                outcome(None, False, ago(minutes=1)),  # not tied to a coordination: ignored
                emergency("emergency:stripe:1", "stripe", ago(minutes=30), "active"),
                emergency("emergency:stripe:0", "stripe", ago(days=2), "ended"),
                emergency("emergency:twilio:0", "twilio", ago(hours=3), "ended"),
                stream("st1", "stripe", "resolved", ago(minutes=50), ago(minutes=20)),  # 30 min
                stream("st2", "stripe", "resolved", ago(hours=3), ago(minutes=170)),  # 10 min
                stream("st3", "stripe", "rerouted", ago(minutes=40), ago(minutes=5)),
                stream("st4", "stripe", "resolved", ago(minutes=12), ago(minutes=10)),  # 2 min
                stream("st5", "stripe", "registered", ago(hours=1), ago(minutes=16)),  # stale
                stream("sm1", "samsara", "registered", ago(minutes=2), ago(minutes=1)),
                monitor("m1", "stripe", True, ago(minutes=1)),
                monitor("m2", "stripe", True, ago(minutes=30)),  # stale
                monitor("m3", "stripe", False, ago(minutes=1)),  # ended
                monitor("m4", "samsara", True, ago(minutes=1)),
                RoutingOverrideRow(
                    workflow_id="recovery:stripe:st3",
                    service="stripe",
                    excluded_nodes=["stripe_primary_us_east"],
                ),
            ]
        )
        session.execute(
            update(NodeHealthRow)
            .where(NodeHealthRow.node_id == "stripe_primary_us_east")
            .values(health_score=91.456)
        )
        session.execute(
            delete(NodeHealthRow).where(NodeHealthRow.node_id == "stripe_secondary_us_west")
        )
    return now


def data(response: Any) -> dict[str, Any]:
    """The data block of a 200 answer."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    result: dict[str, Any] = body["data"]
    return result


def test_coordination_analytics_figures_over_24h(
    api_client: TestClient, auth: Auth, recorded: datetime
) -> None:
    result = data(api_client.get(ANALYTICS, headers=auth(Role.viewer)))
    assert result["timeframe"] == "24h"
    assert ISO_MILLIS.match(result["lastUpdate"])
    assert result["totalServices"] == 6
    # c1, c2, c3 and s1; c2 has a failed outcome
    assert result["totalCoordinations"] == 4
    assert result["successfulCoordinations"] == 3
    assert result["averageCoordinationTime"] == 45.0
    assert result["totalCostSavings"] == 0.194
    assert result["backendIntegrationRate"] == 75.0
    assert result["emergencyActivations"] == 2
    assert result["totalRevenueProtected"] == 5800
    breakdown = result["serviceBreakdown"]
    assert list(breakdown) == ["stripe", "samsara", "twilio", "maps", "sendgrid", "avalara"]
    assert breakdown["stripe"] == {
        "coordinations": 3,
        "successRate": 66.67,
        "avgCostSavings": 0.063,
        "backendIntegrationRate": 66.67,
        "revenueProtected": 5000,
    }
    assert breakdown["samsara"] == {
        "coordinations": 1,
        "successRate": 100.0,
        "avgCostSavings": 0.005,
        "backendIntegrationRate": 100.0,
        "revenueProtected": 800,
    }
    assert breakdown["twilio"] == {
        "coordinations": 0,
        "successRate": 0.0,
        "avgCostSavings": 0.0,
        "backendIntegrationRate": 0.0,
        "revenueProtected": 0.0,
    }


@pytest.mark.parametrize(
    ("timeframe", "total", "successful", "emergencies", "savings"),
    [
        ("1h", 3, 2, 1, 0.144),
        ("7d", 5, 3, 3, 0.294),
        ("30d", 5, 3, 3, 0.294),
        ("all", 5, 3, 3, 0.294),
    ],
)
def test_coordination_analytics_timeframes(
    api_client: TestClient,
    auth: Auth,
    recorded: datetime,
    timeframe: str,
    total: int,
    successful: int,
    emergencies: int,
    savings: float,
) -> None:
    result = data(api_client.get(ANALYTICS, params={"timeframe": timeframe}, headers=auth()))
    assert result["timeframe"] == timeframe
    assert result["totalCoordinations"] == total
    assert result["successfulCoordinations"] == successful
    assert result["emergencyActivations"] == emergencies
    assert result["totalCostSavings"] == savings


def test_performance_metrics_for_stripe(
    api_client: TestClient, auth: Auth, recorded: datetime
) -> None:
    result = data(
        api_client.get(f"{METRICS}/stripe", params={"timeframe": "24h"}, headers=auth(Role.viewer))
    )
    assert result["serviceName"] == "stripe"
    assert result["timeframe"] == "24h"
    assert result["performanceMetrics"] == {
        "averageCoordinationTime": 50.0,
        "successRate": 66.67,
        "backendIntegrationRate": 66.67,
        "costOptimization": 0.063,
    }
    assert result["businessImpact"] == {
        "totalCostSavings": 0.189,
        "coordinationsHandled": 3,
        "emergencyModeActivations": 1,
        # st1 (30 min), st2 (10 min) and st4 (2 min) resolved within 24 h
        "averageResolutionTime": 14.0,
        "revenueProtected": 5000,
    }
    health = result["systemHealth"]
    assert ISO_MILLIS.match(health["lastUpdate"])
    # one recovery override + one active emergency
    assert health["activeCoordinations"] == 2
    # streams st3, st4 and session m1 seen within 15 minutes
    assert health["backendConnections"] == 3
    # live score rounded, catalog score where no live row, emergency node while one is active
    assert health["providerHealth"] == {
        "stripe_primary_us_east": 91.46,
        "stripe_secondary_us_west": 90.0,
        "stripe_premium_emergency": 98.0,
    }


def test_performance_metrics_timeframes(
    api_client: TestClient, auth: Auth, recorded: datetime
) -> None:
    hour = data(api_client.get(f"{METRICS}/stripe", params={"timeframe": "1h"}, headers=auth()))
    assert hour["performanceMetrics"] == {
        "averageCoordinationTime": 50.0,
        "successRate": 50.0,
        "backendIntegrationRate": 50.0,
        "costOptimization": 0.0695,
    }
    assert hour["businessImpact"] == {
        "totalCostSavings": 0.139,
        "coordinationsHandled": 2,
        "emergencyModeActivations": 1,
        "averageResolutionTime": 16.0,
        "revenueProtected": 5000,
    }
    week = data(api_client.get(f"{METRICS}/stripe", params={"timeframe": "7d"}, headers=auth()))
    assert week["performanceMetrics"] == {
        "averageCoordinationTime": 62.5,
        "successRate": 50.0,
        "backendIntegrationRate": 75.0,
        "costOptimization": 0.07225,
    }
    assert week["businessImpact"]["emergencyModeActivations"] == 2
    assert week["businessImpact"]["revenueProtected"] == 5000  # c4 failed
    # live figures do not depend on the timeframe
    assert week["systemHealth"]["activeCoordinations"] == 2
    assert week["systemHealth"]["backendConnections"] == 3


def test_performance_metrics_default_timeframe_and_idle_service(
    api_client: TestClient, auth: Auth, recorded: datetime
) -> None:
    result = data(api_client.get(f"{METRICS}/twilio", headers=auth()))
    assert result["timeframe"] == "24h"
    assert result["performanceMetrics"] == {
        "averageCoordinationTime": 0.0,
        "successRate": 0.0,
        "backendIntegrationRate": 0.0,
        "costOptimization": 0.0,
    }
    assert result["businessImpact"] == {
        "totalCostSavings": 0.0,
        "coordinationsHandled": 0,
        "emergencyModeActivations": 1,
        "averageResolutionTime": 0.0,
        "revenueProtected": 0.0,
    }
    # its emergency has ended: the emergency-only node is out of rotation and not listed
    assert result["systemHealth"]["activeCoordinations"] == 0
    assert result["systemHealth"]["backendConnections"] == 0
    assert list(result["systemHealth"]["providerHealth"]) == [
        "twilio_primary_us_east",
        "twilio_secondary_us_west",
    ]


def test_figures_follow_execute_coordination(
    api_client: TestClient, auth: Auth, sessions: sessionmaker[Session]
) -> None:
    for _ in range(2):
        assert api_client.post(
            EXECUTE_URL, json=SEED_REQUEST, headers=auth(Role.operator)
        ).is_success
    result = data(api_client.get(f"{METRICS}/stripe", headers=auth()))
    assert result["performanceMetrics"]["successRate"] == 100.0
    assert result["performanceMetrics"]["backendIntegrationRate"] == 100.0
    assert result["performanceMetrics"]["costOptimization"] == 0.071
    assert result["performanceMetrics"]["averageCoordinationTime"] > 0
    assert result["businessImpact"]["totalCostSavings"] == 0.142
    assert result["businessImpact"]["coordinationsHandled"] == 2
    # the seed's businessContext.revenueImpact (5000) was stored with each decision
    assert result["businessImpact"]["revenueProtected"] == 10000
    # the seed's fresh-catalog health, as in the contract's example
    assert result["systemHealth"]["providerHealth"] == {
        "stripe_primary_us_east": 95,
        "stripe_secondary_us_west": 90,
    }
    # the error stream and the monitoring session the requests registered
    assert result["systemHealth"]["backendConnections"] == 2

    # one failed outcome reported against one coordination makes it unsuccessful
    with sessions() as session:
        first = session.scalar(select(Coordination.coordination_id).limit(1))
    with transaction(sessions) as session:
        session.add(outcome(first, False, utcnow()))
    result = data(api_client.get(ANALYTICS, headers=auth()))
    assert result["totalCoordinations"] == 2
    assert result["successfulCoordinations"] == 1
    assert result["serviceBreakdown"]["stripe"]["successRate"] == 50.0
    assert result["serviceBreakdown"]["stripe"]["revenueProtected"] == 5000


@contextmanager
def counted_statements(engine: Engine) -> Iterator[list[str]]:
    """Collect the SQL statements the engine runs inside the block."""
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_statement_count_does_not_grow_with_rows(
    api_client: TestClient, auth: Auth, sessions: sessionmaker[Session]
) -> None:
    runtime = api_client.app.state.runtime  # type: ignore[attr-defined]
    # Background work shares the engine we count on: the snapshot's reloads and the audit
    # receipts' sealer (a tick inside a counted request would be luck, not a statement of it).
    runtime.snapshot.stop()
    api_client.portal.call(runtime.receipts.stop)  # type: ignore[union-attr]
    engine = runtime.engine

    def statements_per_request() -> tuple[int, int]:
        with counted_statements(engine) as analytics:
            data(api_client.get(ANALYTICS, headers=auth()))
        with counted_statements(engine) as metrics:
            data(api_client.get(f"{METRICS}/stripe", headers=auth()))
        return len(analytics), len(metrics)

    statements_per_request()  # the pool's first connection runs its own set-up statements
    empty = statements_per_request()
    now = utcnow()
    with transaction(sessions) as session:
        session.add_all(
            coordination(
                f"bulk_{i}",
                "stripe" if i % 2 else "maps",
                now - timedelta(minutes=i),
                integrated=bool(i % 3),
                ms=10.0,
                savings=0.01,
            )
            for i in range(300)
        )
        session.flush()
        session.add_all(outcome(f"bulk_{i}", i % 5 != 0, now) for i in range(0, 300, 2))
    assert statements_per_request() == empty
    analytics_count, metrics_count = empty
    assert analytics_count <= 7 and metrics_count <= 8, empty
    result = data(api_client.get(ANALYTICS, headers=auth()))
    assert result["totalCoordinations"] == 300
    # maps rows are the even ones; every 5th even one (i % 10 == 0) failed
    assert result["serviceBreakdown"]["maps"]["successRate"] == 80.0
    assert result["successfulCoordinations"] == 270


def test_unknown_service_is_404(api_client: TestClient, auth: Auth) -> None:
    response = api_client.get(f"{METRICS}/paypal", headers=auth(Role.viewer))
    assert response.status_code == 404
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "not_found"
    assert "paypal" in body["error"]["message"]
    assert "stripe" in body["error"]["details"]["knownServices"]


# One test per group of cases: every api_client start and stop costs time on PostgreSQL.
BAD_TIMEFRAMES = [
    (f"{METRICS}/stripe", "2h"),
    (f"{METRICS}/stripe", "all"),
    (f"{METRICS}/stripe", ""),
    (ANALYTICS, "1d"),
    (ANALYTICS, "24H"),
]


def test_bad_timeframe_is_422_naming_it(api_client: TestClient, auth: Auth) -> None:
    for url, timeframe in BAD_TIMEFRAMES:
        response = api_client.get(url, params={"timeframe": timeframe}, headers=auth())
        assert response.status_code == 422, (url, timeframe, response.text)
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert error["message"] == "invalid request: timeframe"
        assert [d["field"] for d in error["details"]] == ["timeframe"]


def test_analytics_needs_a_token_and_any_role_reads(api_client: TestClient, auth: Auth) -> None:
    for url in (ANALYTICS, f"{METRICS}/stripe"):
        response = api_client.get(url)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        bad = api_client.get(url, headers={"Authorization": "Bearer not-a-token"})
        assert bad.status_code == 401
        for role in Role:
            assert api_client.get(url, headers=auth(role)).status_code == 200, role


def test_routes_are_in_the_openapi_document(api_client: TestClient) -> None:
    paths = api_client.get("/openapi.json").json()["paths"]
    assert "get" in paths[ANALYTICS]
    assert "get" in paths[f"{METRICS}/{{service}}"]


def run(
    key: str,
    service: str,
    ended: datetime,
    minutes: float,
    declared: float | None,
    outcome: str = "resolved",
) -> RecoveryRun:
    """An ended recovery run."""
    return RecoveryRun(
        run_key=key,
        workflow_id=key,
        service=service,
        strategy="AVAILABILITY_FOCUSED",
        outcome=outcome,
        started_at=ended - timedelta(minutes=minutes),
        ended_at=ended,
        minutes=minutes,
        declared_minutes=declared,
    )


def test_before_vs_after_against_primaries_and_declared_times(
    api_client: TestClient, auth: Auth, sessions: sessionmaker[Session], recorded: datetime
) -> None:
    now = recorded
    with transaction(sessions) as session:
        session.add_all(
            [
                run("r1", "stripe", now - timedelta(minutes=30), 4.0, 10.0),
                run("r2", "stripe", now - timedelta(minutes=40), 2.0, 10.0),
                run("r3", "stripe", now - timedelta(minutes=50), 60.0, 10.0, "unresolved"),
                run("r4", "stripe", now - timedelta(days=2), 1.0, 30.0),  # outside 24h
                run("r5", "samsara", now - timedelta(minutes=5), 20.0, 15.0),
            ]
        )
    result = data(api_client.get(ANALYTICS, headers=auth(Role.viewer)))["beforeVsAfter"]
    # 24h successful: c1, c3 (stripe, primary 0.029) and s1 (samsara, primary 0.05), 0.03 each.
    assert result["successfulCalls"] == 3
    assert result["costPerSuccessfulCall"] == 0.03
    assert result["referenceCostPerSuccessfulCall"] == 0.036  # (2 x 0.029 + 0.05) / 3
    assert result["costReduction"] == 16.67  # (0.036 - 0.03) / 0.036
    # Resolved in 24h: r1, r2, r5: 26 minutes against 35 declared.
    assert result["resolvedRecoveries"] == 3
    assert result["averageResolutionTime"] == round(26 / 3, 2)
    assert result["declaredResolutionTime"] == round(35 / 3, 2)
    assert result["resolutionTimeImprovement"] == round((35 - 26) / 35 * 100, 2)
    assert "primary node" in result["costDefinition"]
    assert "timeToResolution" in result["resolutionDefinition"]

    stripe = data(api_client.get(f"{METRICS}/stripe", headers=auth()))["beforeVsAfter"]
    # Paid more than the primary would have cost: said so, as a negative reduction.
    assert (stripe["costPerSuccessfulCall"], stripe["referenceCostPerSuccessfulCall"]) == (
        0.03,
        0.029,
    )
    assert stripe["costReduction"] == round((0.029 - 0.03) / 0.029 * 100, 2)
    assert (stripe["averageResolutionTime"], stripe["declaredResolutionTime"]) == (3.0, 10.0)
    assert stripe["resolutionTimeImprovement"] == 70.0
    idle = data(api_client.get(f"{METRICS}/twilio", headers=auth()))["beforeVsAfter"]
    assert idle["costReduction"] is None and idle["resolutionTimeImprovement"] is None
