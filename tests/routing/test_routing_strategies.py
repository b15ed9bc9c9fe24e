"""Each strategy's scoring, tie-breaking and the hybrid weights."""

from __future__ import annotations

import pytest
from routing_builders import NOW, node, snapshot_of

from routing import (
    BreakerState,
    NodeHealth,
    RoutingRequest,
    RoutingSnapshot,
    Strategy,
    decide,
    rank,
    select,
)
from routing.strategies import hybrid_scores, node_figures

# One node per strategy, each the clear winner of exactly one strategy.
BEST_HEALTH = node("best_health", health=99, success=97.0, latency=400, cost=0.05)
CHEAPEST = node("cheapest", health=70, success=96.0, latency=500, cost=0.001)
FASTEST = node("fastest", health=72, success=95.0, latency=20, cost=0.05)
MOST_AVAILABLE = node("most_available", health=80, success=99.9, latency=400, cost=0.05)
BALANCED = node("balanced", health=95, success=99.3, latency=40, cost=0.002)
FIVE = snapshot_of(BEST_HEALTH, CHEAPEST, FASTEST, MOST_AVAILABLE, BALANCED)


@pytest.mark.parametrize(
    ("strategy", "winner"),
    [
        (Strategy.HEALTH_BASED, "best_health"),
        (Strategy.COST_OPTIMIZED, "cheapest"),
        (Strategy.LATENCY_OPTIMIZED, "fastest"),
        (Strategy.AVAILABILITY_FOCUSED, "most_available"),
        (Strategy.HYBRID_OPTIMIZATION, "balanced"),
    ],
)
def test_each_strategy_picks_its_own_node(strategy: Strategy, winner: str) -> None:
    request = RoutingRequest(service="svc", operation="op", preferred_strategy=strategy)

    decision = decide(request, FIVE, NOW)

    assert decision.node.node_id == winner
    assert decision.strategy == strategy
    assert decision.strategy_reason == "client_preference"
    assert rank(strategy, FIVE.nodes["svc"], FIVE, False)[0].node_id == winner


def test_rank_orders_every_node_best_first() -> None:
    ranked = rank(Strategy.COST_OPTIMIZED, FIVE.nodes["svc"], FIVE, False)

    # Three nodes cost 0.05: health orders them (99, 80, 72).
    assert [n.node_id for n in ranked] == [
        "cheapest",
        "balanced",
        "best_health",
        "most_available",
        "fastest",
    ]


def test_rank_of_nothing_is_empty() -> None:
    assert rank(Strategy.HEALTH_BASED, (), FIVE, False) == ()
    with pytest.raises(ValueError):
        select(Strategy.HEALTH_BASED, (), FIVE, False)


def test_health_ties_break_on_success_then_cost_then_catalog_order() -> None:
    nodes = (
        node("a", health=90, success=98.9, cost=0.02),
        node("b", health=90, success=99.5, cost=0.03),
        node("c", health=90, success=99.5, cost=0.01),
        node("d", health=90, success=99.5, cost=0.01),
    )
    snapshot = snapshot_of(*nodes)

    ranked = rank(Strategy.HEALTH_BASED, nodes, snapshot, False)

    assert [n.node_id for n in ranked] == ["c", "d", "b", "a"]


def test_cost_ties_break_on_health_then_catalog_order() -> None:
    nodes = (
        node("a", cost=0.01, health=80),
        node("b", cost=0.01, health=90),
        node("c", cost=0.01, health=90),
    )

    ranked = rank(Strategy.COST_OPTIMIZED, nodes, snapshot_of(*nodes), False)

    assert [n.node_id for n in ranked] == ["b", "c", "a"]


def test_latency_ties_break_on_health_then_catalog_order() -> None:
    nodes = (
        node("a", latency=100, health=80),
        node("b", latency=100, health=90),
        node("c", latency=100, health=90),
    )

    ranked = rank(Strategy.LATENCY_OPTIMIZED, nodes, snapshot_of(*nodes), False)

    assert [n.node_id for n in ranked] == ["b", "c", "a"]


