"""Exclusion reasons, their order, and the staged-restore share of an override."""

from __future__ import annotations

import dataclasses
import zlib
from datetime import timedelta
from typing import Any

import pytest
from routing_builders import NOW, node, snapshot_of

from routing import (
    RESTORE_BUCKETS,
    BreakerState,
    BudgetPeriod,
    BudgetState,
    EmergencyState,
    Exclusion,
    ExclusionReason,
    NodeHealth,
    NoEligibleNode,
    ProviderNode,
    RoutingOverride,
    RoutingRequest,
    RoutingSnapshot,
    Strategy,
    UnknownService,
    decide,
    eligible_nodes,
    restore_bucket,
)

OK = node("ok", cost=0.01)


def reasons(request: RoutingRequest, *nodes: ProviderNode, **snapshot: Any) -> dict[str, Exclusion]:
    """The exclusions of ``nodes`` by node id; a plain node ``ok`` is always eligible."""
    snap = snapshot_of(OK, *nodes, **snapshot)
    eligible, exclusions, _ = eligible_nodes(request, snap, NOW)
    assert OK in eligible
    return {e.node_id: e for e in exclusions}


def request(**fields: Any) -> RoutingRequest:
    return RoutingRequest(service="svc", operation="op", **fields)


def test_disabled() -> None:
    got = reasons(request(), node("off", enabled=False))

    assert got["off"] == Exclusion(
        "off", ExclusionReason.DISABLED, "node is disabled in the catalog"
    )


def test_failed_provider() -> None:
    got = reasons(request(failed_providers=frozenset({"bad"})), node("bad"))

    assert got["bad"].reason == ExclusionReason.FAILED_PROVIDER
    assert got["bad"].detail == "reported as failed by the caller (failedProviders)"


def test_excluded_by_recovery() -> None:
    override = RoutingOverride("svc", "recovery:svc:s1", frozenset({"held"}))

    got = reasons(request(), node("held"), overrides={"svc": override})

    assert got["held"] == Exclusion(
        "held",
        ExclusionReason.EXCLUDED_BY_RECOVERY,
        "held out of rotation by recovery recovery:svc:s1",
    )


def test_breaker_open() -> None:
    live = {"tripped": NodeHealth("tripped", 90, 99, 200, BreakerState.OPEN)}

    got = reasons(request(), node("tripped"), node("probing"), health=live)

    assert got["tripped"] == Exclusion(
        "tripped", ExclusionReason.BREAKER_OPEN, "circuit breaker is open"
    )
    assert "probing" not in got


def test_half_open_breaker_stays_eligible() -> None:
    live = {"probing": NodeHealth("probing", 90, 99, 200, BreakerState.HALF_OPEN)}

    assert reasons(request(), node("probing"), health=live) == {}


def test_emergency_only_without_active_emergency() -> None:
    got = reasons(request(require_emergency_override=True), node("reserve", emergency_only=True))

    assert got["reserve"] == Exclusion(
        "reserve",
        ExclusionReason.EMERGENCY_ONLY,
        "emergency-only node and no emergency is active for svc",
    )


@pytest.mark.parametrize("require_override", [False, True])
def test_emergency_only_admitted_during_an_active_emergency(require_override: bool) -> None:
    emergency = EmergencyState("svc", "e", "c", 100.0, 10.0, NOW + timedelta(minutes=1))
    req = request(require_emergency_override=require_override)

    got = reasons(req, node("reserve", emergency_only=True), emergencies={"svc": emergency})

    assert got == {}


@pytest.mark.parametrize(
    "emergency",
    [
        EmergencyState("svc", "e", "c", 100.0, 10.0, NOW),  # deadline reached
        EmergencyState("svc", "e", "c", 100.0, 100.0, NOW + timedelta(minutes=1)),  # cap spent
        EmergencyState("other", "e", "c", 100.0, 0.0, NOW + timedelta(minutes=1)),
    ],
)
def test_inactive_or_foreign_emergency_does_not_admit(emergency: EmergencyState) -> None:
    got = reasons(
        request(), node("reserve", emergency_only=True), emergencies={emergency.service: emergency}
    )

    assert got["reserve"].reason == ExclusionReason.EMERGENCY_ONLY


