"""A rate-limited node's capacity (routing/admission.py) and a replica's headroom on it
(routing/headroom.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from routing_builders import node, snapshot_of

from routing import NodeHealth, RoutingRequest, decide, decide_retry
from routing.admission import FULL, Admission, AdmissionConfig, admit, seen_capacity
from routing.headroom import Headroom
from routing.health import Observation

CONFIG = AdmissionConfig()
T0 = datetime(2025, 8, 16, 10, 30, tzinfo=UTC)  # a whole second
CHEAP = node("cheap", cost=0.005)
DEAR = node("dear", cost=0.008)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def answered(start: float, latency_ms: float = 120.0) -> Observation:
    """A call that started at ``start`` and was answered ``latency_ms`` later."""
    return Observation(at(start + latency_ms / 1000.0), True, latency_ms)


def refused(start: float) -> Observation:
    return Observation(at(start + 0.025), False, 25.0, rate_limited=True)


def second_of(second: int, taken: int, refusals: int) -> list[Observation]:
    calls = [answered(second + i / (taken + refusals + 1)) for i in range(taken)]
    return calls + [refused(second + 0.95) for _ in range(refusals)]


# ---- the capacity seen ----


def test_the_capacity_is_what_the_node_took_in_the_seconds_it_refused() -> None:
    window = [*second_of(10, 8, 0), *second_of(11, 15, 3), *second_of(12, 16, 1)]
    window += second_of(13, 14, 2)

    # The median of 15, 16 and 14 (second 10 refused nothing, and is the oldest anyway).
    assert seen_capacity(window, at(16)) == 15.0


def test_a_call_counts_in_the_second_it_started_not_the_one_it_ended() -> None:
    # 15 calls started in second 11, the last ones answered in second 12.
    window = [*second_of(10, 5, 0), *[answered(11.5 + i / 30, 600.0) for i in range(15)]]
    window += [refused(11.99), *second_of(12, 3, 0)]

    assert seen_capacity(window, at(15)) == 15.0


def test_seconds_whose_outcomes_may_still_come_do_not_count() -> None:
    window = [*second_of(10, 5, 0), *second_of(11, 15, 2), *second_of(12, 4, 1)]

    # At 13.5, second 12's outcomes may not all be reported: only second 11 counts.
    assert seen_capacity(window, at(13.5)) == 15.0
    # At 12.5 neither second 11 nor 12 is settled.
    assert seen_capacity(window, at(12.5)) is None


def test_the_oldest_second_of_the_window_may_be_cut_and_does_not_count() -> None:
    # The window kept only the last 2 calls of second 10, where the node refused.
    window = [*second_of(10, 15, 2)[-4:], *second_of(11, 6, 0)]

    assert seen_capacity(window, at(20)) is None


def test_a_known_capacity_is_seen_again_while_it_binds() -> None:
    window = [*second_of(10, 5, 0), *second_of(11, 15, 0), *second_of(12, 9, 0)]

    assert seen_capacity(window, at(20), known=15.0) == 15.0
    assert seen_capacity(window, at(20), known=16.0) is None
    assert seen_capacity(window, at(20)) is None


def test_admit_remembers_the_capacity_and_lets_it_lapse() -> None:
    learned = admit(
        FULL, accepted=15, refused=3, serving=True, now=at(0), config=CONFIG, capacity=15.0
    )
    assert (learned.capacity, learned.capacity_at) == (15.0, at(0))
    # Time without refusals: the share comes back, the capacity stays while remembered ...
    later = at(CONFIG.capacity_memory_seconds - 1)
    kept = admit(learned, accepted=10, refused=0, serving=True, now=later, config=CONFIG)
    assert kept.share == 1.0
    assert (kept.capacity, kept.capacity_at) == (15.0, at(0))
    # ... and lapses after that.
    gone = admit(
        kept,
        accepted=10,
        refused=0,
        serving=True,
        now=at(CONFIG.capacity_memory_seconds),
        config=CONFIG,
    )
    assert gone is FULL


# ---- the headroom ----


def limited_snapshot(capacity: float | None = 3.0):  # type: ignore[no-untyped-def]
    health = {"cheap": NodeHealth("cheap", 90.0, 99.0, 200.0, rate_capacity=capacity)}
    return snapshot_of(CHEAP, DEAR, health=health)


def first(number: int) -> RoutingRequest:
    return RoutingRequest(service="svc", operation="op", request_id=f"r{number}")


def test_a_replica_sends_a_node_its_capacity_per_second_then_routes_around_it() -> None:
    snapshot, headroom = limited_snapshot(), Headroom()
    picks = []
    for number in range(5):
        now = at(0.1 * number)
        view = headroom.view(snapshot, now)
        chosen = decide(first(number), view, now).node.node_id
        headroom.sent(view, chosen, now)
        picks.append(chosen)

    assert picks == ["cheap", "cheap", "cheap", "dear", "dear"]
    # The next second the node has its headroom again.
    now = at(1.0)
    assert decide(first(9), headroom.view(snapshot, now), now).node.node_id == "cheap"


def test_a_retry_avoids_a_node_whose_headroom_is_spent() -> None:
    snapshot, headroom = limited_snapshot(), Headroom()
    now = at(0.5)
    for _ in range(3):
        headroom.sent(snapshot, "cheap", now)
    view = headroom.view(snapshot, now)
    live = view.health["cheap"]
    assert (live.headroom_spent, live.admitted_share) == (True, 0.0)

    retry = RoutingRequest(
        service="svc", operation="op", request_id="r1", failed_providers=frozenset({"other"})
    )
    assert decide_retry(retry, view, now).node.node_id == "dear"
    # Nothing else left: the spent node still takes the call rather than none.
    alone = snapshot_of(CHEAP, health=view.health)
    assert decide(first(1), alone, now).node.node_id == "cheap"


def test_nodes_without_a_capacity_are_not_counted() -> None:
    snapshot, headroom = limited_snapshot(capacity=None), Headroom()
    now = at(0.5)
    for _ in range(100):
        headroom.sent(snapshot, "cheap", now)

    assert headroom.view(snapshot, now) is snapshot


def test_the_view_is_reused_while_neither_the_snapshot_nor_the_spent_nodes_change() -> None:
    snapshot, headroom = limited_snapshot(capacity=1.0), Headroom()
    now = at(0.5)
    headroom.sent(snapshot, "cheap", now)

    view = headroom.view(snapshot, now)
    assert view is not snapshot
    assert headroom.view(snapshot, at(0.9)) is view
    assert headroom.view(snapshot, at(1.0)) is snapshot


@pytest.mark.parametrize("capacity", [1.0, 4.0])
def test_the_capacity_is_a_per_second_count(capacity: float) -> None:
    snapshot, headroom = limited_snapshot(capacity), Headroom()
    sent = 0
    for tenth in range(20):
        now = at(tenth / 10)
        view = headroom.view(snapshot, now)
        if decide(first(tenth), view, now).node.node_id == "cheap":
            headroom.sent(view, "cheap", now)
            sent += 1

    assert sent == 2 * capacity
    assert Admission().capacity is None
