"""Property tests: decisions respect every exclusion, every budget, and are deterministic."""

from __future__ import annotations

import dataclasses
import zlib
from collections import Counter
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from routing_builders import NOW

from routing import (
    BreakerState,
    BudgetPeriod,
    BudgetState,
    BusinessCriticality,
    EmergencyRequired,
    EmergencyState,
    ExclusionReason,
    NodeHealth,
    NoEligibleNode,
    Priority,
    ProviderNode,
    RecoveryAction,
    RecoveryChoice,
    RoutingDecision,
    RoutingOverride,
    RoutingRequest,
    RoutingSnapshot,
    Strategy,
    decide,
    effective_remaining,
    eligible_nodes,
    plan_recovery,
    rank,
)

SERVICE = "svc"
# A second service whose nodes must never be chosen for SERVICE.
OTHER = ProviderNode("other_node", "other", "Other", "r", 100.0, 0.0, 1.0, 100.0)

percent = st.floats(0.0, 100.0, allow_nan=False)
costs = st.sampled_from([0.0, 0.001, 0.005, 0.029, 0.05, 0.1, 0.15]) | st.floats(
    0.0, 0.3, allow_nan=False
)
fractions = st.sampled_from([0.0, 0.1, 0.5, 1.0]) | st.floats(0.0, 1.2, allow_nan=False)
strategies = st.sampled_from(list(Strategy))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[RoutingRequest, RoutingSnapshot]:
    """A request for SERVICE and a snapshot with random nodes, health, override and budgets."""
    count = draw(st.integers(1, 7))
    ids = [f"n{i}" for i in range(count)]
    nodes = tuple(
        ProviderNode(
            node_id=node_id,
            service=SERVICE,
            provider_name=node_id.upper(),
            region="r",
            success_rate=draw(percent),
            cost_per_request=draw(costs),
            latency_ms=draw(st.floats(0.0, 2000.0, allow_nan=False)),
            health_score=draw(percent),
            emergency_only=draw(st.booleans()),
            enabled=draw(st.booleans() | st.just(True)),
        )
        for node_id in ids
    )
    health = {
        node_id: NodeHealth(
            node_id,
            draw(percent),
            draw(percent),
            draw(st.floats(0.0, 3000.0, allow_nan=False)),
            draw(st.sampled_from(list(BreakerState))),
            draw(st.floats(0.0, 1.0, allow_nan=False)),
        )
        for node_id in draw(st.lists(st.sampled_from(ids), unique=True))
    }
    subset = st.frozensets(st.sampled_from(ids))
    override = draw(
        st.none()
        | st.builds(
            RoutingOverride,
            st.just(SERVICE),
            st.just("recovery:svc:s"),
            subset,
            st.none() | strategies,
            fractions,
        )
    )
    emergency = draw(
        st.none()
        | st.builds(
            EmergencyState,
            st.just(SERVICE),
            st.just("emergency:svc"),
            st.just("c"),
            st.floats(0.0, 50.0, allow_nan=False),
            st.floats(0.0, 60.0, allow_nan=False),
            st.sampled_from([NOW - timedelta(minutes=1), NOW, NOW + timedelta(minutes=1)]),
        )
    )
    budget = draw(
        st.none()
        | st.builds(
            BudgetState,
            st.just(SERVICE),
            st.just(BudgetPeriod.daily),
            st.floats(0.0, 100.0, allow_nan=False),
            st.floats(0.0, 120.0, allow_nan=False),
        )
    )
    snapshot = RoutingSnapshot(
        nodes={SERVICE: nodes, "other": (OTHER,)},
        health=health,
        overrides={SERVICE: override} if override else {},
        emergencies={SERVICE: emergency} if emergency else {},
        budgets={SERVICE: budget} if budget else {},
    )
    optional_float = st.none() | st.floats(0.0, 1000.0, allow_nan=False)
    request = RoutingRequest(
        service=SERVICE,
        operation="op",
        request_id=draw(st.text(max_size=12)),
        priority=draw(st.sampled_from(list(Priority))),
        business_criticality=draw(st.sampled_from(list(BusinessCriticality))),
        remaining_budget=draw(st.none() | st.floats(0.0, 50.0, allow_nan=False)),
        cost_per_request_limit=draw(st.none() | costs),
        current_latency=draw(optional_float),
        target_latency=draw(optional_float),
        current_throughput=draw(optional_float),
        target_throughput=draw(optional_float),
        preferred_strategy=draw(st.none() | strategies),
        failed_providers=draw(subset),
        # Requiring the emergency is only decided when one is active (else EmergencyRequired,
        # test_emergency_required_without_an_active_emergency).
        require_emergency_override=draw(st.booleans())
        and emergency is not None
        and emergency.active_at(NOW),
    )
    return request, snapshot


