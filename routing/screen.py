"""What a snapshot says about a service's nodes for one kind of request, worked out once.

A snapshot never changes, so everything a decision derives from it alone is the same for
every request naming the same service, operation and constraints: the nodes the routing
rules leave, each node's live figures, which nodes a disabled flag, an open breaker or the
emergency-only flag keep out, and the order of their costs. A `Screen` holds that. Per
request only the request's own exclusions remain (failed providers, a recovery's hold, a
rate-limited node's admitted share) and its cost ceiling (the cost limit and the budget
left), which cuts the screened nodes sorted by cost at one place. The eligible set, their
figures and the node each strategy prefers among them are then remembered per (cut, request
exclusions): callers send the same few budgets and limits again and again.

The rules' order and wording stay in routing/eligibility.py (`filter_nodes`, which also
writes a screened decision's exclusions) and the scoring in routing/strategies.py, which a
screen calls. Which nodes pass is stated twice, there and here (`Screen.base`,
`Screen.eligible`): a test added to `filter_nodes` is added here too, and
tests/routing/test_routing_equivalence.py fails until it is.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping

from routing.breaker import BreakerReason
from routing.eligibility import admission_bucket, constrain_request
from routing.rules import Constrained
from routing.strategies import Figures, choose_index, effective_health, live_figures
from routing.types import (
    BreakerState,
    NodeHealth,
    ProviderNode,
    RoutingOverride,
    RoutingRequest,
    RoutingSnapshot,
    Strategy,
)

# Bounds on what a snapshot remembers (it lives until the next reload): distinct (service,
# operation, constraints) screened, and distinct (cut, request exclusions) per screen and
# setting. Past them, decisions are computed each time (the first bound: node by node).
SCREENS_MEMO = 64
CHOICES_MEMO = 64


class Eligible:
    """The nodes left for one (cut, request exclusions), with what the strategies score."""

    __slots__ = ("chosen", "figures", "left_out", "nodes", "positions")

    def __init__(
        self, positions: list[int], nodes: list[ProviderNode], figures: list[Figures]
    ) -> None:
        self.positions = positions  # in the screen's nodes, catalog order
        self.nodes = nodes
        self.figures = figures
        # (strategy, emergency active) -> position of the node it prefers, for services
        # whose nodes weigh the same (weights make the choice depend on the request id).
        self.chosen: dict[tuple[Strategy, bool], int] = {}
        # The screen's other nodes, catalog order: the ones a decision's exclusions name.
        self.left_out: tuple[ProviderNode, ...] | None = None

    def excluded(self, nodes: tuple[ProviderNode, ...]) -> tuple[ProviderNode, ...]:
        """The screen's ``nodes`` that are not eligible, in catalog order."""
        left_out = self.left_out
        if left_out is None:
            kept = set(self.positions)
            left_out = self.left_out = tuple(n for i, n in enumerate(nodes) if i not in kept)
        return left_out


class Base:
    """The screened nodes under one (emergency active, rate-limited eligible) setting."""

    __slots__ = ("costs", "memo", "positions", "shared")

    def __init__(self, positions: list[int], costs: list[float], shared: list[int]) -> None:
        self.positions = positions  # nodes no request-independent rule keeps out
        self.costs = sorted(costs)  # their costs, cheapest first
        self.shared = shared  # those among them offered only a share of requests
        self.memo: dict[tuple[int, frozenset[int] | None], Eligible] = {}


