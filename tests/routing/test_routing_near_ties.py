"""Near ties: a gap in success rate that chance explains does not decide the route."""

from __future__ import annotations

from routing_builders import NOW, node, snapshot_of

from routing import NodeHealth, Priority, RoutingRequest, Strategy, decide
from routing.strategies import NEAR_TIE_POINTS, leveled, near_ties, node_figures

PRIMARY = node("primary", health=95, success=99.8, latency=150, cost=0.029)
SECONDARY = node("secondary", health=90, success=99.5, latency=180, cost=0.032)
CRITICAL = RoutingRequest(service="svc", operation="pay", priority=Priority.CRITICAL)


def live(node_id: str, failures: int, calls: int = 100, health: float = 90.0) -> NodeHealth:
    """Live figures as routing.health blends them: the catalog counts as 20 outcomes."""
    base = PRIMARY if node_id == "primary" else SECONDARY
    observed = 100.0 * (calls - failures) / calls
    success = (20 * base.success_rate + calls * observed) / (20 + calls)
    return NodeHealth(node_id, health, round(success, 3), base.latency_ms, observations=calls)


def chosen(health: dict[str, NodeHealth]) -> str:
    snapshot = snapshot_of(PRIMARY, SECONDARY, health=health)
    return decide(CRITICAL, snapshot, NOW).node.node_id


def test_one_chance_failure_does_not_move_critical_traffic_to_a_dearer_node() -> None:
    # One failure in 100 calls drops the primary's health score below the secondary's; the
    # strategy for critical traffic ranks by health first, so before near ties it moved.
    health = {"primary": live("primary", 1, health=87.6), "secondary": live("secondary", 0)}

    assert chosen(health) == "primary"


def test_a_real_error_rate_does_move_it() -> None:
    health = {"primary": live("primary", 8, health=70.0), "secondary": live("secondary", 0)}

    assert chosen(health) == "secondary"


def test_ties_follow_the_number_of_outcomes_behind_the_figures() -> None:
    # The same 1.6-point gap is noise over 100 outcomes and a difference over 5,000.
    few = [(90.0, 98.3, 150.0, 0.0, 100), (90.0, 99.9, 180.0, 0.0, 100)]
    many = [(90.0, 98.3, 150.0, 0.0, 5000), (90.0, 99.9, 180.0, 0.0, 5000)]

    assert near_ties(few) == [0, 1]
    assert near_ties(many) == [1]


def test_catalog_figures_tie_only_within_the_tolerance() -> None:
    close = [(95.0, 99.8, 150.0, 0.0, 0), (90.0, 99.8 - NEAR_TIE_POINTS, 180.0, 0.0, 0)]
    apart = [(95.0, 99.8, 150.0, 0.0, 0), (90.0, 99.8 - NEAR_TIE_POINTS - 0.1, 180.0, 0.0, 0)]

    assert near_ties(close) == [0, 1]
    assert near_ties(apart) == [0]


def test_leveling_gives_back_only_the_health_points_the_noise_cost() -> None:
    nodes = [PRIMARY, SECONDARY]
    catalog = [node_figures(n, {}) for n in nodes]
    # A catalog score is the catalog's: leveling raises the success rate, not the score.
    assert [f[0] for f in leveled(nodes, catalog)] == [95.0, 90.0]
    assert [f[1] for f in leveled(nodes, catalog)] == [99.8, 99.8]
    # A live score lost error_weight (50) points per error budget (5 %) on its observed share
    # (100 of 120): a 0.8-point gap is worth 50 * 0.8 / 5 * 100 / 120 = 6.67 points.
    figures = [(80.0, 99.0, 150.0, 0.0, 100), (90.0, 99.8, 180.0, 0.0, 100)]
    health, success = leveled(nodes, figures)[0][:2]
    assert success == 99.8
    assert abs(health - (80.0 + 50 * 0.8 / 5 * 100 / 120)) < 1e-9


def test_near_ties_go_to_the_cheaper_node_under_availability_focus() -> None:
    cheap = node("cheap", health=90, success=99.6, cost=0.01)
    dear = node("dear", health=90, success=99.9, cost=0.05)
    request = RoutingRequest(
        service="svc", operation="op", preferred_strategy=Strategy.AVAILABILITY_FOCUSED
    )

    assert decide(request, snapshot_of(cheap, dear), NOW).node.node_id == "cheap"
    far = node("cheap", health=90, success=99.3, cost=0.01)
    assert decide(request, snapshot_of(far, dear), NOW).node.node_id == "dear"
