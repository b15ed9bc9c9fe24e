"""`decide` (screened snapshots, explanations worked out when read) gives exactly the answers
of the straightforward composition of the rules (reference_decide.py), field for field.

A snapshot's first decision for a (service, operation, constraints) filters node by node and
the later ones use its screen, so each snapshot here serves a run of requests, twice over,
in both modes of a retry (rate-limited nodes eligible or not) and of a recovery's hold.
"""

from __future__ import annotations

import dataclasses
import pickle
from datetime import timedelta

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from reference_decide import reference_decide
from routing_builders import NOW

from routing import (
    BreakerState,
    BudgetPeriod,
    BudgetState,
    BusinessCriticality,
    EmergencyState,
    Exclusion,
    ExclusionReason,
    NodeHealth,
    NoEligibleNode,
    Priority,
    ProviderNode,
    RoutingDecision,
    RoutingOverride,
    RoutingRequest,
    RoutingSnapshot,
    Strategy,
    decide,
)
from routing.breaker import BreakerReason
from routing.types import (
    EXPLAINED_FIELDS,
    NO_BUSINESS_CONTEXT,
    BusinessContext,
    Constraints,
    CustomerImpact,
    EmergencyRequired,
    ServiceRules,
)

SERVICE = "svc"
OTHER = ProviderNode("other_node", "other", "Other", "r0", 100.0, 0.0, 1.0, 100.0)
REGIONS = ("r0", "r1", "r2")
TAGS = ("pci", "eu", "voice")
OPERATIONS = ("pay", "refund")

percent = st.floats(0.0, 100.0, allow_nan=False)
# Few distinct prices, so that ties in cost and in the cost ceiling are common.
costs = st.sampled_from([0.0, 0.001, 0.005, 0.029, 0.05, 0.1, 0.15]) | st.floats(
    0.0, 0.3, allow_nan=False
)
fractions = st.sampled_from([0.0, 0.1, 0.5, 1.0]) | st.floats(0.0, 1.2, allow_nan=False)
strategies = st.sampled_from(list(Strategy))
optional_float = st.none() | st.floats(0.0, 1000.0, allow_nan=False)


def constraints(ids: list[str]) -> st.SearchStrategy[Constraints]:
    """Constraints over the scenario's regions, tags and nodes; often none."""
    return st.just(Constraints()) | st.builds(
        Constraints,
        allowed_regions=st.frozensets(st.sampled_from(REGIONS), max_size=2),
        excluded_regions=st.frozensets(st.sampled_from(REGIONS), max_size=1),
        required_tags=st.frozensets(st.sampled_from(TAGS), max_size=1),
        excluded_nodes=st.frozensets(st.sampled_from(ids), max_size=2),
    )


