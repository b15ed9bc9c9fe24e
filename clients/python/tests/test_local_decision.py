"""The local decision's rules (clients/python/README.md, "When Switchyard is down") and the
catalog copy it reads."""

from __future__ import annotations

import math
from typing import Any

import pytest
from fakes import PREMIUM, PRIMARY, SECONDARY, emergency_answer, providers_answer, stripe

from switchyard_client import SwitchyardError, SwitchyardUnavailable
from switchyard_client.catalog import CatalogCopy, catalog_copy
from switchyard_client.context import routing_request
from switchyard_client.local import LOCAL_BREAK_SECONDS, LOCAL_FAILURES, LocalEvidence
from switchyard_client.local import decide_locally as _decide

NOW = 1000.0


def copy_of(coordinations: Any = None, **overrides: dict[str, Any]) -> CatalogCopy:
    return catalog_copy(providers_answer(stripe(**overrides)), coordinations, NOW)


def decide(
    copy: CatalogCopy | None,
    handlers: list[str] | None = None,
    evidence: LocalEvidence | None = None,
    now: float = NOW,
    **context: Any,
) -> str:
    request = routing_request("stripe", "payment_processing", context)
    decision = _decide(copy, request, handlers, evidence or LocalEvidence(), now, "test")
    assert decision.decided_locally and decision.coordination_id is None
    return decision.node_id


def test_the_best_node_by_the_servers_figures_and_never_an_emergency_only_one() -> None:
    assert decide(copy_of()) == PRIMARY  # premium (98) is emergency-only
    assert decide(copy_of(**{PRIMARY: {"health": 80.0}})) == SECONDARY


def test_an_open_breaker_is_never_chosen_until_its_break_is_over() -> None:
    copy = copy_of(**{PRIMARY: {"state": "OPEN", "seconds_to_half_open": 30.0}})
    assert decide(copy) == SECONDARY
    # Over: HALF_OPEN, eligible, but after a closed node of lower health.
    assert decide(copy, now=NOW + 31) == SECONDARY
    assert decide(copy, handlers=[PRIMARY], now=NOW + 31) == PRIMARY
    with pytest.raises(SwitchyardError, match="breaker_open") as raised:
        decide(copy, handlers=[PRIMARY], now=NOW + 29)
    assert raised.value.code == "no_eligible_node"


def test_a_breaker_held_open_and_a_disabled_node_stay_out() -> None:
    held = copy_of(**{PRIMARY: {"state": "OPEN", "forced": "OPEN"}})
    assert held.services["stripe"][0].open_until == math.inf
    assert decide(held, now=NOW + 10_000) == SECONDARY
    assert decide(copy_of(**{PRIMARY: {"enabled": False}})) == SECONDARY


def test_emergency_only_nodes_only_under_an_emergency_still_on() -> None:
    # The server's clock is two hours off ours: only its own figures are compared.
    copy = copy_of(
        emergency_answer(
            "stripe", "2025-08-16T10:00:00Z", "2025-08-16T10:30:00+00:00", age_seconds=600
        )
    )
    assert copy.emergencies["stripe"] == pytest.approx(NOW + 1200)
    assert decide(copy) == PREMIUM
    assert decide(copy, now=NOW + 1199) == PREMIUM
    assert decide(copy, now=NOW + 1201) == PRIMARY


def test_the_requests_own_limits_are_hard() -> None:
    assert decide(copy_of(), cost_per_request_limit=0.03) == PRIMARY
    copy = copy_of(**{PRIMARY: {"health": 50.0}})
    assert decide(copy, cost_per_request_limit=0.03) == PRIMARY
    with pytest.raises(SwitchyardError, match="cost_above_limit"):
        decide(copy_of(), cost_per_request_limit=0.01)
    with pytest.raises(SwitchyardError, match="budget_exhausted"):
        decide(copy_of(), remaining_budget=0.02)


def test_a_retry_avoids_the_nodes_that_failed_while_another_is_left() -> None:
    assert decide(copy_of(), failed_providers=[PRIMARY]) == SECONDARY
    assert decide(copy_of(), failed_providers=[PRIMARY, SECONDARY]) == PRIMARY


