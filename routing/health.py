"""Live health of a node: the sliding window, the health score, and one assessment step.

`assess` is the single place where a node's recent outcomes become its persisted figures:
the health figures (Bayesian blend of catalog figures and the window), the breaker state
(routing/breaker.py), the failure prediction (routing/prediction.py) and, from those, whether
the node is degraded enough to start a recovery. Formulas and defaults: docs/MONITORING.md.
Pure: `now` is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from operator import itemgetter
from typing import NamedTuple

from routing import breaker
from routing.admission import FULL, NOTIFY_STEP, Admission, AdmissionConfig, admit, seen_capacity
from routing.breaker import BreakerConfig, BreakerReason, BreakerStatus, call_stats
from routing.prediction import Prediction, PredictionConfig, Sample, predict
from routing.types import BreakerState, ProviderNode


class Observation(NamedTuple):
    """One reported call to a node; `sequence` orders arrivals (the outcome row id).

    `rate_limited`: the provider refused the call for rate limiting (HTTP 429) before doing
    any work. Such a call is not an answer: it moves no health figure and no prediction, and
    counts only towards the breaker's rate-limit trip (routing/breaker.py).
    """

    # A NamedTuple rather than a frozen dataclass: ingestion builds one per window row, and
    # tuple construction is several times cheaper.
    observed_at: datetime
    success: bool
    latency_ms: float
    sequence: int = 0
    rate_limited: bool = False


# Observations sort by (observed_at, sequence); a C-level key, since ingestion sorts often.
_TIME_ORDER = itemgetter(0, 3)


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """The window and the score's weights."""

    window_size: int = 100  # the newest N outcomes ...
    window_seconds: float = 300.0  # ... no older than this
    prior_weight: float = 20.0  # k: the catalog figures count as k observations
    error_weight: float = 50.0  # points per error budget (SLO error rate) used beyond catalog
    latency_weight: float = 25.0  # points per latency SLO of p95 beyond catalog latency
    slo_min_calls: int = 20  # fewer observations never count as an SLO breach


