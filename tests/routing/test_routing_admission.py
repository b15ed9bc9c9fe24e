"""A rate-limited node's admitted share: how refusals move it and how routing applies it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from routing_builders import NOW, node, snapshot_of

from routing import (
    BreakerState,
    ExclusionReason,
    NodeHealth,
    RoutingRequest,
    decide,
    decide_retry,
    eligible_nodes,
)
from routing.admission import FULL, Admission, AdmissionConfig, admit
from routing.breaker import BreakerStatus
from routing.eligibility import admission_bucket
from routing.health import MonitoringConfig, Observation, assess

CONFIG = AdmissionConfig()
CHEAP = node("cheap", cost=0.005)
DEAR = node("dear", cost=0.008)


def request(number: int, **fields: object) -> RoutingRequest:
    return RoutingRequest(service="svc", operation="op", request_id=f"r{number}", **fields)  # type: ignore[arg-type]


def limited(share: float, state: BreakerState = BreakerState.CLOSED) -> NodeHealth:
    return NodeHealth("cheap", 90.0, 99.0, 200.0, breaker_state=state, admitted_share=share)


# ---- the share ----


def test_a_node_that_never_refused_keeps_the_full_share() -> None:
    assert admit(FULL, accepted=40, refused=0, serving=True, now=NOW, config=CONFIG) is FULL


def test_refusals_cut_the_share_to_the_part_taken_with_a_margin() -> None:
    # 25 offered in a second, 15 taken: the node's limit is about 60 % of what it got.
    cut = admit(FULL, accepted=15, refused=10, serving=True, now=NOW, config=CONFIG)
    assert cut.share == pytest.approx(CONFIG.decrease * 15 / 25)
    assert cut.at == NOW
    again = admit(cut, accepted=9, refused=1, serving=True, now=NOW, config=CONFIG)
    assert again.share == pytest.approx(cut.share * CONFIG.decrease * 0.9)


def test_the_share_comes_back_while_the_breaker_is_closed_and_not_while_open() -> None:
    cut = Admission(0.5, NOW)
    later = NOW + timedelta(seconds=60)
    grown = admit(cut, accepted=10, refused=0, serving=True, now=later, config=CONFIG)
    assert grown.share == pytest.approx(0.5 + 60 / CONFIG.recovery_seconds)
    held = admit(cut, accepted=0, refused=0, serving=False, now=later, config=CONFIG)
    assert held == Admission(0.5, later)  # a back-off is not time without refusals
    end = NOW + timedelta(seconds=CONFIG.recovery_seconds)
    assert admit(cut, accepted=0, refused=0, serving=True, now=end, config=CONFIG) is FULL


def test_the_share_never_falls_below_the_floor() -> None:
    low = admit(Admission(0.06, NOW), accepted=1, refused=20, serving=True, now=NOW, config=CONFIG)
    assert low.share == CONFIG.floor


@given(
    st.floats(CONFIG.floor, 1.0),
    st.integers(0, 50),
    st.integers(0, 50),
    st.floats(0.0, 3600.0),
    st.booleans(),
)
def test_the_share_stays_in_bounds_and_refusals_never_raise_it(
    share: float, accepted: int, refused: int, seconds: float, serving: bool
) -> None:
    current = Admission(share, NOW)
    now = NOW + timedelta(seconds=seconds)
    after = admit(
        current, accepted=accepted, refused=refused, serving=serving, now=now, config=CONFIG
    )
    assert CONFIG.floor <= after.share <= 1.0
    more = admit(
        current, accepted=accepted, refused=refused + 1, serving=serving, now=now, config=CONFIG
    )
    assert more.share <= after.share


def test_assess_moves_the_share_with_the_new_refusals() -> None:
    new = [Observation(NOW, True, 120.0, i + 1) for i in range(15)] + [
        Observation(NOW, False, 25.0, 100 + i, rate_limited=True) for i in range(10)
    ]
    assessed = assess(CHEAP, BreakerStatus(), new, new, NOW, MonitoringConfig())
    assert assessed.admission.share == pytest.approx(CONFIG.decrease * 15 / 25)
    calm = assess(CHEAP, BreakerStatus(), new[:15], new[:15], NOW, MonitoringConfig())
    assert calm.admission is FULL


# ---- routing ----


def test_a_limited_node_is_offered_the_requests_below_its_share() -> None:
    share = 0.3
    snap = snapshot_of(CHEAP, DEAR, health={"cheap": limited(share)})
    chosen = {n: decide(request(n), snap, NOW).node.node_id for n in range(2000)}
    for number, node_id in chosen.items():
        below = admission_bucket("cheap", f"r{number}") < share
        assert node_id == ("cheap" if below else "dear")
    assert 0.25 < sum(v == "cheap" for v in chosen.values()) / len(chosen) < 0.35
    outside = next(n for n, v in chosen.items() if v == "dear")
    exclusion = decide(request(outside), snap, NOW).exclusions[0]
    assert exclusion.node_id == "cheap"
    assert exclusion.reason is ExclusionReason.RATE_LIMIT_SHARE


def test_a_retry_ignores_the_share() -> None:
    snap = snapshot_of(CHEAP, DEAR, health={"cheap": limited(CONFIG.floor)})
    for number in range(50):
        retry = request(number, failed_providers=frozenset({"dear"}))
        assert decide_retry(retry, snap, NOW).node.node_id == "cheap"


def test_the_share_yields_when_nothing_else_is_eligible() -> None:
    snap = snapshot_of(CHEAP, health={"cheap": limited(CONFIG.floor)})
    assert all(decide(request(n), snap, NOW).node is CHEAP for n in range(50))
    dear_open = replace(snap, nodes={"svc": (CHEAP, DEAR)}, health={
        "cheap": limited(CONFIG.floor),
        "dear": NodeHealth("dear", 90.0, 99.0, 200.0, breaker_state=BreakerState.OPEN),
    })  # fmt: skip
    assert all(decide(request(n), dear_open, NOW).node is CHEAP for n in range(50))


def test_recoveries_and_the_strand_guard_see_a_limited_node_as_eligible() -> None:
    snap = snapshot_of(CHEAP, DEAR, health={"cheap": limited(CONFIG.floor)})
    outside = next(n for n in range(100) if admission_bucket("cheap", f"r{n}") >= CONFIG.floor)
    eligible, _, _ = eligible_nodes(request(outside), snap, NOW)
    assert CHEAP in eligible
