"""Scoring per routing strategy: which eligible node each strategy prefers, best first."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from routing.health import HealthConfig
from routing.rules import WEIGHT_TOLERANCE, weighted_pick
from routing.types import NodeHealth, ProviderNode, RoutingRequest, RoutingSnapshot, Strategy

# (health score, success rate, latency, failure probability, observations) as the strategies
# see a node; observations: the outcomes in its health window behind live figures, 0 for the
# catalog's.
Figures = tuple[float, float, float, float, int]
SortKey = tuple[float, ...]


class HybridWeights(NamedTuple):
    """Weights of the HYBRID_OPTIMIZATION score terms."""

    health: float
    success: float
    latency: float
    cost: float
    failure: float


HYBRID_WEIGHTS = HybridWeights(health=0.30, success=0.25, latency=0.20, cost=0.25, failure=0.50)
# During an emergency the incident commander has lifted the budget, so cost stops counting
# and its weight goes to success: reliability is all that matters.
EMERGENCY_HYBRID_WEIGHTS = HybridWeights(
    health=0.30, success=0.50, latency=0.20, cost=0.0, failure=0.50
)


# Nodes whose chances of success are this close are equally likely to succeed (percentage
# points; the simulator's oracle uses the same tolerance, sim/oracle.py) ...
NEAR_TIE_POINTS = 0.5
# ... and so are nodes whose chances differ by less than this many standard errors of the
# difference: live figures rest on a window of at most 100 outcomes, where one chance failure
# moves a node's success rate by about a point (docs/ROUTING.md, "Near ties").
NEAR_TIE_Z = 2.0
_Z_SQUARED = NEAR_TIE_Z**2 * 1e4  # in points squared
# The catalog figures count as this many outcomes in the live blend (routing/health.py).
_PRIOR_WEIGHT = HealthConfig().prior_weight
# Health points per error budget used beyond the catalog's (routing/health.py).
_ERROR_WEIGHT = HealthConfig().error_weight


def effective_health(node: ProviderNode, health: Mapping[str, NodeHealth]) -> NodeHealth:
    """The node's live health when known, else its catalog figures with no failure risk."""
    live = health.get(node.node_id)
    if live is not None:
        return live
    return NodeHealth(node.node_id, node.health_score, node.success_rate, node.latency_ms)


def node_figures(node: ProviderNode, health: Mapping[str, NodeHealth]) -> Figures:
    """(health score, success rate, latency, failure probability, observations) the
    strategies score."""
    live = health.get(node.node_id)
    if live is None:
        return catalog_figures(node)
    return live_figures(live)


def catalog_figures(node: ProviderNode) -> Figures:
    """The figures of a node with no live health: the catalog's, no failure risk."""
    return (node.health_score, node.success_rate, node.latency_ms, 0.0, 0)


def live_figures(live: NodeHealth) -> Figures:
    """The figures of a node's live health."""
    return (
        live.health_score,
        live.success_rate,
        live.latency_ms,
        live.failure_probability,
        live.observations,
    )


def hybrid_scores(
    nodes: Sequence[ProviderNode], figures: Sequence[Figures], emergency_active: bool
) -> list[float]:
    """HYBRID_OPTIMIZATION score of each node relative to the others (higher is better)."""
    weights = EMERGENCY_HYBRID_WEIGHTS if emergency_active else HYBRID_WEIGHTS
    w_health, w_success, w_latency, w_cost, w_failure = weights
    min_latency = max(0.0, min([f[2] for f in figures]))
    min_cost = max(0.0, min([n.cost_per_request for n in nodes]))
    scores = []
    for node, (health, success, latency, failure, _) in zip(nodes, figures, strict=True):
        cost = node.cost_per_request
        # The best node scores 1 on latency and cost; a zero figure can only be the best
        # one, and dividing by it would fail, so it scores 1 too.
        latency_ratio = min_latency / latency if latency > 0.0 else 1.0
        cost_ratio = min_cost / cost if cost > 0.0 else 1.0
        scores.append(
            w_health * health / 100.0
            + w_success * success / 100.0
            + w_latency * latency_ratio
            + w_cost * cost_ratio
            - w_failure * failure
        )
    return scores