@dataclass(frozen=True, slots=True)
class MonitoringConfig:
    """Everything `assess` needs, built once from the settings."""

    health: HealthConfig = field(default_factory=HealthConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    prediction: PredictionConfig = field(default_factory=PredictionConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)


@dataclass(frozen=True, slots=True)
class HealthFigures:
    """The persisted live figures of a node."""

    health_score: float
    success_rate: float  # percent, blended with the catalog
    latency_p50_ms: float
    latency_p95_ms: float
    observations: int  # outcomes in the window


@dataclass(frozen=True, slots=True)
class Degradation:
    """Why a node needs a recovery, in the ErrorReport's terms."""

    node_id: str
    service: str
    error_type: str  # provider_outage | performance_degradation | predicted_failure
    severity: str
    detail: str


@dataclass(frozen=True, slots=True)
class Assessment:
    """One node after an assessment step."""

    figures: HealthFigures
    breaker: BreakerStatus
    prediction: Prediction
    transitions: tuple[tuple[BreakerState, BreakerState, str], ...] = ()
    degradation: Degradation | None = None
    admission: Admission = FULL


def recent(
    observations: Sequence[Observation], now: datetime, config: HealthConfig
) -> list[Observation]:
    """The window: the newest `window_size` observations at most `window_seconds` old."""
    oldest = now - timedelta(seconds=config.window_seconds)
    kept = [o for o in observations if o.observed_at >= oldest]
    kept.sort(key=_TIME_ORDER, reverse=True)
    return kept[: config.window_size]


def answered(observations: Sequence[Observation]) -> Sequence[Observation]:
    """The observations the provider answered: those not refused for rate limiting."""
    if not any(o.rate_limited for o in observations):
        return observations
    return [o for o in observations if not o.rate_limited]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation, as PostgreSQL percentile_cont."""
    if not values:
        raise ValueError("percentile of no values")
    return _interpolate(sorted(values), q)


def _interpolate(ordered: Sequence[float], q: float) -> float:
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def health_figures(
    node: ProviderNode, window: Sequence[Observation], config: HealthConfig
) -> HealthFigures:
    """Catalog figures blended with the window's: each counts by its number of observations.

    blend(catalog, observed) = (k * catalog + n * observed) / (k + n) for the success rate,
    p50 and p95 (the catalog latency is the prior of both) and the health score, whose
    observed value is `health_score` of the window's own figures. With no observations the
    figures are the catalog's; n observations move the score by at most 100 n / (k + n).
    Calls refused for rate limiting are not answers and are left out (n counts the others).
    """
    window = answered(window)
    n = len(window)
    if n == 0:
        return HealthFigures(
            health_score=node.health_score,
            success_rate=node.success_rate,
            latency_p50_ms=node.latency_ms,
            latency_p95_ms=node.latency_ms,
            observations=0,
        )
    k = config.prior_weight
    latencies = sorted(o.latency_ms for o in window)
    observed_success = 100.0 * sum(1 for o in window if o.success) / n
    observed_p95 = _interpolate(latencies, 95)
    observed_score = health_score(node, observed_success, observed_p95, config)

    def blend(catalog: float, observed: float) -> float:
        return (k * catalog + n * observed) / (k + n)

    return HealthFigures(
        health_score=round(blend(node.health_score, observed_score), 2),
        success_rate=round(blend(node.success_rate, observed_success), 3),
        latency_p50_ms=round(blend(node.latency_ms, _interpolate(latencies, 50)), 1),
        latency_p95_ms=round(blend(node.latency_ms, observed_p95), 1),
        observations=n,
    )


def health_score(
    node: ProviderNode, success_rate: float, latency_p95_ms: float, config: HealthConfig
) -> float:
    """0..100 for figures: the catalog score, minus the SLO shares used beyond the catalog's.

    score = catalog_score - w_e (e - e0) - w_l (l - l0), clamped to [0, 100], where
    e = (100 - success) / SLO error rate and l = p95 / latency SLO are the shares of the
    SLOs used, e0 and l0 the same for the catalog figures: figures like the catalog's score
    the catalog score; a node at its error SLO loses about w_e points.
    """
    error_used = (100.0 - success_rate) / node.error_rate_slo
    catalog_error_used = (100.0 - node.success_rate) / node.error_rate_slo
    latency_used = latency_p95_ms / node.latency_slo_ms
    catalog_latency_used = node.latency_ms / node.latency_slo_ms
    score = (
        node.health_score
        - config.error_weight * (error_used - catalog_error_used)
        - config.latency_weight * (latency_used - catalog_latency_used)
    )
    return round(min(100.0, max(0.0, score)), 2)


def slo_breaches(node: ProviderNode, figures: HealthFigures, config: HealthConfig) -> list[str]:
    """Which SLOs the figures breach ("error_rate", "latency"), given enough observations."""
    if figures.observations < config.slo_min_calls:
        return []
    breaches = []
    if figures.success_rate < 100.0 - node.error_rate_slo:
        breaches.append("error_rate")
    if figures.latency_p95_ms > node.latency_slo_ms:
        breaches.append("latency")
    return breaches


def assess(
    node: ProviderNode,
    status: BreakerStatus,
    observations: Sequence[Observation],
    new: Sequence[Observation],
    now: datetime,
    config: MonitoringConfig,
    admission: Admission = FULL,
) -> Assessment:
    """Apply time and the `new` outcomes to a node; figures and prediction from the window.

    `observations` holds the node's recent outcomes including `new` ones. The breaker first
    moves with time, then takes `new` in observation order (probes while HALF_OPEN), then a
    CLOSED breaker judges the window calls that arrived after its last close. Calls refused
    for rate limiting count only towards the breaker's rate-limit trip and the node's
    admitted share (`admission`, routing/admission.py), which `new` moves too.
    """
    transitions: list[tuple[BreakerState, BreakerState, str]] = []

    def step(before: BreakerStatus, after: BreakerStatus) -> BreakerStatus:
        if after.state is not before.state:
            transitions.append((before.state, after.state, after.reason or ""))
        return after

    window = recent(observations, now, config.health)
    slow_ms = node.latency_slo_ms
    # A breaker that closes restarts its window after every outcome seen so far.
    latest = max((o.sequence for o in (*observations, *new)), default=0)
    current = step(status, breaker.tick(status, now, config.breaker))
    for outcome in sorted(new, key=_TIME_ORDER):
        current = step(
            current,
            breaker.record(
                current,
                success=outcome.success,
                slow=outcome.latency_ms > slow_ms,
                now=now,
                config=config.breaker,
                sequence=latest,
                refused=outcome.rate_limited,
            ),
        )
    calls = answered(window)
    if current.state is BreakerState.CLOSED:
        after = current.window_after
        counted = ((o.success, o.latency_ms) for o in calls if o.sequence > after)
        stats = call_stats(counted, slow_ms)
        if calls is not window:
            refused = sum(1 for o in window if o.rate_limited and o.sequence > after)
            stats = replace(stats, refused=refused)
        current = step(current, breaker.evaluate(current, stats, now, config.breaker))
    refused_now = sum(1 for o in new if o.rate_limited)
    admitted = admit(
        admission,
        accepted=len(new) - refused_now,
        refused=refused_now,
        serving=current.state is BreakerState.CLOSED,
        now=now,
        config=config.admission,
        capacity=seen_capacity(
            observations, now, admission.capacity_at_time(now, config.admission)
        ),
    )
    figures = health_figures(node, calls, config.health)
    prediction = predict(
        [Sample((now - o.observed_at).total_seconds(), o.success, o.latency_ms) for o in calls],
        prior_success_rate=node.success_rate,
        error_rate_slo=node.error_rate_slo,
        latency_slo_ms=node.latency_slo_ms,
        config=config.prediction,
    )
    return Assessment(
        figures=figures,
        breaker=current,
        prediction=prediction,
        transitions=tuple(transitions),
        degradation=detect_degradation(node, figures, current, prediction, config),
        admission=admitted,
    )


def detect_degradation(
    node: ProviderNode,
    figures: HealthFigures,
    status: BreakerStatus,
    prediction: Prediction,
    config: MonitoringConfig,
) -> Degradation | None:
    """The most serious reason to start a recovery for the node, or None.

    A forced breaker belongs to an operator (or to a recovery that ended unresolved): the
    monitor leaves such a node alone. So is a breaker open for rate limiting: the provider is
    up and refuses volume, and the breaker's back-off is the answer to that, not a recovery
    that fails the node over for minutes (an agent's `rate_limit_exceeded` report still
    starts one, with the recovery table's quota row).
    """
    if status.forced is not None or not node.enabled:
        return None
    if status.state is BreakerState.OPEN and status.reason == BreakerReason.RATE_LIMITED:
        return None

    def degraded(error_type: str, severity: str, detail: str) -> Degradation:
        return Degradation(node.node_id, node.service, error_type, severity, detail)

    if status.state is BreakerState.OPEN:
        slow = status.reason == BreakerReason.SLOW_CALLS
        return degraded(
            "performance_degradation" if slow else "provider_outage",
            "high",
            f"circuit breaker open ({status.reason})",
        )
    breaches = slo_breaches(node, figures, config.health)
    if "error_rate" in breaches:
        return degraded(
            "provider_outage",
            "high",
            f"success rate {figures.success_rate:g}% below the SLO "
            f"{100.0 - node.error_rate_slo:g}%",
        )
    if "latency" in breaches:
        return degraded(
            "performance_degradation",
            "high",
            f"p95 latency {figures.latency_p95_ms:g} ms above the SLO {node.latency_slo_ms:g} ms",
        )
    if prediction.failure_probability >= config.prediction.threshold:
        return degraded(
            "predicted_failure",
            "medium",
            f"SLO breach predicted within {config.prediction.horizon_seconds:g} s "
            f"(p={prediction.failure_probability:g})",
        )
    return None


def material_change(
    before: HealthFigures, after: HealthFigures, p_before: float, p_after: float
) -> bool:
    """Whether routing would notice: worth a snapshot reload in every API replica.

    Smaller drifts wait for the replicas' periodic reload; reloading on every batch of a
    busy node would cost each replica a snapshot read per batch.
    """
    return (
        abs(after.health_score - before.health_score) >= 2.0
        or abs(after.success_rate - before.success_rate) >= 0.5
        or abs(after.latency_p50_ms - before.latency_p50_ms) >= 0.1 * max(before.latency_p50_ms, 1)
        or abs(p_after - p_before) >= 0.1
    )


def moved_at_once(
    breaker_before: BreakerState, admission_before: Admission, after: Assessment
) -> bool:
    """Whether routing must see the change now, not at the next reload.

    A breaker that changed state, an admitted share that moved by `NOTIFY_STEP` or more, or
    a capacity that appeared, moved or lapsed; store/health.py sends a snapshot NOTIFY for it,
    the simulator reloads its replicas.
    """
    return (
        after.breaker.state is not breaker_before
        or abs(after.admission.share - admission_before.share) >= NOTIFY_STEP
        or after.admission.capacity != admission_before.capacity
    )


# The error codes of a failed outcome that mean "refused for rate limiting" (HTTP 429):
# the provider did no work, so the call is a refusal, not evidence of an outage.
RATE_LIMIT_CODES = frozenset({"429", "rate_limited", "rate_limit_exceeded", "too_many_requests"})


def is_rate_limited(success: bool, error_code: str | None) -> bool:
    """True when a failed outcome's errorCode says the provider refused it (rate limiting)."""
    return not success and error_code is not None and error_code.strip().lower() in RATE_LIMIT_CODES
