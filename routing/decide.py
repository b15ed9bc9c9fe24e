"""The per-request routing decision: filter, pick a strategy, score, and explain."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from routing.budget import server_remaining, tighter
from routing.eligibility import UnknownService, constrain_request, filter_nodes, override_for
from routing.forecast import forecast_use, screen, weighed
from routing.outcome import business_outcome, confidence_score
from routing.redundancy import affordable, hedged_cost, plan_hedge
from routing.rules import Constrained
from routing.screen import Eligible, choose, screen_for
from routing.selection import StrategyReason, pick_strategy
from routing.strategies import Figures, choose_index, effective_health
from routing.types import (
    EmergencyRequired,
    Exclusion,
    ExclusionReason,
    NodeHealth,
    NoEligibleNode,
    ProviderNode,
    RoutingDecision,
    RoutingOverride,
    RoutingRequest,
    RoutingSnapshot,
    Strategy,
    explained_later,
)

__all__ = ["EmergencyRequired", "NoEligibleNode", "UnknownService", "decide"]


def decide(
    request: RoutingRequest,
    snapshot: RoutingSnapshot,
    now: datetime,
    *,
    rate_limited_eligible: bool = False,
    hold_yields: bool = True,
    clock: Callable[[], float] | None = None,
) -> RoutingDecision:
    """The node to serve ``request`` with, given the snapshot's state at ``now``.

    ``clock`` (seconds, e.g. time.perf_counter), when given, times the strategy choice and the
    scoring of the eligible nodes: the decision's ``optimization_seconds``.

    Raises UnknownService for a service outside the catalog and NoEligibleNode when every
    node of the service is excluded. ``rate_limited_eligible`` admits nodes whose breaker is
    open only for rate limiting (for a caller's retry, routing/retry.py).

    A recovery's hold keeps traffic off the nodes it excludes while the rest of the service
    can take it. When nothing else is eligible the hold yields: the request is routed as if
    there were no override, so a held node whose breaker is not open serves rather than the
    caller getting a 503 (holds that add up, a retry that excludes the node it failed on, or
    the last node's breaker opening under a hold would otherwise strand the service).
    ``hold_yields=False`` raises NoEligibleNode instead (routing/retry.py tries its other
    tiers first).

    A rate-limited node's admitted share (routing/admission.py) yields the same way: when the
    nodes outside it are all excluded, the request goes to the limited node rather than
    nowhere (a call its limit may take, against a certain 503).

    Hard constraints (the node's operations, the catalog's defaults for the operation, the
    request's own: routing/rules.py) are applied first and never lifted; when they leave no
    node, NoEligibleNode names the one that emptied the set.

    A request that requires an emergency override is decided under the service's active
    emergency, and raises EmergencyRequired when there is none. A request that requires
    predictive analytics weighs the nodes' forecasts (routing/forecast.py). Under a
    recovery's redundancy plan, an idempotent operation's decision carries a hedge to the
    plan's standby, and its estimated cost counts it (routing/redundancy.py).

    From a snapshot's second decision for the same service, operation and constraints on,
    the snapshot's screen (routing/screen.py) answers the request-independent part; the
    explanation is worked out when the decision's explained fields are first read. Either
    way the decision is the one the rules above give.
    """
    service = request.service
    screening = screen_for(request, snapshot)
    constrained = (
        screening.constrained if screening is not None else constrain_request(request, snapshot)
    )
    nodes = constrained.nodes
    if not nodes:
        raise NoEligibleNode(service, constrained.exclusions, constrained.emptied_by)
    emergency = snapshot.emergencies.get(service)
    emergency_active = emergency is not None and emergency.active_at(now)
    if request.require_emergency_override and not emergency_active:
        raise EmergencyRequired(service)
    budget = snapshot.budgets.get(service)
    remaining = tighter(
        request.remaining_budget, server_remaining(budget, emergency, emergency_active)
    )
    override = override_for(request, snapshot)
    base = (
        screening.base(emergency_active, rate_limited_eligible)
        if screening is not None and not _beyond_screen(request, override)
        else None
    )
    if screening is None or base is None:
        return _filtered_decision(
            request,
            snapshot,
            constrained,
            emergency_active,
            remaining,
            override,
            rate_limited_eligible=rate_limited_eligible,
            hold_yields=hold_yields,
            clock=clock,
        )
    eligible = screening.eligible(
        base, request, override, remaining, shares_apply=not rate_limited_eligible
    )
    if not eligible.positions:
        # A hold or an admitted share yields, or nothing is eligible: the rare cases, which
        # the straightforward way tells apart.
        return _filtered_decision(
            request,
            snapshot,
            constrained,
            emergency_active,
            remaining,
            override,
            rate_limited_eligible=rate_limited_eligible,
            hold_yields=hold_yields,
            clock=clock,
        )
    started = clock() if clock is not None else 0.0
    strategy, strategy_reason = pick_strategy(
        request,
        nodes,
        budget,
        emergency_active,
        override.strategy if override is not None else None,
    )
    position = choose(eligible, strategy, emergency_active, request, service in snapshot.weighted)
    optimization_seconds = clock() - started if clock is not None else 0.0
    node = nodes[position]
    live = screening.lives[position]
    return explained_later(
        node,
        live,
        strategy,
        node.cost_per_request,
        live.latency_ms,
        live.success_rate,
        confidence_score(live.health_score, live.failure_probability),
        emergency_active,
        override is not None,
        remaining,
        live.failure_probability,
        optimization_seconds,
        None,
        None,
        (
            _explain,
            (
                request,
                node,
                live,
                strategy,
                strategy_reason,
                constrained,
                eligible,
                snapshot.health,
                override,
                emergency_active,
                remaining,
                rate_limited_eligible,
                not rate_limited_eligible,
            ),
        ),
    )


def _filtered_decision(
    request: RoutingRequest,
    snapshot: RoutingSnapshot,
    constrained: Constrained,
    emergency_active: bool,
    remaining: float | None,
    override: RoutingOverride | None,
    *,
    rate_limited_eligible: bool,
    hold_yields: bool,
    clock: Callable[[], float] | None,
) -> RoutingDecision:
    """`decide` node by node: every node filtered, the yielding hold and share applied."""
    service = request.service
    nodes = constrained.nodes
    health = snapshot.health

    def filtered(
        override: RoutingOverride | None, shares_apply: bool = True
    ) -> tuple[list[ProviderNode], list[Figures], list[Exclusion]]:
        return filter_nodes(
            request,
            nodes,
            health,
            override,
            emergency_active,
            remaining,
            rate_limited_eligible=rate_limited_eligible,
            shares_apply=shares_apply,
        )

    eligible, figures, exclusions = filtered(override)
    if not eligible and override is not None and hold_yields:
        held = exclusions
        override = None
        eligible, figures, exclusions = filtered(None)
        if not eligible:
            exclusions = held
    if not eligible and any(e.reason is ExclusionReason.RATE_LIMIT_SHARE for e in exclusions):
        shared = exclusions
        eligible, figures, exclusions = filtered(override, shares_apply=False)
        if not eligible:
            exclusions = shared
    if not eligible:
        raise NoEligibleNode(service, constrained.exclusions + tuple(exclusions))

    started = clock() if clock is not None else 0.0
    strategy, strategy_reason = pick_strategy(
        request,
        nodes,
        snapshot.budgets.get(service),
        emergency_active,
        override.strategy if override is not None else None,
    )
    weighted = service in snapshot.weighted
    node = eligible[choose_index(strategy, eligible, figures, emergency_active, request, weighted)]
    forecast = None
    if request.require_predictive_analytics:
        plain = node
        kept, kept_figures, screened = screen(eligible, figures)
        seen, seen_figures = weighed(kept, kept_figures)
        index = choose_index(strategy, seen, seen_figures, emergency_active, request, weighted)
        node = kept[index]
        forecast = forecast_use(node, plain, eligible, figures, health)
        exclusions = exclusions + screened
    optimization_seconds = clock() - started if clock is not None else 0.0
    live = effective_health(node, health)
    hedge = None
    if override is not None and override.standby is not None:
        ids = tuple(n.node_id for n in eligible)
        hedge = plan_hedge(request, snapshot, override, node, live, ids)
        hedge = affordable(hedge, node.cost_per_request, request, remaining)
    return explained_later(
        node,
        live,
        strategy,
        node.cost_per_request if hedge is None else hedged_cost(node.cost_per_request, hedge),
        live.latency_ms,
        live.success_rate,
        confidence_score(live.health_score, live.failure_probability),
        emergency_active,
        override is not None,
        remaining,
        live.failure_probability,
        optimization_seconds,
        forecast,
        hedge,
        (_told, (request, node, live, strategy, strategy_reason, constrained, exclusions)),
    )


def _beyond_screen(request: RoutingRequest, override: RoutingOverride | None) -> bool:
    """True for a decision the screen does not make: one weighing forecasts, or one under a
    redundancy plan (its hedge depends on the eligible nodes); they go node by node."""
    return request.require_predictive_analytics or (
        override is not None and override.standby is not None
    )


def _told(
    request: RoutingRequest,
    node: ProviderNode,
    live: NodeHealth,
    strategy: Strategy,
    strategy_reason: StrategyReason,
    constrained: Constrained,
    exclusions: list[Exclusion],
) -> dict[str, Any]:
    """The explained fields of a decision whose exclusions are known."""
    return {
        "strategy_reason": str(strategy_reason),
        "reason": (
            f"Selected {node.provider_name} using {strategy} strategy, "
            f"health score: {live.health_score:g}"
        ),
        "outcome": business_outcome(request, node, live, constrained.nodes),
        "exclusions": constrained.exclusions + tuple(exclusions),
    }


def _explain(
    request: RoutingRequest,
    node: ProviderNode,
    live: NodeHealth,
    strategy: Strategy,
    strategy_reason: StrategyReason,
    constrained: Constrained,
    eligible: Eligible,
    health: Mapping[str, NodeHealth],
    override: RoutingOverride | None,
    emergency_active: bool,
    remaining: float | None,
    rate_limited_eligible: bool,
    shares_apply: bool,
) -> dict[str, Any]:
    """The explained fields of a screened decision: the exclusions as filtering gives them.

    Filtering judges each node on its own, so the nodes the screen left out, filtered alone,
    give the same exclusions in the same order as all of them.
    """
    _, _, exclusions = filter_nodes(
        request,
        eligible.excluded(constrained.nodes),
        health,
        override,
        emergency_active,
        remaining,
        rate_limited_eligible=rate_limited_eligible,
        shares_apply=shares_apply,
    )
    return _told(request, node, live, strategy, strategy_reason, constrained, exclusions)