def expected_reasons(
    request: RoutingRequest, snapshot: RoutingSnapshot
) -> dict[str, ExclusionReason | None]:
    """Every node's exclusion reason, with the recovery hold yielding when it leaves nothing.

    A hold that would leave the request no eligible node yields: the reasons are then those
    without the override, provided some node is eligible that way.
    """
    nodes = snapshot.nodes[SERVICE]
    held = {n.node_id: expected_reason(n, request, snapshot) for n in nodes}
    if any(reason is None for reason in held.values()):
        return held
    free = {n.node_id: expected_reason(n, request, snapshot, hold=False) for n in nodes}
    return free if any(reason is None for reason in free.values()) else held


def expected_reason(
    node: ProviderNode, request: RoutingRequest, snapshot: RoutingSnapshot, *, hold: bool = True
) -> ExclusionReason | None:
    """An independent statement of the exclusion rules, first match wins."""
    emergency = snapshot.emergencies.get(SERVICE)
    active = (
        emergency is not None
        and emergency.deadline > NOW
        and emergency.spent < (emergency.max_budget_override)
    )
    override = snapshot.overrides.get(SERVICE) if hold else None
    if override is not None:
        bucket = zlib.crc32(f"{SERVICE}:{request.request_id}".encode()) % 10000 / 10000
        if override.restore_fraction >= 1.0 or bucket < override.restore_fraction:
            override = None
    budget = snapshot.budgets.get(SERVICE)
    server = None
    if budget is not None:
        server = max(0.0, budget.limit - budget.spent)
        if active and emergency is not None:
            server += max(0.0, emergency.max_budget_override - emergency.spent)
    caps = [c for c in (request.remaining_budget, server) if c is not None]
    live = snapshot.health.get(node.node_id)
    limit = request.cost_per_request_limit
    rules = [
        (not node.enabled, ExclusionReason.DISABLED),
        (node.node_id in request.failed_providers, ExclusionReason.FAILED_PROVIDER),
        (
            override is not None and node.node_id in override.excluded_nodes,
            ExclusionReason.EXCLUDED_BY_RECOVERY,
        ),
        (
            live is not None and live.breaker_state == BreakerState.OPEN,
            ExclusionReason.BREAKER_OPEN,
        ),
        (node.emergency_only and not active, ExclusionReason.EMERGENCY_ONLY),
        (limit is not None and node.cost_per_request > limit, ExclusionReason.COST_ABOVE_LIMIT),
        (bool(caps) and node.cost_per_request > min(caps), ExclusionReason.BUDGET_EXHAUSTED),
    ]
    return next((reason for excluded, reason in rules if excluded), None)


def decide_or_exclusions(
    request: RoutingRequest, snapshot: RoutingSnapshot
) -> RoutingDecision | NoEligibleNode:
    try:
        return decide(request, snapshot, NOW)
    except NoEligibleNode as error:
        return error


@given(scenarios())
def test_decision_never_selects_an_ineligible_node(
    scenario: tuple[RoutingRequest, RoutingSnapshot],
) -> None:
    request, snapshot = scenario
    nodes = snapshot.nodes[SERVICE]
    expected = expected_reasons(request, snapshot)

    result = decide_or_exclusions(request, snapshot)

    got = {e.node_id: e.reason for e in result.exclusions}
    assert got == {k: v for k, v in expected.items() if v is not None}
    if isinstance(result, RoutingDecision):
        assert result.node in nodes
        assert expected[result.node.node_id] is None
    else:
        assert all(reason is not None for reason in expected.values())


@given(scenarios())
def test_emergency_required_without_an_active_emergency(
    scenario: tuple[RoutingRequest, RoutingSnapshot],
) -> None:
    request, snapshot = scenario
    emergency = snapshot.emergencies.get(SERVICE)
    required = dataclasses.replace(request, require_emergency_override=True)

    if emergency is None or not emergency.active_at(NOW):
        with pytest.raises(EmergencyRequired):
            decide(required, snapshot, NOW)
        return
    # Under an active emergency every request is decided under it: requiring it changes nothing.
    plain = decide_or_exclusions(
        dataclasses.replace(required, require_emergency_override=False), snapshot
    )
    got = decide_or_exclusions(required, snapshot)
    if isinstance(plain, RoutingDecision):
        assert got == plain
    else:
        assert isinstance(got, NoEligibleNode)


