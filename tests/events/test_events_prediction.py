"""prediction_fired: published once, in the outcome batch whose prediction crosses the threshold."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from routing.breaker import BreakerConfig
from routing.health import HealthConfig, MonitoringConfig
from routing.prediction import PredictionConfig
from store.base import utcnow
from store.db import transaction
from store.models import Event
from store.outcomes import OutcomeReport, record_outcomes

NODE = "stripe_primary_us_east"
# SLO breaches and breaker trips need more calls than the test sends, so the prediction is
# the only thing that can call the node degraded.
CONFIG = MonitoringConfig(
    health=HealthConfig(slo_min_calls=10_000),
    breaker=BreakerConfig(minimum_calls=10_000, consecutive_failures=10_000),
    prediction=PredictionConfig(threshold=0.5),
)


def _batch(calls: int, failures: int, offset: float) -> list[OutcomeReport]:
    now = utcnow()
    return [
        OutcomeReport(
            node_id=NODE,
            success=n % (calls // failures) != 0 if failures else True,
            latency_ms=120.0,
            observed_at=now - timedelta(seconds=offset - n * 0.1),
        )
        for n in range(calls)
    ]


def _predictions(sessions: sessionmaker[Session]) -> list[Event]:
    with sessions() as session:
        return list(session.scalars(select(Event).where(Event.event_type == "prediction_fired")))


def test_prediction_fired_once_when_the_forecast_crosses_the_threshold(
    clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as session:
        calm = record_outcomes(session, _batch(20, 0, 10), utcnow(), CONFIG)
    assert calm.nodes[0].failure_probability < 0.5
    assert _predictions(sessions) == []

    with transaction(sessions) as session:
        failing = record_outcomes(session, _batch(30, 10, 5), utcnow(), CONFIG)
    probability = failing.nodes[0].failure_probability
    assert probability >= 0.5 and failing.nodes[0].breaker_state == "CLOSED"
    fired = _predictions(sessions)
    assert len(fired) == 1
    payload = fired[0].payload
    assert fired[0].service == "stripe" and payload["nodeId"] == NODE
    assert payload["failureProbability"] == probability and payload["threshold"] == 0.5
    assert payload["previousProbability"] < 0.5
    assert "predicted" in payload["detail"]

    # Still above the threshold: no second event until it falls back and crosses again.
    with transaction(sessions) as session:
        record_outcomes(session, _batch(10, 5, 1), utcnow(), CONFIG)
    assert len(_predictions(sessions)) == 1
