"""Failure prediction: the probability that a node breaches its SLO in the next interval.

Two statistical signals over the node's recent window (docs/MONITORING.md has the derivation):

- errors: a Beta posterior of the node's failure probability p. Prior from the catalog success
  rate, worth `prior_weight` calls; every observed call adds its weight 2^(-age / half_life)
  to the failures (alpha) or successes (beta), so old evidence fades. P_err = P(p > SLO rate).
- latency: a least-squares line of latency over time, extrapolated `horizon_seconds` ahead.
  The p95 there is the forecast mean + 1.645 residual standard deviations; the uncertainty of
  the forecast mean (its standard error) turns "p95 above the SLO" into P_lat.

Combined, assuming independence: P = 1 - (1 - P_err) (1 - P_lat).
Pure: no clock reads (sample ages are given), no randomness.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

# The standard normal's 95th percentile: p95 = mean + Z95 sd for normal residuals.
Z95 = 1.6448536269514722
# Floor of a Beta parameter, for a prior of exactly 0 % or 100 % success.
_MIN_SHAPE = 1e-3


@dataclass(frozen=True, slots=True)
class PredictionConfig:
    """Parameters of the predictor."""

    horizon_seconds: float = 60.0  # how far ahead "the next interval" reaches
    half_life_seconds: float = 60.0  # an observation this old counts half
    prior_weight: float = 20.0  # the catalog success rate counts as this many calls
    min_samples: int = 10  # fewer observations: no forecast (probability 0)
    threshold: float = 0.8  # at or above: a predictive recovery starts


class Sample(NamedTuple):
    """One observed call: how long ago, whether it succeeded, its latency."""

    age_seconds: float
    success: bool
    latency_ms: float


@dataclass(frozen=True, slots=True)
class Prediction:
    """The forecast for one node and the figures behind it."""

    failure_probability: float = 0.0  # P(SLO breach in the next interval), 0..1
    horizon_seconds: float = 0.0  # how far ahead the latency line was extended
    error_breach_probability: float = 0.0
    latency_breach_probability: float = 0.0
    expected_error_rate: float | None = None  # posterior mean of p, percent
    latency_slope_ms_per_s: float | None = None
    forecast_p95_ms: float | None = None
    samples: int = 0


def predict(
    samples: Sequence[Sample],
    *,
    prior_success_rate: float,
    error_rate_slo: float,
    latency_slo_ms: float,
    config: PredictionConfig,
) -> Prediction:
    """The probability that the node breaches its error-rate or latency SLO within the horizon."""
    if len(samples) < config.min_samples:
        return Prediction(samples=len(samples))
    alpha, beta = error_posterior(samples, prior_success_rate, config)
    p_err = 1.0 - regularized_incomplete_beta(error_rate_slo / 100.0, alpha, beta)
    slope, forecast, p_lat = latency_forecast(samples, latency_slo_ms, config.horizon_seconds)
    combined = 1.0 - (1.0 - p_err) * (1.0 - p_lat)
    return Prediction(
        failure_probability=round(_clamp01(combined), 4),
        error_breach_probability=round(_clamp01(p_err), 4),
        latency_breach_probability=round(_clamp01(p_lat), 4),
        expected_error_rate=round(100.0 * alpha / (alpha + beta), 4),
        latency_slope_ms_per_s=None if slope is None else round(slope, 4),
        forecast_p95_ms=None if forecast is None else round(forecast, 2),
        samples=len(samples),
        horizon_seconds=round(extrapolation(samples, config.horizon_seconds), 3),
    )


def error_posterior(
    samples: Sequence[Sample], prior_success_rate: float, config: PredictionConfig
) -> tuple[float, float]:
    """(alpha, beta) of the decayed Beta posterior of the failure probability."""
    prior_failure = min(1.0, max(0.0, 1.0 - prior_success_rate / 100.0))
    alpha = max(_MIN_SHAPE, config.prior_weight * prior_failure)
    beta = max(_MIN_SHAPE, config.prior_weight * (1.0 - prior_failure))
    for sample in samples:
        weight = 0.5 ** (max(0.0, sample.age_seconds) / config.half_life_seconds)
        if sample.success:
            beta += weight
        else:
            alpha += weight
    return alpha, beta


def latency_forecast(
    samples: Sequence[Sample], latency_slo_ms: float, horizon_seconds: float
) -> tuple[float | None, float | None, float]:
    """(slope ms/s, forecast p95 ms, P(p95 above the SLO)) up to `horizon_seconds` ahead.

    The line is never extended further past its newest sample than the samples reach back
    (min(horizon, span)): a burst of calls a second apart says nothing about the next minute,
    and its noisy slope, extended 60 s, would make every node look about to fail. Measured
    from the newest sample, not from now: a node that got no calls for minutes (held out by
    a recovery) keeps the forecast its calls supported, where extending their line to now
    and beyond made an idle node look ever more likely to fail the longer it sat idle (found
    by the simulator: a predictive recovery then held out the service's only healthy backup).
    """
    n = len(samples)
    if n < 3:
        return None, None, 0.0
    # Time runs forward: a sample `age` seconds old sits at t = -age; "now" is t = 0.
    times = [-s.age_seconds for s in samples]
    values = [s.latency_ms for s in samples]
    # The forecast instant: `extrapolation` past the newest sample (now, for a busy node).
    ahead = max(times) + extrapolation(samples, horizon_seconds)
    t_mean = sum(times) / n
    y_mean = sum(values) / n
    sxx = sum((t - t_mean) ** 2 for t in times)
    sxy = sum((t - t_mean) * (y - y_mean) for t, y in zip(times, values, strict=True))
    slope = sxy / sxx if sxx > 1e-9 else 0.0
    intercept = y_mean - slope * t_mean
    residuals = sum((y - intercept - slope * t) ** 2 for t, y in zip(times, values, strict=True))
    sigma = math.sqrt(residuals / (n - 2))
    forecast_mean = intercept + slope * ahead
    forecast_p95 = forecast_mean + Z95 * sigma
    leverage = 1.0 / n + ((ahead - t_mean) ** 2 / sxx if sxx > 1e-9 else 0.0)
    standard_error = sigma * math.sqrt(leverage)
    if standard_error <= 1e-9:
        probability = 1.0 if forecast_p95 > latency_slo_ms else 0.0
    else:
        probability = normal_cdf((forecast_p95 - latency_slo_ms) / standard_error)
    return slope, forecast_p95, probability


def extrapolation(samples: Sequence[Sample], horizon_seconds: float) -> float:
    """How far past its newest sample the latency line goes: the horizon, at most the span."""
    if not samples:
        return 0.0
    ages = [s.age_seconds for s in samples]
    return min(horizon_seconds, max(ages) - min(ages))


def normal_cdf(z: float) -> float:
    """Standard normal cumulative distribution function."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def regularized_incomplete_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the Beta(a, b) cumulative distribution at x (Lentz continued fraction)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    # The continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry
    # I_x(a, b) = 1 - I_(1-x)(b, a) on the other side (Numerical Recipes, section 6.4).
    if x < (a + 1.0) / (a + b + 2.0):
        return _clamp01(front * _beta_fraction(x, a, b) / a)
    return _clamp01(1.0 - front * _beta_fraction(1.0 - x, b, a) / b)


def _beta_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 301):
        m2 = 2 * m
        numerator = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + numerator * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + numerator / c
        c = c if abs(c) > tiny else tiny
        result *= d * c
        numerator = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + numerator * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + numerator / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        result *= delta
        if abs(delta - 1.0) < 1e-12:
            break
    return result


def _clamp01(value: float) -> float:
    return min(1.0, max(0.0, value))