def _weight(observations: int) -> float:
    """A blend's variance per unit p (1 - p): n / (k + n)^2 for n observed outcomes.

    A blend (k catalog + n observed) / (k + n) varies with its n observed outcomes alone; a
    catalog-only figure (n = 0) does not vary.
    """
    return observations / (_PRIOR_WEIGHT + observations) ** 2 if observations else 0.0


def near_ties(figures: Sequence[Figures]) -> list[int]:
    """Indices of the nodes about as likely to succeed as the most likely one.

    A node's chance is its success rate; its predicted risk is a forecast of an SLO breach,
    not a per-call chance, and keeps its own term in the score. The most likely node and
    every node whose success rate is at most NEAR_TIE_POINTS below it, or at most NEAR_TIE_Z
    standard errors of the difference of the two blends: variance p (1 - p) (w_a + w_b),
    p the pair's mean, w per `_weight` (two catalog-only nodes differ without noise).
    """
    best = max([f[1] for f in figures])
    floor = best - NEAR_TIE_POINTS
    anchor = _weight(next(f[4] for f in figures if f[1] == best))
    if anchor:
        return [
            i
            for i, f in enumerate(figures)
            if f[1] >= floor or _chance_tie(best, f[1], anchor + _weight(f[4]))
        ]
    # One pass, and nothing beyond a comparison for a catalog-only node (the common case).
    return [
        i
        for i, f in enumerate(figures)
        if f[1] >= floor or (f[4] and _chance_tie(best, f[1], _weight(f[4])))
    ]


def _chance_tie(best: float, success: float, spread: float) -> bool:
    """Whether the gap is within NEAR_TIE_Z standard errors (`near_ties`)."""
    gap = best - success
    p = (best + success) / 200.0
    return gap * gap <= _Z_SQUARED * p * (1.0 - p) * spread


def leveled(nodes: Sequence[ProviderNode], figures: Sequence[Figures]) -> Sequence[Figures]:
    """The figures the strategies rank by: near ties (`near_ties`) leveled.

    Among nodes about as likely to succeed as the most likely one, the gap in success rate is
    noise, so each of them is scored with the best success rate among them, and its health
    score with the points that gap cost it: HealthConfig.error_weight per error budget, as
    `routing.health.health_score` takes them, on the observed share n / (k + n) of the
    blend (a catalog score is the catalog's, whatever its success rate). Latency, cost, the
    predicted risk and what the health score holds besides errors still tell the nodes apart.
    """
    if len(figures) < 2:
        return figures
    tied = near_ties(figures)
    if len(tied) < 2:
        return figures
    best = max(figures[i][1] for i in tied)
    out = list(figures)
    for i in tied:
        health, success, latency, failure, observations = figures[i]
        if success < best:
            # Only the observed part of a blend moves with its errors: n / (k + n) of it.
            slo = nodes[i].error_rate_slo
            share = observations / (_PRIOR_WEIGHT + observations)
            gain = share * _ERROR_WEIGHT * (best - success) / slo if slo > 0 else 0.0
            out[i] = (min(100.0, health + gain), best, latency, failure, observations)
    return out


# Each key function returns one sort key per node, smallest is best; the catalog index is
# the last element so ties always fall back to catalog order and keys never compare equal.
KeyFunction = Callable[[Sequence[ProviderNode], Sequence[Figures], bool], list[SortKey]]


def _health_keys(
    nodes: Sequence[ProviderNode], figures: Sequence[Figures], emergency_active: bool
) -> list[SortKey]:
    return [
        (-f[0], -f[1], n.cost_per_request, i)
        for i, (n, f) in enumerate(zip(nodes, figures, strict=True))
    ]


def _cost_keys(
    nodes: Sequence[ProviderNode], figures: Sequence[Figures], emergency_active: bool
) -> list[SortKey]:
    return [
        (n.cost_per_request, -f[0], i) for i, (n, f) in enumerate(zip(nodes, figures, strict=True))
    ]


def _latency_keys(
    nodes: Sequence[ProviderNode], figures: Sequence[Figures], emergency_active: bool
) -> list[SortKey]:
    return [(f[2], -f[0], i) for i, f in enumerate(figures)]


def _availability_keys(
    nodes: Sequence[ProviderNode], figures: Sequence[Figures], emergency_active: bool
) -> list[SortKey]:
    return [
        (-f[1] * (1.0 - f[3]), -f[0], n.cost_per_request, i)
        for i, (n, f) in enumerate(zip(nodes, figures, strict=True))
    ]