def test_cost_above_limit() -> None:
    got = reasons(
        request(cost_per_request_limit=0.1), node("dear", cost=0.15), node("at", cost=0.1)
    )

    assert got == {
        "dear": Exclusion(
            "dear", ExclusionReason.COST_ABOVE_LIMIT, "cost 0.15 above costPerRequestLimit 0.1"
        )
    }


def test_budget_exhausted_by_client_budget() -> None:
    got = reasons(request(remaining_budget=0.02), node("dear", cost=0.03), node("at", cost=0.02))

    assert got == {
        "dear": Exclusion(
            "dear", ExclusionReason.BUDGET_EXHAUSTED, "cost 0.03 above remaining budget 0.02"
        )
    }


def test_budget_exhausted_by_server_budget() -> None:
    budget = BudgetState("svc", BudgetPeriod.daily, 100.0, 99.985)

    got = reasons(request(remaining_budget=50.0), node("dear", cost=0.02), budgets={"svc": budget})

    assert got["dear"].reason == ExclusionReason.BUDGET_EXHAUSTED


def test_emergency_headroom_lifts_server_budget() -> None:
    spent = {"svc": BudgetState("svc", BudgetPeriod.daily, 100.0, 100.0)}
    emergency = {"svc": EmergencyState("svc", "e", "c", 5.0, 4.0, NOW + timedelta(minutes=1))}
    nodes = (node("a", cost=0.5), node("b", cost=2.0))

    without, _, _ = eligible_nodes(request(), snapshot_of(*nodes, budgets=spent), NOW)
    with_emergency, exclusions, _ = eligible_nodes(
        request(), snapshot_of(*nodes, budgets=spent, emergencies=emergency), NOW
    )

    assert without == ()
    # Headroom is the unspent emergency cap: 5 - 4 = 1, enough for a but not for b.
    assert [n.node_id for n in with_emergency] == ["a"]
    assert exclusions == (
        Exclusion("b", ExclusionReason.BUDGET_EXHAUSTED, "cost 2 above remaining budget 1"),
    )


def test_first_matching_reason_wins() -> None:
    # One node that every rule would exclude; lifting one cause at a time reveals the next.
    live = {"n": NodeHealth("n", 90, 99, 200, BreakerState.OPEN)}
    held = {"svc": RoutingOverride("svc", "r", frozenset({"n"}))}
    limits: dict[str, Any] = {"cost_per_request_limit": 0.1, "remaining_budget": 1.0}
    failed = frozenset({"n"})
    cases = [
        (node("n", enabled=False, emergency_only=True, cost=5.0), failed, limits, live, held),
        (node("n", emergency_only=True, cost=5.0), failed, limits, live, held),
        (node("n", emergency_only=True, cost=5.0), frozenset(), limits, live, held),
        (node("n", emergency_only=True, cost=5.0), frozenset(), limits, live, {}),
        (node("n", emergency_only=True, cost=5.0), frozenset(), limits, {}, {}),
        (node("n", cost=5.0), frozenset(), limits, {}, {}),
        (node("n", cost=5.0), frozenset(), {"remaining_budget": 1.0}, {}, {}),
    ]
    expected = [
        ExclusionReason.DISABLED,
        ExclusionReason.FAILED_PROVIDER,
        ExclusionReason.EXCLUDED_BY_RECOVERY,
        ExclusionReason.BREAKER_OPEN,
        ExclusionReason.EMERGENCY_ONLY,
        ExclusionReason.COST_ABOVE_LIMIT,
        ExclusionReason.BUDGET_EXHAUSTED,
    ]

    got = [
        reasons(request(failed_providers=f, **lim), n, health=h, overrides=o)["n"].reason
        for n, f, lim, h, o in cases
    ]

    assert got == expected


