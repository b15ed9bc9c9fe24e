"""Automatic strategy selection: which strategy a request gets when it does not name one."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from routing.eligibility import service_nodes
from routing.types import (
    BudgetState,
    BusinessCriticality,
    Priority,
    ProviderNode,
    RoutingRequest,
    RoutingSnapshot,
    Strategy,
)

# The server budget is under pressure below this share of its limit.
BUDGET_PRESSURE_SHARE = 0.20
# A client budget is under pressure when it buys fewer requests than this at the cheapest price.
BUDGET_PRESSURE_REQUESTS = 1000
LATENCY_GAP_FACTOR = 1.5
THROUGHPUT_GAP_FACTOR = 0.5


class StrategyReason(StrEnum):
    """Why a strategy was chosen: the auto-selection rule that matched."""

    CLIENT_PREFERENCE = "client_preference"
    EMERGENCY_OVERRIDE = "emergency_override"
    RECOVERY_OVERRIDE = "recovery_override"
    CRITICAL_TRAFFIC = "critical_traffic"
    BUDGET_PRESSURE = "budget_pressure"
    LATENCY_GAP = "latency_gap"
    THROUGHPUT_GAP = "throughput_gap"
    BALANCED = "balanced"


def budget_pressure(
    request: RoutingRequest, nodes: Sequence[ProviderNode], budget: BudgetState | None
) -> bool:
    """True when the server budget is nearly spent or the client's buys few requests.

    The client's budget is under pressure when it buys fewer than BUDGET_PRESSURE_REQUESTS
    requests at the price of the cheapest enabled, non-emergency node.
    """
    if budget is not None and budget.remaining < BUDGET_PRESSURE_SHARE * budget.limit:
        return True
    remaining = request.remaining_budget
    if remaining is None:
        return False
    # Same as comparing with the cheapest node's cost, but stops at the first node the
    # budget can afford enough of, so the hot path rarely scans the whole catalog.
    regular = False
    for node in nodes:
        if node.enabled and not node.emergency_only:
            if remaining >= BUDGET_PRESSURE_REQUESTS * node.cost_per_request:
                return False
            regular = True
    return regular


def pick_strategy(
    request: RoutingRequest,
    nodes: Sequence[ProviderNode],
    budget: BudgetState | None,
    emergency_active: bool,
    override_strategy: Strategy | None,
) -> tuple[Strategy, StrategyReason]:
    """The strategy and rule for a request from precomputed facts; first matching rule wins."""
    if request.preferred_strategy is not None:
        return request.preferred_strategy, StrategyReason.CLIENT_PREFERENCE
    if emergency_active:
        return Strategy.HYBRID_OPTIMIZATION, StrategyReason.EMERGENCY_OVERRIDE
    if override_strategy is not None:
        return override_strategy, StrategyReason.RECOVERY_OVERRIDE
    if (
        request.priority == Priority.CRITICAL
        or request.business_criticality == BusinessCriticality.REVENUE_BLOCKING
    ):
        return Strategy.HEALTH_BASED, StrategyReason.CRITICAL_TRAFFIC
    if budget_pressure(request, nodes, budget):
        return Strategy.COST_OPTIMIZED, StrategyReason.BUDGET_PRESSURE
    current, target = request.current_latency, request.target_latency
    if current is not None and target is not None and current > LATENCY_GAP_FACTOR * target:
        return Strategy.LATENCY_OPTIMIZED, StrategyReason.LATENCY_GAP
    current, target = request.current_throughput, request.target_throughput
    if current is not None and target is not None and current < THROUGHPUT_GAP_FACTOR * target:
        return Strategy.AVAILABILITY_FOCUSED, StrategyReason.THROUGHPUT_GAP
    return Strategy.HYBRID_OPTIMIZATION, StrategyReason.BALANCED


def choose_strategy(
    request: RoutingRequest,
    snapshot: RoutingSnapshot,
    now: datetime,
    override_in_effect: bool,
) -> tuple[Strategy, str]:
    """The strategy for a request and the code of the rule that chose it."""
    service = request.service
    nodes = service_nodes(snapshot, service)
    emergency = snapshot.emergencies.get(service)
    active = emergency is not None and emergency.active_at(now)
    override = snapshot.overrides.get(service) if override_in_effect else None
    override_strategy = override.strategy if override is not None else None
    return pick_strategy(request, nodes, snapshot.budgets.get(service), active, override_strategy)