def _hybrid_keys(
    nodes: Sequence[ProviderNode], figures: Sequence[Figures], emergency_active: bool
) -> list[SortKey]:
    return [(-s, i) for i, s in enumerate(hybrid_scores(nodes, figures, emergency_active))]


STRATEGY_KEYS: Mapping[Strategy, KeyFunction] = {
    Strategy.HEALTH_BASED: _health_keys,
    Strategy.COST_OPTIMIZED: _cost_keys,
    Strategy.LATENCY_OPTIMIZED: _latency_keys,
    Strategy.AVAILABILITY_FOCUSED: _availability_keys,
    Strategy.HYBRID_OPTIMIZATION: _hybrid_keys,
}


def best_index(
    strategy: Strategy,
    nodes: Sequence[ProviderNode],
    figures: Sequence[Figures],
    emergency_active: bool,
) -> int:
    """Index in ``nodes`` of the node the strategy prefers; ValueError when there is none."""
    if len(nodes) <= 1:
        if not nodes:
            raise ValueError("no nodes to choose from")
        return 0
    figures = leveled(nodes, figures)
    if strategy == Strategy.HYBRID_OPTIMIZATION:
        # Hot path shortcut with the same result as the keys: max() keeps the first of equal
        # scores, which is catalog order.
        scores = hybrid_scores(nodes, figures, emergency_active)
        return max(range(len(scores)), key=scores.__getitem__)
    keys = STRATEGY_KEYS[strategy](nodes, figures, emergency_active)
    return int(min(keys)[-1])


def choose_index(
    strategy: Strategy,
    nodes: Sequence[ProviderNode],
    figures: Sequence[Figures],
    emergency_active: bool,
    request: RoutingRequest,
    weighted: bool = True,
) -> int:
    """`best_index`, or with unequal node weights a weighted pick among the nodes the
    strategy rates within WEIGHT_TOLERANCE of the best (routing/rules.py). `weighted=False`
    says the service's nodes all weigh the same (RoutingSnapshot.weighted)."""
    best = best_index(strategy, nodes, figures, emergency_active)
    if not weighted:
        return best
    first = nodes[0].weight
    if all(node.weight == first for node in nodes):
        return best
    value = _primary_figures(strategy, nodes, figures, emergency_active)
    bar = value[best] - WEIGHT_TOLERANCE * abs(value[best])
    candidates = [i for i, v in enumerate(value) if v >= bar]
    weights = [node.weight for node in nodes]
    return weighted_pick(candidates, weights, request.service, request.request_id)


def _primary_figures(
    strategy: Strategy,
    nodes: Sequence[ProviderNode],
    figures: Sequence[Figures],
    emergency_active: bool,
) -> list[float]:
    """What each strategy ranks by first, higher is better (for weights' tolerance)."""
    figures = leveled(nodes, figures)
    if strategy == Strategy.HYBRID_OPTIMIZATION:
        return hybrid_scores(nodes, figures, emergency_active)
    if strategy == Strategy.COST_OPTIMIZED:
        return [-n.cost_per_request for n in nodes]
    if strategy == Strategy.LATENCY_OPTIMIZED:
        return [-f[2] for f in figures]
    if strategy == Strategy.AVAILABILITY_FOCUSED:
        return [f[1] * (1.0 - f[3]) for f in figures]
    return [f[0] for f in figures]


def select(
    strategy: Strategy,
    nodes: Sequence[ProviderNode],
    snapshot: RoutingSnapshot,
    emergency_active: bool,
) -> ProviderNode:
    """The node the strategy prefers among ``nodes``; ValueError when there is none."""
    figures = [node_figures(n, snapshot.health) for n in nodes]
    return nodes[best_index(strategy, nodes, figures, emergency_active)]


def rank(
    strategy: Strategy,
    nodes: Sequence[ProviderNode],
    snapshot: RoutingSnapshot,
    emergency_active: bool,
) -> tuple[ProviderNode, ...]:
    """All ``nodes`` ordered best first under the strategy (empty in, empty out)."""
    if not nodes:
        return ()
    figures = leveled(nodes, [node_figures(n, snapshot.health) for n in nodes])
    keys = STRATEGY_KEYS[strategy](nodes, figures, emergency_active)
    return tuple(nodes[int(k[-1])] for k in sorted(keys))