@given(scenarios())
def test_estimated_cost_within_limit_and_remaining_budget(
    scenario: tuple[RoutingRequest, RoutingSnapshot],
) -> None:
    request, snapshot = scenario
    remaining = effective_remaining(request, snapshot, NOW)

    result = decide_or_exclusions(request, snapshot)

    if isinstance(result, RoutingDecision):
        assert result.effective_budget_remaining == remaining
        caps = [c for c in (request.cost_per_request_limit, remaining) if c is not None]
        assert all(result.estimated_cost <= cap for cap in caps)
        assert result.estimated_cost == result.node.cost_per_request


@given(scenarios())
def test_same_inputs_same_decision(scenario: tuple[RoutingRequest, RoutingSnapshot]) -> None:
    request, snapshot = scenario
    rebuilt = dataclasses.replace(
        snapshot,
        nodes=dict(snapshot.nodes),
        health=dict(reversed(list(snapshot.health.items()))),
    )

    first = decide_or_exclusions(request, snapshot)
    second = decide_or_exclusions(request, snapshot)
    third = decide_or_exclusions(dataclasses.replace(request), rebuilt)

    if isinstance(first, RoutingDecision):
        assert first == second == third
    else:
        assert isinstance(second, NoEligibleNode) and isinstance(third, NoEligibleNode)
        assert first.exclusions == second.exclusions == third.exclusions


@given(scenarios())
def test_exclusions_list_every_node_exactly_once(
    scenario: tuple[RoutingRequest, RoutingSnapshot],
) -> None:
    request, snapshot = scenario
    ids = [n.node_id for n in snapshot.nodes[SERVICE]]

    result = decide_or_exclusions(request, snapshot)

    excluded = Counter(e.node_id for e in result.exclusions)
    assert all(count == 1 for count in excluded.values())
    if isinstance(result, NoEligibleNode):
        assert excluded == Counter(ids)
        assert result.service == SERVICE
    else:
        assert result.node.node_id not in excluded
        assert set(excluded) <= set(ids)


@given(scenarios())
def test_decision_is_the_best_ranked_eligible_node(
    scenario: tuple[RoutingRequest, RoutingSnapshot],
) -> None:
    request, snapshot = scenario

    result = decide_or_exclusions(request, snapshot)

    if isinstance(result, RoutingDecision):
        eligible, exclusions, in_effect = eligible_nodes(request, snapshot, NOW)
        if in_effect and not result.recovery_override_applied:
            # The hold yielded: it left nothing, and the decision is made without it.
            assert eligible == ()
            eligible, exclusions, in_effect = eligible_nodes(
                request, snapshot, NOW, apply_override=False
            )
        assert exclusions == result.exclusions
        assert in_effect == result.recovery_override_applied
        ranked = rank(result.strategy, eligible, snapshot, result.emergency_applied)
        assert ranked[0] == result.node
        assert sorted(n.node_id for n in ranked) == sorted(n.node_id for n in eligible)


@given(scenarios(), strategies, st.sampled_from(list(RecoveryAction)))
def test_recovery_plan_avoids_failed_providers(
    scenario: tuple[RoutingRequest, RoutingSnapshot],
    strategy: Strategy,
    action: RecoveryAction,
) -> None:
    request, snapshot = scenario
    choice = RecoveryChoice(strategy, action, "property")
    failed = request.failed_providers

    try:
        plan = plan_recovery(choice, SERVICE, failed, snapshot, NOW)
    except NoEligibleNode as error:
        assert len(error.exclusions) == len(snapshot.nodes[SERVICE])
        return

    if action is not RecoveryAction.retry_with_backoff:
        assert plan.selected.node_id not in failed
        assert plan.excluded_nodes == failed
    if plan.standby is not None:
        assert action is RecoveryAction.enable_multi_provider_redundancy
        assert plan.standby != plan.selected
        assert plan.standby.node_id not in failed
        # Figures are rounded to 6 decimals (MONEY_DECIMALS), so allow half a unit of that.
        assert plan.estimated_cost >= plan.selected.cost_per_request - 5e-7