def test_only_nodes_with_a_handler_and_their_order_without_a_copy() -> None:
    assert decide(copy_of(), handlers=[SECONDARY]) == SECONDARY
    assert decide(None, handlers=[SECONDARY, PRIMARY]) == SECONDARY
    assert decide(None, handlers=[SECONDARY, PRIMARY], failed_providers=[SECONDARY]) == PRIMARY
    with pytest.raises(SwitchyardUnavailable):
        decide(None)
    with pytest.raises(SwitchyardError, match="no handler names a node"):
        decide(copy_of(), handlers=["somebody_else"])


def test_a_node_admitting_a_share_takes_the_requests_in_it() -> None:
    copy = copy_of(**{PRIMARY: {"share": 0.5}})
    chosen = [decide(copy, request_id=f"r{i}") for i in range(400)]
    assert 0.4 < chosen.count(PRIMARY) / 400 < 0.6
    assert set(chosen) == {PRIMARY, SECONDARY}
    # The same request id always lands in the same bucket, and a retry ignores shares.
    assert decide(copy, request_id="r7") == decide(copy, request_id="r7")
    assert decide(copy, handlers=[PRIMARY], request_id="r7") == PRIMARY


def test_a_node_this_client_saw_failing_goes_last_for_a_break() -> None:
    evidence = LocalEvidence()
    for _ in range(LOCAL_FAILURES - 1):
        evidence.observe(PRIMARY, False, NOW)
    assert decide(copy_of(), evidence=evidence) == PRIMARY
    evidence.observe(PRIMARY, False, NOW)
    assert decide(copy_of(), evidence=evidence) == SECONDARY
    assert decide(copy_of(), evidence=evidence, now=NOW + LOCAL_BREAK_SECONDS + 1) == PRIMARY
    evidence.observe(PRIMARY, True, NOW + 1)
    assert decide(copy_of(), evidence=evidence) == PRIMARY


def test_outcome_answers_refresh_the_copy() -> None:
    copy = copy_of().with_outcome_figures(
        [{"nodeId": PRIMARY, "healthScore": 15.8, "successRate": 75.0, "breakerState": "OPEN"}],
        NOW,
    )
    primary = copy.services["stripe"][0]
    assert (primary.health_score, primary.breaker_state) == (15.8, "OPEN")
    assert decide(copy) == SECONDARY
    closed = copy.with_outcome_figures([{"nodeId": PRIMARY, "breakerState": "CLOSED"}], NOW)
    assert closed.services["stripe"][0].open_until is None


def test_hard_constraints_hold_when_deciding_locally() -> None:
    answer = providers_answer(stripe())
    for view in answer["data"]["providers"]:
        view["tags"] = ["pci", "tokenized"] if view["nodeId"] == SECONDARY else ["pci"]
        view["region"] = "us-west-2" if view["nodeId"] == SECONDARY else "us-east-1"
    answer["data"]["constraints"] = {"stripe": {"refund": {"excludedNodes": [SECONDARY]}}}
    copy = catalog_copy(answer, None, NOW)
    assert decide(copy, required_tags=["tokenized"]) == SECONDARY
    assert decide(copy, allowed_regions=["us-west-2"]) == SECONDARY
    assert decide(copy, excluded_nodes=[PRIMARY]) == SECONDARY
    # Even when the node the constraint leaves has failed, nothing else is chosen.
    with pytest.raises(SwitchyardError, match="region_not_allowed"):
        decide(copy, allowed_regions=["eu-west-1"])
    # The catalog's defaults for an operation hold as the request's own do.
    refund = routing_request("stripe", "refund", {"excluded_nodes": []})
    decision = _decide(copy, refund, None, LocalEvidence(), NOW, "test")
    assert decision.node_id == PRIMARY
    down = catalog_copy(providers_answer(stripe(**{PRIMARY: {"enabled": False}})), None, NOW)
    down = CatalogCopy(down.services, down.emergencies, NOW, answer["data"]["constraints"])
    with pytest.raises(SwitchyardError, match="node_excluded"):
        _decide(down, refund, None, LocalEvidence(), NOW, "test")


def test_constraints_go_to_the_server_in_its_names() -> None:
    request = routing_request(
        "stripe", "payment_processing", {"allowed_regions": ["eu-west-1"], "required_tags": {"pci"}}
    )
    assert request.body["routingContext"]["constraints"] == {
        "allowedRegions": ["eu-west-1"],
        "requiredTags": ["pci"],
    }
