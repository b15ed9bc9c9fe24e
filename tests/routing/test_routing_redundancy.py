"""A redundancy plan is carried out: hedges for idempotent operations, standby-first retries."""

from __future__ import annotations

import dataclasses

from routing_builders import NOW, node, snapshot_of

from routing import (
    ExclusionReason,
    RoutingOverride,
    RoutingRequest,
    RoutingSnapshot,
    Strategy,
    decide,
    decide_retry,
)
from routing.types import ServiceRules

HOLD = RoutingOverride(
    "samsara",
    "recovery:samsara:error_stream_samsara_002",
    frozenset({"samsara_primary"}),
    Strategy.AVAILABILITY_FOCUSED,
    standby="samsara_secondary_eu",
)
GPS = RoutingRequest(service="samsara", operation="gps_tracking", request_id="r1")


def held(snapshot: RoutingSnapshot, override: RoutingOverride = HOLD) -> RoutingSnapshot:
    return dataclasses.replace(snapshot, overrides={"samsara": override})


def test_idempotent_operation_carries_a_hedge_to_the_standby(
    default_snapshot: RoutingSnapshot,
) -> None:
    decision = decide(GPS, held(default_snapshot), NOW)

    assert decision.node.node_id == "samsara_backup"
    assert decision.hedge is not None
    assert decision.hedge.node.node_id == "samsara_secondary_eu"
    # Twice the backup's typical 250 ms; a tenth of requests that slow.
    assert (decision.hedge.delay_ms, decision.hedge.share) == (500.0, 0.1)
    # What is sent: the backup, plus the standby for a tenth: the seed's plan figure.
    assert decision.estimated_cost == 0.061


def test_no_plan_no_hedge(default_snapshot: RoutingSnapshot) -> None:
    plain = held(default_snapshot, dataclasses.replace(HOLD, standby=None))

    decision = decide(GPS, plain, NOW)

    assert decision.node.node_id == "samsara_backup"
    assert decision.hedge is None and decision.estimated_cost == 0.055


def test_non_idempotent_operation_is_sent_once(default_snapshot: RoutingSnapshot) -> None:
    command = dataclasses.replace(GPS, operation="vehicle_command")

    decision = decide(command, held(default_snapshot), NOW)

    assert decision.hedge is None and decision.estimated_cost == 0.055
    # Not idempotent unless the catalog says so.
    unmarked = dataclasses.replace(held(default_snapshot), rules={})
    assert decide(GPS, unmarked, NOW).hedge is None


def test_restored_share_and_unaffordable_hedges_are_not_sent(
    default_snapshot: RoutingSnapshot,
) -> None:
    restored = held(default_snapshot, dataclasses.replace(HOLD, restore_fraction=1.0))
    assert decide(GPS, restored, NOW).hedge is None
    # 0.055 + 0.006 is above a limit of 0.058: the backup alone fits.
    limited = dataclasses.replace(GPS, cost_per_request_limit=0.058)
    decision = decide(limited, held(default_snapshot), NOW)
    assert decision.hedge is None and decision.estimated_cost == 0.055


# A held primary, two healthy nodes and the plan's standby, the least healthy of them.
NODES = snapshot_of(
    node("a", health=95.0),
    node("b", health=92.0),
    node("c", health=91.0),
    node("d", health=80.0),
)
HOLD_A = RoutingOverride("svc", "recovery:svc:s", frozenset({"a"}), Strategy.HEALTH_BASED)


def test_a_retry_goes_to_the_standby_first() -> None:
    retry = RoutingRequest(service="svc", operation="op", failed_providers=frozenset({"b"}))
    without = dataclasses.replace(NODES, overrides={"svc": HOLD_A})
    with_plan = dataclasses.replace(
        NODES, overrides={"svc": dataclasses.replace(HOLD_A, standby="d")}
    )

    assert decide_retry(retry, without, NOW).node.node_id == "c"
    decision = decide_retry(retry, with_plan, NOW)
    assert decision.node.node_id == "d"
    reasons = {e.node_id: e.reason for e in decision.exclusions}
    assert reasons == {
        "a": ExclusionReason.EXCLUDED_BY_RECOVERY,
        "b": ExclusionReason.FAILED_PROVIDER,
        "c": ExclusionReason.STANDBY_FIRST,
    }


def test_a_tried_standby_is_not_tried_again() -> None:
    retry = RoutingRequest(service="svc", operation="op", failed_providers=frozenset({"b", "d"}))
    with_plan = dataclasses.replace(
        NODES, overrides={"svc": dataclasses.replace(HOLD_A, standby="d")}
    )

    assert decide_retry(retry, with_plan, NOW).node.node_id == "c"


def test_rules_from_the_catalog_mark_idempotence() -> None:
    rules = ServiceRules(idempotent=frozenset({"read"}))
    snapshot = dataclasses.replace(
        NODES,
        rules={"svc": rules},
        overrides={"svc": dataclasses.replace(HOLD_A, standby="d")},
    )
    read = RoutingRequest(service="svc", operation="read")

    decision = decide(read, snapshot, NOW)

    assert decision.node.node_id == "b"
    assert decision.hedge is not None and decision.hedge.node.node_id == "d"
    assert decision.estimated_cost == round(0.01 + 0.1 * 0.01, 6)
