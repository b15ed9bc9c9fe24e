"""The circuit breaker state machine, driven by an explicit clock (no sleeps)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from routing_builders import NOW

from routing.breaker import (
    BreakerConfig,
    BreakerReason,
    BreakerStatus,
    CallStats,
    break_seconds,
    call_stats,
    effective_state,
    evaluate,
    force,
    record,
    release,
    seconds_to_half_open,
    tick,
    trip,
    try_acquire,
)
from routing.types import BreakerState

CONFIG = BreakerConfig()  # 25 % over >= 20 calls, 5 in a row, 30 s doubling to 300 s, 3 probes
CLOSED = BreakerStatus()


def at(seconds: float) -> datetime:
    """The clock `seconds` after NOW."""
    return NOW + timedelta(seconds=seconds)


def stats(calls: int, failures: int = 0, slow: int = 0, streak: int = 0) -> CallStats:
    return CallStats(calls=calls, failures=failures, slow_calls=slow, consecutive_failures=streak)


def probe(
    status: BreakerStatus, seconds: float, success: bool = True, slow: bool = False
) -> BreakerStatus:
    return record(status, success=success, slow=slow, now=at(seconds), config=CONFIG, sequence=7)


# ---- CLOSED -> OPEN ----


def test_failure_rate_at_threshold_over_minimum_calls_trips() -> None:
    opened = evaluate(CLOSED, stats(20, failures=5), NOW, CONFIG)
    assert opened.state is BreakerState.OPEN
    assert opened.reason == BreakerReason.FAILURE_RATE
    assert opened.trips == 1
    assert opened.open_until == at(30)
    assert evaluate(CLOSED, stats(20, failures=4), NOW, CONFIG) == CLOSED


def test_too_few_calls_never_trip_on_rates() -> None:
    assert evaluate(CLOSED, stats(19, failures=19 // 2, slow=19), NOW, CONFIG) == CLOSED


def test_consecutive_failures_trip_even_with_few_calls() -> None:
    opened = evaluate(CLOSED, stats(5, failures=5, streak=5), NOW, CONFIG)
    assert opened.state is BreakerState.OPEN
    assert opened.reason == BreakerReason.CONSECUTIVE_FAILURES
    assert evaluate(CLOSED, stats(5, failures=4, streak=4), NOW, CONFIG) == CLOSED


def test_slow_call_rate_trips() -> None:
    opened = evaluate(CLOSED, stats(40, slow=20), NOW, CONFIG)
    assert opened.state is BreakerState.OPEN and opened.reason == BreakerReason.SLOW_CALLS
    assert evaluate(CLOSED, stats(40, slow=19), NOW, CONFIG) == CLOSED


def test_call_stats_counts_the_streak_from_the_newest_call() -> None:
    newest_first = [(False, 10.0), (False, 3000.0), (True, 10.0), (False, 10.0)]
    assert call_stats(newest_first, slow_ms=2000.0) == stats(4, failures=3, slow=1, streak=2)
    assert call_stats([], slow_ms=1.0) == stats(0)
    assert stats(0).failure_rate == 0.0 and stats(4, 1, 2).slow_call_rate == 50.0


# ---- OPEN -> HALF_OPEN, growing break time ----


def test_open_half_opens_exactly_when_the_break_is_over() -> None:
    opened = trip(CLOSED, NOW, "failure_rate", CONFIG)
    assert tick(opened, at(29.999), CONFIG) == opened
    assert seconds_to_half_open(opened, at(10)) == pytest.approx(20.0)
    half = tick(opened, at(30), CONFIG)
    assert half.state is BreakerState.HALF_OPEN
    assert half.reason == BreakerReason.BREAK_OVER and half.changed_at == at(30)
    assert half.open_until is None and seconds_to_half_open(half, at(30)) is None


def test_break_time_doubles_with_each_trip_and_is_capped() -> None:
    assert [break_seconds(n, CONFIG) for n in range(1, 7)] == [30, 60, 120, 240, 300, 300]
    assert break_seconds(10_000, CONFIG) == 300


def test_failed_probe_reopens_for_longer_each_time() -> None:
    status = trip(CLOSED, NOW, "failure_rate", CONFIG)
    clock = 0.0
    breaks = []
    for _ in range(6):
        assert status.open_until is not None
        breaks.append((status.open_until - at(clock)).total_seconds())
        clock += breaks[-1]
        status = tick(status, at(clock), CONFIG)
        assert status.state is BreakerState.HALF_OPEN
        status = probe(status, clock, success=False)
        assert status.state is BreakerState.OPEN
        assert status.reason == BreakerReason.PROBE_FAILED
    assert breaks == [30, 60, 120, 240, 300, 300]
    assert status.trips == 7


def test_slow_probe_counts_as_failed() -> None:
    half = tick(trip(CLOSED, NOW, "slow_calls", CONFIG), at(30), CONFIG)
    assert probe(half, 31, success=True, slow=True).state is BreakerState.OPEN


# ---- HALF_OPEN probes ----


def test_half_open_closes_after_the_permitted_probes_succeed() -> None:
    half = tick(trip(CLOSED, NOW, "failure_rate", CONFIG), at(30), CONFIG)
    one = probe(half, 31)
    two = probe(one, 32)
    assert (one.state, two.state) == (BreakerState.HALF_OPEN, BreakerState.HALF_OPEN)
    assert two.half_open_successes == 2
    closed = probe(two, 33)
    assert closed.state is BreakerState.CLOSED
    assert closed.reason == BreakerReason.PROBES_SUCCEEDED
    # The window restarts after the close: earlier calls no longer count.
    assert closed.window_after == 7 and closed.changed_at == at(33)


def test_half_open_permits_only_the_configured_number_of_probes() -> None:
    half = tick(trip(CLOSED, NOW, "failure_rate", CONFIG), at(30), CONFIG)
    permits = []
    status = half
    for _ in range(5):
        allowed, status = try_acquire(status, at(31), CONFIG)
        permits.append(allowed)
    assert permits == [True, True, True, False, False]
    # Their outcomes decide; afterwards a closed breaker permits everything again.
    for second in (32, 33, 34):
        status = probe(status, second)
    assert status.state is BreakerState.CLOSED
    assert try_acquire(status, at(35), CONFIG) == (True, status)


def test_open_refuses_until_the_break_is_over_then_permits_a_probe() -> None:
    opened = trip(CLOSED, NOW, "failure_rate", CONFIG)
    assert try_acquire(opened, at(5), CONFIG) == (False, opened)
    allowed, after = try_acquire(opened, at(30), CONFIG)
    assert allowed and after.state is BreakerState.HALF_OPEN and after.half_open_issued == 1


def test_outcomes_outside_half_open_do_not_move_the_breaker() -> None:
    opened = trip(CLOSED, NOW, "failure_rate", CONFIG)
    assert probe(opened, 1, success=True) == opened
    assert probe(CLOSED, 1, success=False) == CLOSED


def test_trips_are_forgotten_after_a_long_closed_spell() -> None:
    half = tick(trip(trip(CLOSED, NOW, "x", CONFIG), NOW, "x", CONFIG), at(60), CONFIG)
    closed = probe(probe(probe(half, 61), 62), 63)
    assert closed.trips == 2
    assert tick(closed, at(63 + 599), CONFIG).trips == 2
    assert tick(closed, at(63 + 600), CONFIG).trips == 0


# ---- forced states ----


def test_forced_open_holds_through_time_and_successes_until_auto() -> None:
    forced = force(CLOSED, BreakerState.OPEN, NOW)
    assert effective_state(forced) is BreakerState.OPEN and forced.forced is BreakerState.OPEN
    later = tick(forced, at(10_000), CONFIG)
    assert later == forced
    assert probe(later, 10_001) == forced
    assert evaluate(forced, stats(100), at(1), CONFIG) == forced
    assert try_acquire(forced, at(1), CONFIG) == (False, forced)
    assert seconds_to_half_open(forced, at(1)) is None
    released = release(forced, at(20_000), sequence=99)
    # Back to AUTO from forced OPEN: probes first.
    assert released.state is BreakerState.HALF_OPEN and released.forced is None
    assert released.reason == BreakerReason.RELEASED


def test_forced_closed_holds_through_failures_until_auto() -> None:
    forced = force(trip(CLOSED, NOW, "failure_rate", CONFIG), BreakerState.CLOSED, at(1))
    assert forced.state is BreakerState.CLOSED and forced.open_until is None
    assert evaluate(forced, stats(100, failures=100, streak=100), at(2), CONFIG) == forced
    assert try_acquire(forced, at(2), CONFIG) == (True, forced)
    released = release(forced, at(3), sequence=42)
    assert released.state is BreakerState.CLOSED and released.forced is None
    assert released.window_after == 42  # the failures before the release no longer count


def test_release_of_an_automatic_breaker_is_a_no_op() -> None:
    assert release(CLOSED, NOW) == CLOSED


def test_half_open_cannot_be_forced() -> None:
    with pytest.raises(ValueError):
        force(CLOSED, BreakerState.HALF_OPEN, NOW)


@given(
    st.lists(
        st.tuples(st.booleans(), st.booleans(), st.floats(0, 400, allow_nan=False)), max_size=60
    )
)
def test_any_sequence_keeps_the_invariants(events: list[tuple[bool, bool, float]]) -> None:
    """Whatever happens, OPEN has a deadline within the cap and HALF_OPEN has none."""
    status, clock = CLOSED, 0.0
    for success, slow, advance in events:
        clock += advance
        status = tick(status, at(clock), CONFIG)
        status = probe(status, clock, success=success, slow=slow)
        failed = 0 if success else 1
        status = evaluate(status, stats(1, failed, streak=5 * failed), at(clock), CONFIG)
        if status.state is BreakerState.OPEN:
            assert status.open_until is not None
            remaining = (status.open_until - at(clock)).total_seconds()
            assert 0 < remaining <= CONFIG.max_break_seconds
        if status.state is BreakerState.HALF_OPEN:
            assert status.open_until is None
            assert status.half_open_successes < CONFIG.half_open_calls


# ---- rate limiting ----


def test_refused_calls_trip_for_rate_limiting_without_minimum_calls() -> None:
    refusals = CONFIG.rate_limited_calls
    opened = evaluate(CLOSED, CallStats(3, 0, 0, 0, refused=refusals), NOW, CONFIG)
    assert opened.state is BreakerState.OPEN
    assert opened.reason == BreakerReason.RATE_LIMITED
    assert opened.open_until == at(30)
    assert evaluate(CLOSED, CallStats(40, 0, 0, 0, refused=refusals - 1), NOW, CONFIG) == CLOSED


def test_failures_name_the_trip_before_refusals_do() -> None:
    both = CallStats(20, 5, 0, 0, refused=CONFIG.rate_limited_calls)
    assert evaluate(CLOSED, both, NOW, CONFIG).reason == BreakerReason.FAILURE_RATE