def test_no_eligible_node_lists_every_exclusion() -> None:
    snap = snapshot_of(node("a", enabled=False), node("b", cost=1.0))
    req = request(cost_per_request_limit=0.5)

    with pytest.raises(NoEligibleNode) as raised:
        decide(req, snap, NOW)

    assert raised.value.service == "svc"
    assert [(e.node_id, e.reason) for e in raised.value.exclusions] == [
        ("a", ExclusionReason.DISABLED),
        ("b", ExclusionReason.COST_ABOVE_LIMIT),
    ]


def test_unknown_service() -> None:
    with pytest.raises(UnknownService) as raised:
        decide(RoutingRequest(service="nope", operation="op"), snapshot_of(OK), NOW)

    assert isinstance(raised.value, KeyError)
    assert str(raised.value) == "unknown service 'nope'"
    with pytest.raises(KeyError):
        eligible_nodes(RoutingRequest(service="nope", operation="op"), snapshot_of(OK), NOW)


def test_restore_bucket_is_crc32_of_service_and_request_id() -> None:
    expected = zlib.crc32(b"svc:req-42") % RESTORE_BUCKETS / RESTORE_BUCKETS

    assert restore_bucket("svc", "req-42") == expected
    assert 0.0 <= expected < 1.0


STAGED = snapshot_of(node("primary", health=95), node("backup", health=80))


def staged(fraction: float) -> RoutingSnapshot:
    override = RoutingOverride(
        "svc", "r", frozenset({"primary"}), Strategy.COST_OPTIMIZED, restore_fraction=fraction
    )
    return dataclasses.replace(STAGED, overrides={"svc": override})


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.9])
def test_staged_restore_gives_the_fraction_back(fraction: float) -> None:
    snap = staged(fraction)
    restored = 0
    for i in range(10_000):
        req = RoutingRequest(
            service="svc",
            operation="op",
            request_id=f"req-{i}",
            preferred_strategy=Strategy.HEALTH_BASED,
        )
        decision = decide(req, snap, NOW)
        if not decision.recovery_override_applied:
            restored += 1
            assert decision.node.node_id == "primary"
            assert decision.exclusions == ()
        else:
            assert decision.node.node_id == "backup"

    assert abs(restored / 10_000 - fraction) <= 0.02


def test_restored_request_ignores_the_override_strategy() -> None:
    snap = staged(0.5)
    ids = [f"req-{i}" for i in range(200)]
    restored_id = next(i for i in ids if restore_bucket("svc", i) < 0.5)
    held_id = next(i for i in ids if restore_bucket("svc", i) >= 0.5)

    restored = decide(
        RoutingRequest(service="svc", operation="op", request_id=restored_id), snap, NOW
    )
    held = decide(RoutingRequest(service="svc", operation="op", request_id=held_id), snap, NOW)

    assert (restored.strategy, restored.strategy_reason) == (
        Strategy.HYBRID_OPTIMIZATION,
        "balanced",
    )
    assert (held.strategy, held.strategy_reason) == (Strategy.COST_OPTIMIZED, "recovery_override")
    assert held.recovery_override_applied


@pytest.mark.parametrize(("fraction", "in_effect"), [(0.0, True), (1.0, False), (1.5, False)])
def test_restore_fraction_bounds(fraction: float, in_effect: bool) -> None:
    snap = staged(fraction)
    for i in range(100):
        req = RoutingRequest(service="svc", operation="op", request_id=f"req-{i}")
        _, _, applied = eligible_nodes(req, snap, NOW)
        assert applied is in_effect


def test_override_can_be_ignored_for_recovery_planning() -> None:
    snap = staged(0.0)
    req = RoutingRequest(service="svc", operation="op")

    eligible, exclusions, applied = eligible_nodes(req, snap, NOW, apply_override=False)

    assert [n.node_id for n in eligible] == ["primary", "backup"]
    assert exclusions == ()
    assert applied is False
