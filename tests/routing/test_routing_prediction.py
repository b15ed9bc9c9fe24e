"""The failure predictor: its distributions, its signals, and a latency ramp caught early."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from routing_builders import NOW

from routing.breaker import BreakerStatus
from routing.health import MonitoringConfig, Observation, assess
from routing.prediction import (
    PredictionConfig,
    Sample,
    error_posterior,
    latency_forecast,
    normal_cdf,
    predict,
    regularized_incomplete_beta,
)
from routing.types import ProviderNode

CONFIG = PredictionConfig()
SAMSARA = ProviderNode(
    "samsara_primary", "samsara", "Samsara Primary", "us-east",
    success_rate=99.5, cost_per_request=0.05, latency_ms=200, health_score=93,
    latency_slo_ms=2000,
)  # fmt: skip


def forecast(samples: list[Sample]) -> float:
    return predict(
        samples,
        prior_success_rate=99.5,
        error_rate_slo=5.0,
        latency_slo_ms=2000,
        config=CONFIG,
    ).failure_probability


def test_incomplete_beta_matches_closed_forms() -> None:
    assert regularized_incomplete_beta(0.5, 2, 3) == pytest.approx(0.6875)
    assert regularized_incomplete_beta(0.3, 1, 1) == pytest.approx(0.3)
    assert regularized_incomplete_beta(0.3, 2.5, 1) == pytest.approx(0.3**2.5)
    assert regularized_incomplete_beta(0.3, 1, 4.2) == pytest.approx(1 - 0.7**4.2)
    assert regularized_incomplete_beta(0.0, 2, 2) == 0.0
    assert regularized_incomplete_beta(1.0, 2, 2) == 1.0
    assert normal_cdf(0.0) == 0.5 and normal_cdf(1.6448536269514722) == pytest.approx(0.95)


@given(st.floats(0.001, 0.999), st.floats(0.01, 500), st.floats(0.01, 500))
def test_incomplete_beta_is_a_distribution(x: float, a: float, b: float) -> None:
    value = regularized_incomplete_beta(x, a, b)
    assert 0.0 <= value <= 1.0
    assert regularized_incomplete_beta(min(0.999, x + 0.001), a, b) >= value - 1e-9
    assert value + regularized_incomplete_beta(1 - x, b, a) == pytest.approx(1.0, abs=1e-7)


def test_no_forecast_without_enough_samples() -> None:
    few = [Sample(0, False, 5000)] * (CONFIG.min_samples - 1)
    assert forecast(few) == 0.0


def test_a_steady_healthy_node_is_not_predicted_to_fail() -> None:
    steady = [Sample(i, i % 200 != 0, 200 + 20 * math.sin(i)) for i in range(100)]
    assert forecast(steady) < 0.05


def test_a_burst_is_not_extrapolated_beyond_its_own_span() -> None:
    """100 calls within 0.1 s with scattered latencies: their slope is noise, not a trend."""
    burst = [Sample(i / 1000, True, 200 + 80 * math.sin(i * 2.3)) for i in range(100)]
    result = predict(
        burst, prior_success_rate=99.5, error_rate_slo=5.0, latency_slo_ms=2000, config=CONFIG
    )
    assert result.horizon_seconds == pytest.approx(0.099)
    assert result.latency_breach_probability < 1e-6
    assert result.forecast_p95_ms is not None and result.forecast_p95_ms < 400


def test_fresh_failures_raise_the_error_signal_and_old_ones_fade() -> None:
    fresh = [Sample(1, i % 10 >= 2, 200) for i in range(50)]  # 20 % failing now
    old = [Sample(280, i % 10 >= 2, 200) for i in range(50)]  # the same, 4.7 half-lives ago
    assert forecast(fresh) > 0.99
    assert forecast(old) < 0.2
    alpha, beta = error_posterior(fresh, 99.5, CONFIG)
    weight = 0.5 ** (1 / 60)  # one second old, 60 s half-life
    assert alpha == pytest.approx(0.1 + 10 * weight)  # prior 20 x 0.5 % failures
    assert beta == pytest.approx(19.9 + 40 * weight)


def test_signals_combine_as_independent_events() -> None:
    ramp = [Sample(100 - i, i % 5 != 0, 300 + 25 * i) for i in range(100)]
    result = predict(
        ramp, prior_success_rate=99.5, error_rate_slo=5.0, latency_slo_ms=2000, config=CONFIG
    )
    expected = 1 - (1 - result.error_breach_probability) * (1 - result.latency_breach_probability)
    assert result.failure_probability == pytest.approx(expected, abs=1e-4)
    assert result.latency_slope_ms_per_s == pytest.approx(25.0)


def test_latency_forecast_extrapolates_the_trend_as_far_as_it_reaches_back() -> None:
    line = [Sample(age, True, 1000 - 10 * age) for age in range(0, 61, 2)]  # +10 ms/s, 1000 now
    slope, p95, probability = latency_forecast(line, latency_slo_ms=1500, horizon_seconds=60)
    assert slope == pytest.approx(10.0)
    assert p95 == pytest.approx(1600.0)  # no scatter: the forecast mean itself
    assert probability == 1.0
    assert latency_forecast(line, latency_slo_ms=1700, horizon_seconds=60)[2] == 0.0
    # Half the history: the line is extended 30 s, not 60.
    assert latency_forecast(line[:16], 1500, 60)[1] == pytest.approx(1300.0)


def test_a_latency_ramp_is_predicted_before_it_breaches_the_slo() -> None:
    """samsara_primary slows by 15 ms/s from 200 ms toward its 2000 ms SLO (2 calls/s)."""
    config = MonitoringConfig()
    observations: list[Observation] = []
    status = BreakerStatus()
    predicted_at = breached_at = None
    p95_when_predicted = None
    for tick in range(0, 400):  # half-second steps: 200 s
        second = tick / 2
        now = NOW + timedelta(seconds=second)
        jitter = 40 * math.sin(tick * 1.7)  # deterministic scatter
        observations.append(Observation(now, True, 200 + 15 * second + jitter, tick + 1))
        assessed = assess(SAMSARA, status, observations[-100:], observations[-1:], now, config)
        status = assessed.breaker
        kind = assessed.degradation.error_type if assessed.degradation else None
        if kind == "predicted_failure" and predicted_at is None:
            predicted_at = second
            p95_when_predicted = assessed.figures.latency_p95_ms
        if kind is not None and kind != "predicted_failure":  # p95 SLO or slow-call breaker
            breached_at = second
            break
    assert predicted_at is not None and breached_at is not None
    assert predicted_at < breached_at
    assert p95_when_predicted is not None and p95_when_predicted < SAMSARA.latency_slo_ms
    # Caught with time to act: at least half the prediction horizon before the breach.
    assert breached_at - predicted_at >= CONFIG.horizon_seconds / 2


def test_an_idle_node_does_not_look_likelier_to_fail_the_longer_it_is_idle() -> None:
    """A recovery holds the node out: its window ages with no new calls."""
    calls = [Sample(i / 2, i % 7 != 0, 300 + 40 * math.sin(i * 1.3)) for i in range(15)]
    idle = [
        predict(
            [Sample(s.age_seconds + extra, s.success, s.latency_ms) for s in calls],
            prior_success_rate=98.8,
            error_rate_slo=5.0,
            latency_slo_ms=2000,
            config=CONFIG,
        )
        for extra in (0, 60, 120, 240)
    ]
    latency = [p.latency_breach_probability for p in idle]
    assert latency == [latency[0]] * len(latency)  # the line is not extended to now
    probabilities = [p.failure_probability for p in idle]
    assert probabilities == sorted(probabilities, reverse=True)