@st.composite
def snapshots(draw: st.DrawFn) -> RoutingSnapshot:
    """A snapshot of SERVICE with random nodes, rules, health, override, emergency, budget."""
    count = draw(st.integers(1, 12))
    ids = [f"n{i}" for i in range(count)]
    weighted = draw(st.booleans())
    nodes = tuple(
        ProviderNode(
            node_id=node_id,
            service=SERVICE,
            provider_name=node_id.upper(),
            region=draw(st.sampled_from(REGIONS)),
            success_rate=draw(percent),
            cost_per_request=draw(costs),
            latency_ms=draw(st.sampled_from([0.0, 100.0, 250.0]) | st.floats(0.0, 2000.0)),
            health_score=draw(st.sampled_from([90.0, 99.0]) | percent),
            emergency_only=draw(st.booleans()),
            enabled=draw(st.booleans() | st.just(True)),
            tags=draw(st.frozensets(st.sampled_from(TAGS))),
            operations=draw(st.none() | st.frozensets(st.sampled_from(OPERATIONS))),
            weight=draw(st.sampled_from([0.0, 1.0, 3.0])) if weighted else 1.0,
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
            draw(st.sampled_from([0.0, 0.5]) | st.floats(0.0, 1.0, allow_nan=False)),
            breaker_reason=draw(st.none() | st.sampled_from(list(BreakerReason))),
            admitted_share=draw(st.sampled_from([1.0, 1.0, 0.0, 0.3, 0.7])),
            observations=draw(st.integers(0, 100)),
        )
        for node_id in draw(st.lists(st.sampled_from(ids), unique=True))
    }
    override = draw(
        st.none()
        | st.builds(
            RoutingOverride,
            st.just(SERVICE),
            st.just("recovery:svc:s"),
            st.frozensets(st.sampled_from(ids)),
            st.none() | strategies,
            fractions,
            # A redundancy plan's standby, now and then: decisions under one go node by node.
            st.integers(0, 3).flatmap(lambda k: st.sampled_from(ids) if k == 0 else st.none()),
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
    defaults = draw(
        st.dictionaries(st.sampled_from(OPERATIONS), constraints(ids), max_size=len(OPERATIONS))
    )
    idempotent = draw(st.frozensets(st.sampled_from(OPERATIONS)))
    return RoutingSnapshot(
        nodes={SERVICE: nodes, "other": (OTHER,)},
        health=health,
        overrides={SERVICE: override} if override else {},
        emergencies={SERVICE: emergency} if emergency else {},
        budgets={SERVICE: budget} if budget else {},
        rules={SERVICE: ServiceRules(defaults, idempotent=idempotent)}
        if defaults or idempotent
        else {},
    )


@st.composite
def requests(draw: st.DrawFn, snapshot: RoutingSnapshot) -> RoutingRequest:
    """A request for SERVICE; budgets and limits from few values, so requests share them."""
    ids = [n.node_id for n in snapshot.nodes[SERVICE]]
    return RoutingRequest(
        service=SERVICE,
        operation=draw(st.sampled_from(("", *OPERATIONS))),
        request_id=draw(st.sampled_from(["a", "b", "req-7"]) | st.text(max_size=8)),
        priority=draw(st.sampled_from(list(Priority))),
        business_criticality=draw(st.sampled_from(list(BusinessCriticality))),
        remaining_budget=draw(
            st.none() | st.sampled_from([0.0, 0.05, 100.0]) | st.floats(0.0, 50.0)
        ),
        cost_per_request_limit=draw(st.none() | costs),
        current_latency=draw(optional_float),
        target_latency=draw(optional_float),
        current_throughput=draw(optional_float),
        target_throughput=draw(optional_float),
        preferred_strategy=draw(st.none() | strategies),
        failed_providers=draw(st.just(frozenset()) | st.frozensets(st.sampled_from(ids))),
        constraints=draw(constraints(ids)),
        # Now and then: a forecast is weighed node by node, a required emergency may refuse.
        require_predictive_analytics=draw(st.sampled_from([False, False, False, True])),
        require_emergency_override=draw(st.sampled_from([False, False, False, True])),
        business=draw(
            st.just(NO_BUSINESS_CONTEXT)
            | st.builds(BusinessContext, customer_impact=st.sampled_from(list(CustomerImpact)))
        ),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[RoutingSnapshot, list[RoutingRequest]]:
    """A snapshot and a run of requests against it, some of them repeated."""
    snapshot = draw(snapshots())
    run = draw(st.lists(requests(snapshot), min_size=1, max_size=4))
    return snapshot, run + draw(st.permutations(run))


def outcome(
    request: RoutingRequest,
    snapshot: RoutingSnapshot,
    fast: bool,
    *,
    rate_limited_eligible: bool = False,
    hold_yields: bool = True,
) -> RoutingDecision | NoEligibleNode | EmergencyRequired:
    choose = decide if fast else reference_decide
    try:
        return choose(
            request,
            snapshot,
            NOW,
            rate_limited_eligible=rate_limited_eligible,
            hold_yields=hold_yields,
        )
    except (NoEligibleNode, EmergencyRequired) as error:
        return error


def assert_same(
    got: RoutingDecision | NoEligibleNode | EmergencyRequired,
    want: RoutingDecision | NoEligibleNode | EmergencyRequired,
) -> None:
    if isinstance(want, EmergencyRequired):
        assert isinstance(got, EmergencyRequired)
        assert (got.service, str(got)) == (want.service, str(want))
        return
    if isinstance(want, NoEligibleNode):
        assert isinstance(got, NoEligibleNode)
        assert (got.service, got.exclusions, got.constraint, str(got)) == (
            want.service,
            want.exclusions,
            want.constraint,
            str(want),
        )
        return
    assert isinstance(got, RoutingDecision)
    for field in dataclasses.fields(RoutingDecision):
        assert getattr(got, field.name) == getattr(want, field.name), field.name
    assert got == want
    assert repr(got) == repr(want)


@seed(21)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.booleans(), st.booleans())
def test_decide_matches_the_straightforward_decision(
    scenario: tuple[RoutingSnapshot, list[RoutingRequest]],
    rate_limited_eligible: bool,
    hold_yields: bool,
) -> None:
    snapshot, run = scenario
    flags = {"rate_limited_eligible": rate_limited_eligible, "hold_yields": hold_yields}
    for request in run:
        want = outcome(request, snapshot, False, **flags)
        assert_same(outcome(request, snapshot, True, **flags), want)
        # The second time the snapshot answers from its screen.
        assert_same(outcome(request, snapshot, True, **flags), want)


@st.composite
def one_request(draw: st.DrawFn) -> tuple[RoutingSnapshot, RoutingRequest]:
    snapshot = draw(snapshots())
    return snapshot, draw(requests(snapshot))


@seed(21)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(one_request())
def test_each_strategy_gets_its_own_choice_from_one_screen(
    scenario: tuple[RoutingSnapshot, RoutingRequest],
) -> None:
    snapshot, request = scenario
    # The same eligible set under every strategy: the screen remembers a choice per strategy.
    # The request constrains little, so that the set often holds several nodes.
    open_request = dataclasses.replace(
        request,
        operation="",
        constraints=Constraints(),
        failed_providers=frozenset(),
        remaining_budget=None,
        cost_per_request_limit=None,
        require_predictive_analytics=False,
        require_emergency_override=False,
    )
    for strategy in [*Strategy, *Strategy]:
        asked = dataclasses.replace(open_request, preferred_strategy=strategy)
        assert_same(outcome(asked, snapshot, True), outcome(asked, snapshot, False))


@seed(21)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_explanation_read_late_is_the_one_read_at_once(
    scenario: tuple[RoutingSnapshot, list[RoutingRequest]],
) -> None:
    snapshot, run = scenario
    decided = [outcome(request, snapshot, True) for request in run]
    later = [outcome(request, snapshot, True) for request in run]
    # Read in the opposite order: the first decisions' explanations after later decisions.
    for first, second, request in reversed(list(zip(decided, later, run, strict=True))):
        want = outcome(request, snapshot, False)
        assert_same(second, want)
        assert_same(first, want)


def decision_for(snapshot: RoutingSnapshot) -> RoutingDecision:
    request = RoutingRequest(SERVICE, "pay", request_id="r", cost_per_request_limit=0.05)
    decide(request, snapshot, NOW)
    return decide(request, snapshot, NOW)


CATALOG = RoutingSnapshot(
    nodes={
        SERVICE: (
            ProviderNode("cheap", SERVICE, "Cheap", "r0", 99.0, 0.01, 300.0, 90.0),
            ProviderNode("fast", SERVICE, "Fast", "r0", 99.9, 0.02, 90.0, 97.0),
            ProviderNode("dear", SERVICE, "Dear", "r1", 99.9, 0.09, 80.0, 99.0),
        )
    },
    health={"fast": NodeHealth("fast", 60.0, 95.0, 900.0, BreakerState.OPEN)},
)


def test_a_decision_replaced_or_pickled_keeps_its_explanation() -> None:
    decision = decision_for(CATALOG)
    extra = Exclusion("x", ExclusionReason.FAILED_PROVIDER, "tried")

    replaced = dataclasses.replace(decision, exclusions=(extra,))
    copied = pickle.loads(pickle.dumps(decision_for(CATALOG)))

    assert replaced.exclusions == (extra,)
    assert replaced.reason == decision.reason == copied.reason
    assert copied == decision
    assert {f: getattr(copied, f) for f in EXPLAINED_FIELDS} == {
        "strategy_reason": "balanced",
        "reason": "Selected Cheap using HYBRID_OPTIMIZATION strategy, health score: 90",
        "outcome": decision.outcome,
        "exclusions": (
            Exclusion("fast", ExclusionReason.BREAKER_OPEN, "circuit breaker is open"),
            Exclusion(
                "dear", ExclusionReason.COST_ABOVE_LIMIT, "cost 0.09 above costPerRequestLimit 0.05"
            ),
        ),
    }


def test_a_snapshot_changes_its_answer_with_its_health() -> None:
    # Each snapshot has its own screen: a later snapshot with other health answers for itself.
    healed = dataclasses.replace(CATALOG, health={})

    assert decision_for(CATALOG).node.node_id == "cheap"
    assert decision_for(healed).node.node_id == "fast"


def test_a_screened_decision_times_its_choice_as_the_first() -> None:
    ticks = iter(range(100))
    request = RoutingRequest(SERVICE, "pay", request_id="r")

    def clock() -> float:
        return float(next(ticks)) ** 2

    first = decide(request, CATALOG, NOW, clock=clock)  # node by node: clock reads 0, 1
    screened = decide(request, CATALOG, NOW, clock=clock)  # from the screen: reads 4, 9

    assert (first.optimization_seconds, screened.optimization_seconds) == (1.0, 5.0)
    assert dataclasses.replace(screened, optimization_seconds=1.0) == first
