"""A recovery's multi-provider redundancy plan, carried out on the requests it holds.

A recovery that chose `enable_multi_provider_redundancy` names a standby: the second node of
its strategy's ranking (routing/recovery.py). While its override governs a request (the
request is not in the restored share), the plan is carried out:

- a retry goes to the standby first, when the standby is healthy and untried
  (routing/retry.py);
- a first attempt at an operation the catalog marks idempotent carries a hedge: if the chosen
  node has not answered within HEDGE_DELAY_FACTOR times its typical latency, the caller may
  send the same request to the standby and take the first answer. About HEDGE_FRACTION of
  requests are that slow, so the decision's estimated cost is the chosen node's plus that
  share of the standby's: what is actually sent. A non-idempotent operation gets no hedge
  (sending it twice could do it twice) and pays for one request.
"""

from __future__ import annotations

from routing.types import (
    Hedge,
    NodeHealth,
    ProviderNode,
    RoutingOverride,
    RoutingRequest,
    RoutingSnapshot,
)

# Share of requests slower than the hedge delay, so duplicated to the standby.
HEDGE_FRACTION = 0.10
# The hedge fires after this many times the node's typical (median) latency: about the slowest
# tenth of calls for latencies whose p90 is about twice the median.
HEDGE_DELAY_FACTOR = 2.0


def idempotent(snapshot: RoutingSnapshot, service: str, operation: str) -> bool:
    """True when the catalog marks the service's operation as safe to send twice."""
    rules = snapshot.rules.get(service)
    return rules is not None and bool(operation) and operation in rules.idempotent


def standby_node(
    snapshot: RoutingSnapshot, override: RoutingOverride | None
) -> ProviderNode | None:
    """The standby of the redundancy plan in effect, if any."""
    if override is None or override.standby is None:
        return None
    return snapshot.node(override.standby)


def plan_hedge(
    request: RoutingRequest,
    snapshot: RoutingSnapshot,
    override: RoutingOverride | None,
    chosen: ProviderNode,
    chosen_health: NodeHealth,
    eligible: tuple[str, ...],
) -> Hedge | None:
    """The hedge for a first attempt under a redundancy plan, or None.

    Only for an idempotent operation, to a standby that is eligible for this request and is
    not the node chosen.
    """
    standby = standby_node(snapshot, override)
    if standby is None or standby.node_id == chosen.node_id or standby.node_id not in eligible:
        return None
    if not idempotent(snapshot, request.service, request.operation):
        return None
    return Hedge(
        node=standby,
        delay_ms=round(HEDGE_DELAY_FACTOR * chosen_health.latency_ms, 3),
        share=HEDGE_FRACTION,
    )


def hedged_cost(cost: float, hedge: Hedge | None) -> float:
    """What a request costs with its hedge: the chosen node's price plus the hedge's share
    of the standby's, rounded as money."""
    if hedge is None:
        return cost
    return round(cost + hedge.share * hedge.node.cost_per_request, 6)


def affordable(
    hedge: Hedge | None, cost: float, request: RoutingRequest, remaining: float | None
) -> Hedge | None:
    """The hedge when the hedged cost stays within the request's cost limit and the budget
    left; else None (the request is sent once)."""
    if hedge is None:
        return None
    total = hedged_cost(cost, hedge)
    limit = request.cost_per_request_limit
    if (limit is not None and total > limit) or (remaining is not None and total > remaining):
        return None
    return hedge
