"""Business outcome and confidence reported with a decision (formulas in docs/ROUTING.md)."""

from __future__ import annotations

from collections.abc import Sequence

from routing.types import (
    BusinessOutcome,
    CustomerImpact,
    NodeHealth,
    ProviderNode,
    RoutingRequest,
)

# Money figures are rounded to 6 decimals so binary float noise never reaches a client
# (0.1 - 0.029 is 0.07100000000000001 before rounding).
MONEY_DECIMALS = 6
PERCENT_DECIMALS = 2


def reference_cost(request: RoutingRequest, nodes: Sequence[ProviderNode]) -> float | None:
    """What an unoptimised caller could pay per request: its own limit, else the dearest node.

    The dearest node is taken among the service's enabled nodes that are not emergency-only;
    None when the request has no limit and there is no such node.
    """
    if request.cost_per_request_limit is not None:
        return request.cost_per_request_limit
    costs = [n.cost_per_request for n in nodes if n.enabled and not n.emergency_only]
    return max(costs) if costs else None


def cost_savings(reference: float | None, cost: float) -> float:
    """Savings per request against the reference cost, never negative."""
    if reference is None:
        return 0.0
    return round(max(0.0, reference - cost), MONEY_DECIMALS)


def performance_gain(current_latency: float | None, estimated_latency: float) -> float:
    """Percent latency improvement over the caller's current latency (negative if worse)."""
    if current_latency is None or current_latency <= 0.0:
        return 0.0
    gain = (current_latency - estimated_latency) / current_latency * 100.0
    return round(gain, PERCENT_DECIMALS)


# (success rate, health score) a node needs for "high" and for "medium" risk mitigation, by
# the customers a failure would reach: the more of them, the higher the bar. An unstated
# customerImpact counts as moderate.
RISK_BARS: dict[CustomerImpact, tuple[tuple[float, float], tuple[float, float]]] = {
    CustomerImpact.none: ((98.0, 75.0), (95.0, 60.0)),
    CustomerImpact.low: ((98.0, 75.0), (95.0, 60.0)),
    CustomerImpact.moderate: ((99.5, 90.0), (98.0, 75.0)),
    CustomerImpact.high: ((99.9, 95.0), (99.5, 90.0)),
    CustomerImpact.severe: ((99.9, 95.0), (99.5, 90.0)),
    CustomerImpact.critical: ((99.9, 95.0), (99.5, 90.0)),
}

_MODERATE_BARS = RISK_BARS[CustomerImpact.moderate]


def risk_mitigation(
    success_rate: float, health_score: float, customer_impact: CustomerImpact | None = None
) -> str:
    """'high', 'medium' or 'low' from the chosen node's success rate and health, against the
    bar the request's customer impact sets (RISK_BARS)."""
    # The common case (no customerImpact) skips hashing an enum member, a Python-level call.
    high, medium = _MODERATE_BARS if customer_impact is None else RISK_BARS[customer_impact]
    if success_rate >= high[0] and health_score >= high[1]:
        return "high"
    if success_rate >= medium[0] and health_score >= medium[1]:
        return "medium"
    return "low"


def confidence_score(health_score: float, failure_probability: float) -> float:
    """Health discounted by the predicted failure probability, rounded, within 0..100."""
    score = round(health_score * (1.0 - failure_probability))
    return float(min(100, max(0, score)))


def business_outcome(
    request: RoutingRequest,
    node: ProviderNode,
    health: NodeHealth,
    nodes: Sequence[ProviderNode],
) -> BusinessOutcome:
    """The business figures for serving ``request`` from ``node`` with effective ``health``."""
    reliability = health.success_rate * (1.0 - health.failure_probability)
    return BusinessOutcome(
        estimated_cost_savings=cost_savings(reference_cost(request, nodes), node.cost_per_request),
        estimated_performance_gain=performance_gain(request.current_latency, health.latency_ms),
        risk_mitigation=risk_mitigation(
            health.success_rate, health.health_score, request.business.customer_impact
        ),
        customer_impact_reduction=round(reliability, PERCENT_DECIMALS),
    )
