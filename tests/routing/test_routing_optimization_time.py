"""optimizationTime: decide times the strategy choice and scoring with the clock it is given."""

from __future__ import annotations

from collections.abc import Callable

from routing_builders import NOW, node, snapshot_of

from routing.decide import decide
from routing.retry import decide_retry
from routing.types import RoutingRequest

SNAP = snapshot_of(
    node("primary", health=95, success=99.8, latency=150, cost=0.02),
    node("second", health=90, success=99.5, latency=180, cost=0.03),
)


def ticking() -> tuple[Callable[[], float], list[float]]:
    """A clock that moves 0.25 s at each reading, and its readings."""
    readings: list[float] = []

    def clock() -> float:
        readings.append(len(readings) * 0.25)
        return readings[-1]

    return clock, readings


def test_decide_reads_the_clock_around_strategy_choice_and_scoring() -> None:
    clock, readings = ticking()

    timed = decide(RoutingRequest(service="svc", operation="op"), SNAP, NOW, clock=clock)
    untimed = decide(RoutingRequest(service="svc", operation="op"), SNAP, NOW)

    assert readings == [0.0, 0.25]
    assert timed.optimization_seconds == 0.25
    assert untimed.optimization_seconds == 0.0
    assert timed.node == untimed.node


def test_a_retry_reports_the_attempt_that_chose() -> None:
    clock, readings = ticking()
    request = RoutingRequest(service="svc", operation="op", failed_providers=frozenset({"primary"}))

    decision = decide_retry(request, SNAP, NOW, clock=clock)

    assert decision.node.node_id == "second"
    assert len(readings) == 2  # only the tier that found a node scored
    assert decision.optimization_seconds == 0.25
