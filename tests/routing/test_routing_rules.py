"""Routing rules: hard constraints hold in every kind of decision, weights split volume."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from routing_builders import NOW
from test_routing_properties import scenarios

from routing import (
    BreakerState,
    EmergencyState,
    NodeHealth,
    NoEligibleNode,
    ProviderNode,
    RoutingOverride,
    RoutingRequest,
    RoutingSnapshot,
    Strategy,
    decide,
)
from routing.recovery import Severity, choose_recovery, plan_recovery
from routing.retry import decide_retry
from routing.rules import constrain, serves
from routing.types import Constraints, ExclusionReason, ServiceRules

SERVICE = "svc"
REGIONS = ["us-east-1", "us-west-2", "eu-west-1"]
TAGS = ["pci", "eu", "voice"]
OPERATIONS = ["charge", "refund"]

subsets = st.frozensets


def satisfies(node: ProviderNode, request: RoutingRequest, snapshot: RoutingSnapshot) -> bool:
    """An independent statement of the hard constraints a decision must never break."""
    rules = snapshot.rules.get(request.service)
    layers = [request.constraints]
    if rules is not None and request.operation:
        layers.append(rules.for_operation(request.operation))
    if (
        node.operations is not None
        and request.operation
        and request.operation not in node.operations
    ):
        return False
    for c in layers:
        if node.node_id in c.excluded_nodes:
            return False
        if c.allowed_regions and node.region not in c.allowed_regions:
            return False
        if node.region in c.excluded_regions:
            return False
        if not c.required_tags <= node.tags:
            return False
    return True


constraint_sets = st.builds(
    Constraints,
    subsets(st.sampled_from(REGIONS)),
    subsets(st.sampled_from(REGIONS)),
    subsets(st.sampled_from(TAGS)),
    subsets(st.sampled_from([f"n{i}" for i in range(7)])),
)


@st.composite
def constrained_scenarios(draw: st.DrawFn) -> tuple[RoutingRequest, RoutingSnapshot]:
    """The property tests' scenarios, with regions, tags, operations and rules on top."""
    request, snapshot = draw(scenarios())
    nodes = tuple(
        replace(
            node,
            region=draw(st.sampled_from(REGIONS)),
            tags=draw(subsets(st.sampled_from(TAGS))),
            operations=draw(st.none() | subsets(st.sampled_from(OPERATIONS), min_size=1)),
            weight=draw(st.sampled_from([0.0, 1.0, 5.0, 95.0])),
        )
        for node in snapshot.nodes[SERVICE]
    )
    rules = ServiceRules(
        {op: draw(constraint_sets) for op in draw(subsets(st.sampled_from(OPERATIONS)))}
    )
    snapshot = replace(snapshot, nodes={**snapshot.nodes, SERVICE: nodes}, rules={SERVICE: rules})
    request = replace(
        request, operation=draw(st.sampled_from(OPERATIONS)), constraints=draw(constraint_sets)
    )
    return request, snapshot


@given(constrained_scenarios())
def test_no_decision_breaks_a_hard_constraint(
    scenario: tuple[RoutingRequest, RoutingSnapshot],
) -> None:
    request, snapshot = scenario
    for choose in (decide, decide_retry):
        try:
            decision = choose(request, snapshot, NOW)
        except NoEligibleNode as exc:
            allowed = [n for n in snapshot.nodes[SERVICE] if satisfies(n, request, snapshot)]
            if not allowed:  # the constraints emptied the set: the refusal names one
                assert exc.constraint is not None
            continue
        assert satisfies(decision.node, request, snapshot), (choose.__name__, decision.node)


@given(constrained_scenarios())
def test_an_emergency_does_not_lift_a_constraint(
    scenario: tuple[RoutingRequest, RoutingSnapshot],
) -> None:
    request, snapshot = scenario
    emergency = EmergencyState(SERVICE, "emergency:svc", "c", 1e6, 0.0, NOW + timedelta(hours=1))
    snapshot = replace(snapshot, emergencies={SERVICE: emergency})
    try:
        decision = decide(replace(request, require_emergency_override=True), snapshot, NOW)
    except NoEligibleNode:
        return
    assert decision.emergency_applied
    assert satisfies(decision.node, request, snapshot)


@given(constrained_scenarios())
def test_a_recovery_plan_keeps_the_service_wide_rules(
    scenario: tuple[RoutingRequest, RoutingSnapshot],
) -> None:
    # A recovery plans for the service as a whole: its route holds whatever the operation.
    request, snapshot = scenario
    choice = choose_recovery("provider_outage", Severity.high, 0.0, "")
    try:
        plan = plan_recovery(choice, SERVICE, request.failed_providers, snapshot, NOW)
    except NoEligibleNode:
        return
    assert plan.selected.service == SERVICE


def node(node_id: str, **fields: object) -> ProviderNode:
    base = ProviderNode(node_id, SERVICE, node_id.upper(), "us-east-1", 99.5, 0.02, 100.0, 95.0)
    return replace(base, **fields)  # type: ignore[arg-type]