class Screen:
    """A service's nodes for one (operation, constraints), screened against one snapshot."""

    __slots__ = ("_bases", "constrained", "costs", "figures", "health", "lives", "nodes", "slot")

    def __init__(self, constrained: Constrained, health: Mapping[str, NodeHealth]) -> None:
        self.constrained = constrained
        self.nodes = nodes = constrained.nodes
        self.health = health
        self.slot = {node.node_id: i for i, node in enumerate(nodes)}
        self.costs = [node.cost_per_request for node in nodes]
        self.lives = lives = [effective_health(node, health) for node in nodes]
        self.figures: list[Figures] = [live_figures(live) for live in lives]
        self._bases: dict[tuple[bool, bool], Base | None] = {}

    def base(self, emergency_active: bool, rate_limited_eligible: bool) -> Base | None:
        """The nodes that pass the request-independent rules; None when costs do not order
        (a NaN), and the caller must filter node by node."""
        key = (emergency_active, rate_limited_eligible)
        try:
            return self._bases[key]
        except KeyError:
            pass
        positions: list[int] = []
        shared: list[int] = []
        for i, node in enumerate(self.nodes):
            # The same tests as eligibility.filter_nodes, without the request's own.
            if not node.enabled:
                continue
            live = self.health.get(node.node_id)
            if (
                live is not None
                and live.breaker_state == BreakerState.OPEN
                and not (
                    rate_limited_eligible and live.breaker_reason == BreakerReason.RATE_LIMITED
                )
            ):
                continue
            if node.emergency_only and not emergency_active:
                continue
            positions.append(i)
            if live is not None and live.admitted_share < 1.0:
                shared.append(i)
        costs = [self.costs[i] for i in positions]
        base = None if any(c != c for c in costs) else Base(positions, costs, shared)
        self._bases[key] = base
        return base

    def eligible(
        self,
        base: Base,
        request: RoutingRequest,
        override: RoutingOverride | None,
        remaining: float | None,
        shares_apply: bool,
    ) -> Eligible:
        """The base's nodes this request may use, as eligibility.filter_nodes leaves them."""
        slot = self.slot
        removed: set[int] = set()
        failed = request.failed_providers
        if failed:
            removed.update(slot[n] for n in failed if n in slot)
        if override is not None and override.excluded_nodes:
            removed.update(slot[n] for n in override.excluded_nodes if n in slot)
        if shares_apply and base.shared:
            request_id = request.request_id
            for i in base.shared:
                node_id = self.nodes[i].node_id
                if admission_bucket(node_id, request_id) >= self.lives[i].admitted_share:
                    removed.add(i)
        # Passing both cost tests is costing no more than the lower ceiling: a prefix of
        # the base's costs in order (a NaN ceiling excludes nothing, as `cost > nan` is false).
        costs = base.costs
        cut = len(costs)
        limit = request.cost_per_request_limit
        if limit is not None:
            cut = bisect_right(costs, limit)
        if remaining is not None:
            cut = min(cut, bisect_right(costs, remaining))
        key = (cut, frozenset(removed) if removed else None)
        found = base.memo.get(key)
        if found is not None:
            return found
        ceiling = costs[cut - 1] if cut else None
        own = self.costs
        positions = [
            i
            for i in base.positions
            if ceiling is not None and own[i] <= ceiling and i not in removed
        ]
        found = Eligible(
            positions, [self.nodes[i] for i in positions], [self.figures[i] for i in positions]
        )
        if len(base.memo) < CHOICES_MEMO:
            base.memo[key] = found
        return found


def choose(
    eligible: Eligible,
    strategy: Strategy,
    emergency_active: bool,
    request: RoutingRequest,
    weighted: bool,
) -> int:
    """Position in the screen of the node `strategy` prefers among ``eligible``."""
    if weighted:
        index = choose_index(
            strategy, eligible.nodes, eligible.figures, emergency_active, request, True
        )
        return eligible.positions[index]
    key = (strategy, emergency_active)
    position = eligible.chosen.get(key)
    if position is None:
        index = choose_index(
            strategy, eligible.nodes, eligible.figures, emergency_active, request, False
        )
        position = eligible.chosen[key] = eligible.positions[index]
    return position


# Marks a (service, operation, constraints) a snapshot has decided once: the screen is built
# at the second decision, so a snapshot used for one decision (the simulator replaces its
# budgets before every call) pays nothing for it.
_SEEN = object()


def screen_for(request: RoutingRequest, snapshot: RoutingSnapshot) -> Screen | None:
    """The snapshot's screen for the request's service, operation and constraints; None the
    first time the snapshot is asked (decide filters node by node then).

    UnknownService when the service is not in the catalog.
    """
    key = (request.service, request.operation, request.constraints)
    memo = snapshot.screens
    found = memo.get(key)
    if isinstance(found, Screen):
        return found
    constrained = constrain_request(request, snapshot)
    if found is None:
        if len(memo) < SCREENS_MEMO:
            memo[key] = _SEEN
        return None
    screen = Screen(constrained, snapshot.health)
    memo[key] = screen
    return screen