def test_availability_discounts_failure_probability_and_breaks_ties() -> None:
    nodes = (
        node("risky", success=99.9),
        node("steady_dear", success=99.0, health=90, cost=0.02),
        node("steady_cheap", success=99.0, health=90, cost=0.01),
        node("steady_healthier", success=99.0, health=95, cost=0.03),
    )
    live = {"risky": NodeHealth("risky", 90, 99.9, 200, failure_probability=0.1)}
    snapshot = snapshot_of(*nodes, health=live)

    ranked = rank(Strategy.AVAILABILITY_FOCUSED, nodes, snapshot, False)

    # risky: 99.9 * 0.9 = 89.91, below the 99.0 of the steady ones.
    assert [n.node_id for n in ranked] == [
        "steady_healthier",
        "steady_cheap",
        "steady_dear",
        "risky",
    ]


def test_hybrid_ties_fall_back_to_catalog_order() -> None:
    nodes = (node("first"), node("second"), node("third"))

    ranked = rank(Strategy.HYBRID_OPTIMIZATION, nodes, snapshot_of(*nodes), False)

    assert [n.node_id for n in ranked] == ["first", "second", "third"]


def test_hybrid_score_formula() -> None:
    nodes = (
        node("a", health=90, success=99.0, latency=100, cost=0.02),
        node("b", health=80, success=98.0, latency=200, cost=0.01),
    )
    live = {"b": NodeHealth("b", 80, 98.0, 200, failure_probability=0.2)}
    figures = [node_figures(n, live) for n in nodes]

    normal = hybrid_scores(nodes, figures, emergency_active=False)
    emergency = hybrid_scores(nodes, figures, emergency_active=True)

    assert normal[0] == pytest.approx(0.30 * 0.90 + 0.25 * 0.99 + 0.20 * 1 + 0.25 * 0.5)
    assert normal[1] == pytest.approx(0.30 * 0.80 + 0.25 * 0.98 + 0.20 * 0.5 + 0.25 - 0.5 * 0.2)
    assert emergency[0] == pytest.approx(0.30 * 0.90 + 0.50 * 0.99 + 0.20 * 1)
    assert emergency[1] == pytest.approx(0.30 * 0.80 + 0.50 * 0.98 + 0.20 * 0.5 - 0.5 * 0.2)


def test_emergency_weights_trade_cost_for_reliability(
    default_snapshot: RoutingSnapshot,
) -> None:
    stripe = default_snapshot.nodes["stripe"]

    normal = rank(Strategy.HYBRID_OPTIMIZATION, stripe, default_snapshot, False)
    emergency = rank(Strategy.HYBRID_OPTIMIZATION, stripe, default_snapshot, True)

    assert normal[0].node_id == "stripe_primary_us_east"
    assert emergency[0].node_id == "stripe_premium_emergency"


def test_hybrid_guards_zero_cost_and_latency() -> None:
    nodes = (
        node("free", cost=0.0, latency=0.0, health=50, success=50.0),
        node("paid", cost=0.01, latency=100.0, health=50, success=50.0),
    )
    figures = [node_figures(n, {}) for n in nodes]

    scores = hybrid_scores(nodes, figures, emergency_active=False)

    assert scores[0] == pytest.approx(0.30 * 0.5 + 0.25 * 0.5 + 0.20 + 0.25)
    assert scores[1] == pytest.approx(0.30 * 0.5 + 0.25 * 0.5)


def test_live_health_replaces_catalog_figures() -> None:
    nodes = (node("a", health=95), node("b", health=90))
    live = {"a": NodeHealth("a", 40.0, 90.0, 900.0, BreakerState.HALF_OPEN, 0.3)}
    snapshot = snapshot_of(*nodes, health=live)
    request = RoutingRequest(
        service="svc", operation="op", preferred_strategy=Strategy.HEALTH_BASED
    )

    decision = decide(request, snapshot, NOW)

    assert decision.node.node_id == "b"
    assert decision.health == NodeHealth("b", 90.0, 99.0, 200.0)
    assert select(Strategy.LATENCY_OPTIMIZED, nodes, snapshot, False).node_id == "b"