def test_the_refusal_names_the_constraint_that_emptied_the_set() -> None:
    nodes = (node("a", region="us-east-1"), node("b", region="us-west-2", tags=frozenset({"pci"})))
    snapshot = RoutingSnapshot(nodes={SERVICE: nodes})
    request = RoutingRequest(
        SERVICE,
        "charge",
        constraints=Constraints(
            allowed_regions=frozenset({"us-west-2", "us-east-1"}), required_tags=frozenset({"eu"})
        ),
    )
    with pytest.raises(NoEligibleNode) as refused:
        decide(request, snapshot, NOW)
    assert refused.value.constraint == "routingContext.constraints.requiredTags"
    assert {e.reason for e in refused.value.exclusions} == {ExclusionReason.TAG_MISSING}


def test_catalog_defaults_apply_before_the_request_and_only_to_their_operation() -> None:
    nodes = (node("primary", tags=frozenset({"refunds"})), node("backup", cost_per_request=0.01))
    rules = ServiceRules({"refund": Constraints(required_tags=frozenset({"refunds"}))})
    snapshot = RoutingSnapshot(nodes={SERVICE: nodes}, rules={SERVICE: rules})
    cheap = Strategy.COST_OPTIMIZED
    charge = decide(RoutingRequest(SERVICE, "charge", preferred_strategy=cheap), snapshot, NOW)
    refund = decide(RoutingRequest(SERVICE, "refund", preferred_strategy=cheap), snapshot, NOW)
    assert charge.node.node_id == "backup"
    assert refund.node.node_id == "primary"
    assert [(e.node_id, e.reason) for e in refund.exclusions] == [
        ("backup", ExclusionReason.TAG_MISSING)
    ]
    # Even with the primary's breaker open, a refund never goes to the backup.
    down = {"primary": NodeHealth("primary", 10.0, 50.0, 100.0, BreakerState.OPEN)}
    with pytest.raises(NoEligibleNode) as refused:
        decide(RoutingRequest(SERVICE, "refund"), replace(snapshot, health=down), NOW)
    assert refused.value.constraint is None  # the constraint left a node; its breaker did not


def test_a_node_serves_only_its_operations_and_a_recovery_sees_them_all() -> None:
    voice = node("voice", operations=frozenset({"call"}))
    assert serves(voice, "call") and not serves(voice, "sms") and serves(voice, "")
    kept = constrain([voice, node("sms")], "sms", Constraints(), Constraints())
    assert [n.node_id for n in kept.nodes] == ["sms"]
    assert kept.exclusions[0].reason is ExclusionReason.OPERATION_NOT_SERVED


def test_a_hold_that_yields_does_not_lift_a_constraint() -> None:
    nodes = (node("eu", region="eu-west-1"), node("us", region="us-east-1"))
    hold = RoutingOverride(SERVICE, "recovery:svc:s", frozenset({"eu"}))
    snapshot = RoutingSnapshot(nodes={SERVICE: nodes}, overrides={SERVICE: hold})
    eu_only = Constraints(allowed_regions=frozenset({"eu-west-1"}))
    decision = decide(RoutingRequest(SERVICE, "charge", constraints=eu_only), snapshot, NOW)
    assert decision.node.node_id == "eu"  # the hold yields to the only allowed node
    retry = decide_retry(
        RoutingRequest(SERVICE, "charge", constraints=eu_only, failed_providers=frozenset({"eu"})),
        snapshot,
        NOW,
    )
    assert retry.node.node_id == "eu"  # back to the node it failed on, never to "us"


@pytest.mark.parametrize("strategy", list(Strategy))
def test_weights_split_first_attempts_among_equal_nodes(strategy: Strategy) -> None:
    weights = {"stable": 95.0, "canary": 5.0}
    nodes = tuple(node(name, weight=w) for name, w in weights.items())
    snapshot = RoutingSnapshot(nodes={SERVICE: nodes})
    requests = 20_000
    counts = Counter(
        decide(
            RoutingRequest(SERVICE, "charge", request_id=f"r{i}", preferred_strategy=strategy),
            snapshot,
            NOW,
        ).node.node_id
        for i in range(requests)
    )
    share = weights["canary"] / sum(weights.values())
    sigma = math.sqrt(requests * share * (1 - share))
    # Within five standard deviations of the binomial expectation (the ids are fixed).
    assert abs(counts["canary"] - requests * share) < 5 * sigma, counts


def test_weights_do_not_pull_traffic_to_a_clearly_worse_node() -> None:
    nodes = (node("good", weight=1.0), node("bad", weight=100.0, health_score=60.0))
    snapshot = RoutingSnapshot(nodes={SERVICE: nodes})
    chosen = {
        decide(
            RoutingRequest(
                SERVICE, "charge", request_id=f"r{i}", preferred_strategy=Strategy.HEALTH_BASED
            ),
            snapshot,
            NOW,
        ).node.node_id
        for i in range(500)
    }
    assert chosen == {"good"}
