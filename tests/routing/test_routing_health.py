"""The health window, the health score formula (unit and property tests) and `assess`."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from routing_builders import NOW

from routing.breaker import BreakerStatus, force, trip
from routing.health import (
    HealthConfig,
    HealthFigures,
    MonitoringConfig,
    Observation,
    assess,
    detect_degradation,
    health_figures,
    health_score,
    material_change,
    percentile,
    recent,
    slo_breaches,
)
from routing.prediction import Prediction
from routing.types import BreakerState, ProviderNode

STRIPE = ProviderNode(
    "stripe_primary_us_east", "stripe", "Stripe Primary (US East)", "us-east-1",
    success_rate=99.8, cost_per_request=0.029, latency_ms=150, health_score=95,
)  # fmt: skip
CONFIG = HealthConfig()
MONITORING = MonitoringConfig()


def obs(
    seconds_ago: float = 0.0, success: bool = True, latency: float = 150.0, seq: int = 0
) -> Observation:
    return Observation(NOW - timedelta(seconds=seconds_ago), success, latency, seq)


def window_of(failures: int, total: int, latency: float = 150.0) -> list[Observation]:
    """`total` fresh outcomes, every k-th a failure so that `failures` of them failed."""
    failed = {round(i * total / failures) for i in range(failures)} if failures else set()
    return [obs(0.0, i not in failed, latency, seq=i + 1) for i in range(total)]


# ---- window ----


def test_window_is_the_newest_n_within_the_time_limit() -> None:
    config = HealthConfig(window_size=3, window_seconds=60)
    observations = [obs(70, seq=1), obs(50, seq=2), obs(10, seq=3), obs(10, seq=4), obs(5, seq=5)]
    assert [o.sequence for o in recent(observations, NOW, config)] == [5, 4, 3]
    assert [o.sequence for o in recent(observations[:2], NOW, config)] == [2]


def test_percentile_interpolates_like_percentile_cont() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(list(range(1, 101)), 95) == pytest.approx(95.05)
    assert percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


# ---- the formula ----


def test_no_observations_gives_exactly_the_catalog_figures() -> None:
    assert health_figures(STRIPE, [], CONFIG) == HealthFigures(95, 99.8, 150, 150, 0)


def test_observations_like_the_catalog_keep_the_catalog_score() -> None:
    # 1 failure in 500 is the catalog's 99.8 %; latency equal to the catalog's.
    figures = health_figures(STRIPE, window_of(1, 500), CONFIG)
    assert figures.health_score == 95
    assert figures.success_rate == pytest.approx(99.8)


def test_worked_example_thirty_percent_failures() -> None:
    """docs/MONITORING.md: 100 fresh outcomes of stripe_primary_us_east, 30 failed, 150 ms."""
    figures = health_figures(STRIPE, window_of(30, 100), CONFIG)
    # observed score: 95 - 50 * (30/5 - 0.2/5) = -203 -> 0; blended (20*95 + 100*0) / 120
    assert figures.health_score == 15.83
    assert figures.success_rate == 74.967  # (20 * 99.8 + 100 * 70) / 120
    assert figures.observations == 100


def test_the_score_at_the_slos() -> None:
    # Exactly at the error SLO (95 %) with catalog latency: 95 - 50 * (1 - 0.04) = 47.
    assert health_score(STRIPE, 95.0, 150, CONFIG) == 47.0
    # p95 exactly at the latency SLO with catalog success: 95 - 25 * (1 - 0.075) = 71.875.
    assert health_score(STRIPE, 99.8, 2000, CONFIG) == 71.88
    assert health_score(STRIPE, 100.0, 50, CONFIG) == pytest.approx(95 + 2 + 25 * 0.05)


def test_a_single_failure_moves_the_score_little() -> None:
    figures = health_figures(STRIPE, [obs(success=False)], CONFIG)
    assert 95 - figures.health_score <= 100 / 21
    assert slo_breaches(STRIPE, figures, CONFIG) == []


outcome_lists = st.lists(
    st.tuples(st.booleans(), st.floats(0.0, 10_000.0, allow_nan=False)), max_size=120
)


def _figures(pairs: list[tuple[bool, float]]) -> HealthFigures:
    return health_figures(
        STRIPE, [obs(0, ok, latency, seq=i) for i, (ok, latency) in enumerate(pairs)], CONFIG
    )


@given(outcome_lists)
def test_score_is_bounded_and_moves_at_most_by_the_evidence_weight(
    pairs: list[tuple[bool, float]],
) -> None:
    figures = _figures(pairs)
    n = len(pairs)
    assert 0.0 <= figures.health_score <= 100.0
    assert abs(figures.health_score - STRIPE.health_score) <= 100 * n / (20 + n) + 0.01
    assert 0.0 <= figures.success_rate <= 100.0


@given(outcome_lists, st.integers(0, 119))
def test_a_failure_never_raises_the_score(pairs: list[tuple[bool, float]], index: int) -> None:
    if not pairs:
        return
    index %= len(pairs)
    worse = list(pairs)
    worse[index] = (False, pairs[index][1])
    assert _figures(worse).health_score <= _figures(pairs).health_score
    assert _figures(worse).success_rate <= _figures(pairs).success_rate


@given(outcome_lists, st.floats(0.0, 5_000.0, allow_nan=False))
def test_slower_calls_never_raise_the_score(pairs: list[tuple[bool, float]], extra: float) -> None:
    slower = [(ok, latency + extra) for ok, latency in pairs]
    assert _figures(slower).health_score <= _figures(pairs).health_score


@given(st.floats(0.0, 100.0), st.floats(0.0, 100_000.0))
def test_the_figures_score_is_bounded(success: float, p95: float) -> None:
    assert 0.0 <= health_score(STRIPE, success, p95, CONFIG) <= 100.0


def test_slo_breaches_need_enough_calls() -> None:
    slow = health_figures(STRIPE, window_of(0, 100, latency=3000), CONFIG)
    assert slo_breaches(STRIPE, slow, CONFIG) == ["latency"]
    failing = health_figures(STRIPE, window_of(30, 100), CONFIG)
    assert slo_breaches(STRIPE, failing, CONFIG) == ["error_rate"]
    few = health_figures(STRIPE, window_of(10, 19), CONFIG)
    assert slo_breaches(STRIPE, few, CONFIG) == []


def test_material_change_thresholds() -> None:
    base = HealthFigures(95, 99.8, 150, 150, 10)
    assert not material_change(base, replace(base, health_score=93.1), 0.0, 0.09)
    assert material_change(base, replace(base, health_score=93), 0.0, 0.0)
    assert material_change(base, replace(base, success_rate=99.25), 0.0, 0.0)
    assert not material_change(base, replace(base, latency_p50_ms=164), 0.0, 0.0)
    assert material_change(base, replace(base, latency_p50_ms=166), 0.0, 0.0)
    assert material_change(base, base, 0.35, 0.2)


# ---- assess and degradation ----


def test_assess_opens_the_breaker_and_reports_an_outage() -> None:
    window = window_of(30, 100)
    assessed = assess(STRIPE, BreakerStatus(), window, window, NOW, MONITORING)
    assert assessed.breaker.state is BreakerState.OPEN
    assert assessed.transitions == ((BreakerState.CLOSED, BreakerState.OPEN, "failure_rate"),)
    assert assessed.degradation is not None
    assert (assessed.degradation.error_type, assessed.degradation.severity) == (
        "provider_outage",
        "high",
    )
    assert assessed.prediction.failure_probability == 1.0


def test_assess_probes_close_a_half_open_breaker_and_restart_its_window() -> None:
    opened = trip(BreakerStatus(), NOW - timedelta(seconds=40), "failure_rate", MONITORING.breaker)
    old = window_of(30, 100)
    fresh = [obs(0, True, 150, seq=200 + i) for i in range(3)]
    assessed = assess(STRIPE, opened, old + fresh, fresh, NOW, MONITORING)
    states = [(a.value, b.value) for a, b, _ in assessed.transitions]
    assert states == [("OPEN", "HALF_OPEN"), ("HALF_OPEN", "CLOSED")]
    # The old failures are still in the health window but no longer in the breaker's.
    assert assessed.breaker.state is BreakerState.CLOSED
    assert assessed.breaker.window_after == 202


def test_slo_and_prediction_degradations_in_order_of_gravity() -> None:
    figures = health_figures(STRIPE, window_of(0, 100, latency=2600), CONFIG)
    calm = Prediction()
    slow = detect_degradation(STRIPE, figures, BreakerStatus(), calm, MONITORING)
    assert slow is not None and slow.error_type == "performance_degradation"
    healthy = health_figures(STRIPE, window_of(0, 100), CONFIG)
    assert detect_degradation(STRIPE, healthy, BreakerStatus(), calm, MONITORING) is None
    likely = Prediction(failure_probability=0.85)
    predicted = detect_degradation(STRIPE, healthy, BreakerStatus(), likely, MONITORING)
    assert predicted is not None
    assert (predicted.error_type, predicted.severity) == ("predicted_failure", "medium")


def test_forced_or_disabled_nodes_are_left_to_the_operator() -> None:
    failing = health_figures(STRIPE, window_of(30, 100), CONFIG)
    held = force(BreakerStatus(), BreakerState.OPEN, NOW)
    assert detect_degradation(STRIPE, failing, held, Prediction(), MONITORING) is None
    disabled = replace(STRIPE, enabled=False)
    assert detect_degradation(disabled, failing, BreakerStatus(), Prediction(), MONITORING) is None


def _at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def test_old_observations_age_out_and_the_figures_return_to_the_catalog() -> None:
    window = window_of(30, 100)
    later = assess(STRIPE, BreakerStatus(), window, [], _at(301), MONITORING)
    assert later.figures == health_figures(STRIPE, [], CONFIG)
    assert later.prediction.failure_probability == 0.0


# ---- calls refused for rate limiting ----


def refused(count: int, first_seq: int) -> list[Observation]:
    """`count` fresh 429s: refused at once, before any work."""
    return [Observation(NOW, False, 25.0, first_seq + i, rate_limited=True) for i in range(count)]


def test_refused_calls_move_no_health_figure() -> None:
    answered = window_of(1, 60)
    with_refusals = answered + refused(40, first_seq=100)
    assert health_figures(STRIPE, with_refusals, CONFIG) == health_figures(STRIPE, answered, CONFIG)
    assert health_figures(STRIPE, refused(10, 1), CONFIG) == health_figures(STRIPE, [], CONFIG)


def test_refusals_trip_the_breaker_for_rate_limiting_and_start_no_recovery() -> None:
    answered = window_of(0, 60)
    few = refused(MONITORING.breaker.rate_limited_calls - 1, first_seq=100)
    calm = assess(STRIPE, BreakerStatus(), answered + few, few, NOW, MONITORING)
    assert calm.breaker.state is BreakerState.CLOSED

    more = refused(MONITORING.breaker.rate_limited_calls, first_seq=100)
    assessed = assess(STRIPE, BreakerStatus(), answered + more, more, NOW, MONITORING)
    assert assessed.breaker.state is BreakerState.OPEN
    assert assessed.breaker.reason == "rate_limited"
    assert assessed.degradation is None  # the back-off is the answer, not a failover
    assert assessed.figures == health_figures(STRIPE, answered, CONFIG)
    assert assessed.prediction.failure_probability < 0.01


def test_a_refused_probe_reopens_the_breaker_for_rate_limiting() -> None:
    opened = trip(BreakerStatus(), NOW - timedelta(seconds=40), "rate_limited", MONITORING.breaker)
    probe = refused(1, first_seq=500)
    assessed = assess(STRIPE, opened, probe, probe, NOW, MONITORING)
    assert [(a.value, b.value, why) for a, b, why in assessed.transitions] == [
        ("OPEN", "HALF_OPEN", "break_over"),
        ("HALF_OPEN", "OPEN", "rate_limited"),
    ]
    assert assessed.breaker.trips == 2  # a longer break
