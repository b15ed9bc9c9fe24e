"""requirePredictiveAnalytics: every strategy weighs the forecast; likely failures are screened."""

from __future__ import annotations

import dataclasses

import pytest
from routing_builders import NOW, node, snapshot_of

from routing import (
    ExclusionReason,
    NodeHealth,
    Priority,
    RoutingRequest,
    RoutingSnapshot,
    Strategy,
    decide,
)
from routing.forecast import PREDICTED_FAILURE_EXCLUSION


def live(n_id: str, snapshot: RoutingSnapshot, p: float, observations: int = 50) -> NodeHealth:
    """The node's catalog figures as live figures, with a forecast of p."""
    catalog = snapshot.node(n_id)
    assert catalog is not None
    return NodeHealth(
        n_id,
        catalog.health_score,
        catalog.success_rate,
        catalog.latency_ms,
        failure_probability=p,
        observations=observations,
    )


def with_forecasts(snapshot: RoutingSnapshot, **p: float) -> RoutingSnapshot:
    """The snapshot with live figures for every node, forecasts as given (0 otherwise)."""
    health = {
        n.node_id: live(n.node_id, snapshot, p.get(n.node_id, 0.0))
        for nodes in snapshot.nodes.values()
        for n in nodes
    }
    return dataclasses.replace(snapshot, health=health)


def test_seed_request_avoids_a_node_predicted_to_fail(default_snapshot: RoutingSnapshot) -> None:
    """The contract's first request (CRITICAL -> HEALTH_BASED) with its primary at p=0.6."""
    snapshot = with_forecasts(default_snapshot, stripe_primary_us_east=0.6)
    request = RoutingRequest(
        service="stripe", operation="payment_processing", priority=Priority.CRITICAL
    )

    plain = decide(request, snapshot, NOW)
    predictive = decide(
        dataclasses.replace(request, require_predictive_analytics=True), snapshot, NOW
    )

    assert plain.node.node_id == "stripe_primary_us_east" and plain.forecast is None
    assert predictive.strategy is Strategy.HEALTH_BASED
    assert predictive.node.node_id == "stripe_secondary_us_west"
    screened = [e for e in predictive.exclusions if e.reason is ExclusionReason.PREDICTED_FAILURE]
    assert [e.node_id for e in screened] == ["stripe_primary_us_east"]
    assert predictive.forecast is not None
    assert predictive.forecast.effect == "changed"
    assert predictive.forecast.without_forecast == "stripe_primary_us_east"
    assert dict(predictive.forecast.probabilities) == {
        "stripe_primary_us_east": 0.6,
        "stripe_secondary_us_west": 0.0,
    }


@pytest.mark.parametrize("strategy", list(Strategy))
def test_every_strategy_screens_a_likely_failure(strategy: Strategy) -> None:
    # "a" is every strategy's pick on the plain figures: healthiest, cheapest, fastest.
    base = snapshot_of(
        node("a", health=98.0, success=99.9, latency=100.0, cost=0.01),
        node("b", health=90.0, success=99.0, latency=200.0, cost=0.02),
    )
    snapshot = with_forecasts(base, a=PREDICTED_FAILURE_EXCLUSION)
    request = RoutingRequest(service="svc", operation="op", preferred_strategy=strategy)

    plain = decide(request, base, NOW)
    predictive = decide(
        dataclasses.replace(request, require_predictive_analytics=True), snapshot, NOW
    )

    assert plain.node.node_id == "a"
    assert predictive.node.node_id == "b"
    # AVAILABILITY_FOCUSED weighs p on its own: on the live figures it already avoids "a", and
    # the forecast confirms that; for the others the screen changes the choice.
    unscreened = decide(request, snapshot, NOW).node.node_id
    assert predictive.forecast is not None
    assert predictive.forecast.effect == ("changed" if unscreened == "a" else "confirmed")


@pytest.mark.parametrize(
    ("strategy", "a", "b"),
    [
        # Below the screen, the forecast still weighs: expected figures with survival 1 - p.
        (Strategy.HEALTH_BASED, {"health": 95.0}, {"health": 90.0}),
        (Strategy.COST_OPTIMIZED, {"cost": 0.010}, {"cost": 0.012}),
        (Strategy.LATENCY_OPTIMIZED, {"latency": 100.0}, {"latency": 150.0}),
    ],
)
def test_every_strategy_weighs_the_forecast(
    strategy: Strategy, a: dict[str, float], b: dict[str, float]
) -> None:
    snapshot = with_forecasts(snapshot_of(node("a", **a), node("b", **b)), a=0.4)
    request = RoutingRequest(service="svc", operation="op", preferred_strategy=strategy)

    plain = decide(request, snapshot, NOW)
    predictive = decide(
        dataclasses.replace(request, require_predictive_analytics=True), snapshot, NOW
    )

    assert plain.node.node_id == "a"
    assert predictive.node.node_id == "b"
    assert not [e for e in predictive.exclusions if e.reason is ExclusionReason.PREDICTED_FAILURE]


# Health-based routing that asks for the forecast, on the two nodes a (95) and b (90).
HEALTH_WITH_FORECAST = RoutingRequest(
    service="svc",
    operation="op",
    preferred_strategy=Strategy.HEALTH_BASED,
    require_predictive_analytics=True,
)


def test_a_forecast_that_keeps_the_choice_confirms_it() -> None:
    snapshot = with_forecasts(
        snapshot_of(node("a", health=95.0), node("b", health=90.0)), b=PREDICTED_FAILURE_EXCLUSION
    )
    request = HEALTH_WITH_FORECAST

    decision = decide(request, snapshot, NOW)

    assert decision.node.node_id == "a"
    assert decision.forecast is not None and decision.forecast.effect == "confirmed"
    assert [e.node_id for e in decision.exclusions] == ["b"]


def test_without_enough_observations_there_is_no_forecast() -> None:
    base = snapshot_of(node("a", health=95.0), node("b", health=90.0))
    few = dataclasses.replace(
        base, health={n: live(n, base, 0.0, observations=3) for n in ("a", "b")}
    )
    request = RoutingRequest(service="svc", operation="op", require_predictive_analytics=True)

    for snapshot in (base, few):
        decision = decide(request, snapshot, NOW)
        assert decision.forecast is not None and decision.forecast.effect == "unavailable"


def test_when_every_node_is_likely_to_fail_none_is_screened() -> None:
    snapshot = with_forecasts(
        snapshot_of(node("a", health=95.0), node("b", health=90.0)), a=0.9, b=0.7
    )
    request = HEALTH_WITH_FORECAST

    decision = decide(request, snapshot, NOW)

    # Weighed: a's expected health 95 x 0.1 = 9.5 against b's 90 x 0.3 = 27.
    assert decision.node.node_id == "b"
    assert decision.exclusions == ()
