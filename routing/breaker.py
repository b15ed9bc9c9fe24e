"""The circuit breaker of one node as a pure state machine with an explicit clock.

CLOSED -> OPEN when the calls counted since the breaker last closed show a failure rate or a
slow-call rate at or above its threshold (over at least `minimum_calls`), or
`consecutive_failures` failures in a row, or `rate_limited_calls` calls refused for rate
limiting (HTTP 429). A refused call is not an answer: it counts neither as a failure nor as a
success of the provider, only towards the rate-limit trip, whose reason (`rate_limited`) tells
routing and the monitor that the provider is up and refusing volume. OPEN -> HALF_OPEN when
the break time is over; the break time doubles with each trip in a row (30 s, 60 s, 120 s, ...
capped). HALF_OPEN admits `half_open_calls` probes: all succeed -> CLOSED, one fails (or is
slow, or refused) -> OPEN again, longer.
An operator may force OPEN or CLOSED; a forced state holds until released (AUTO).

Every function returns a new `BreakerStatus`; nothing here reads a clock or the store.
Defaults and the reasons for them are in docs/MONITORING.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from routing.types import BreakerState


class BreakerReason(StrEnum):
    """Why the breaker last changed state."""

    FAILURE_RATE = "failure_rate"
    CONSECUTIVE_FAILURES = "consecutive_failures"
    SLOW_CALLS = "slow_calls"
    RATE_LIMITED = "rate_limited"
    PROBE_FAILED = "probe_failed"
    BREAK_OVER = "break_over"
    PROBES_SUCCEEDED = "probes_succeeded"
    FORCED_OPEN = "forced_open"
    FORCED_CLOSED = "forced_closed"
    RELEASED = "released"


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Thresholds and timers of every node's breaker."""

    failure_rate_threshold: float = 25.0  # percent of counted calls
    minimum_calls: int = 20
    consecutive_failures: int = 5
    slow_call_rate_threshold: float = 50.0  # percent; slow = above the node's latency SLO
    base_break_seconds: float = 30.0
    max_break_seconds: float = 300.0
    half_open_calls: int = 3
    # Calls refused for rate limiting among the counted ones that trip the breaker: a back-off
    # like Retry-After's. Five, so that a chance burst over a per-second limit (one or two
    # refusals) does not, and a sustained overload does within seconds.
    rate_limited_calls: int = 5
    # A breaker that stayed CLOSED this long forgets its earlier trips (break time resets).
    trip_memory_seconds: float = 600.0


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    """Everything the state machine needs to know about one node's breaker."""

    state: BreakerState = BreakerState.CLOSED
    forced: BreakerState | None = None  # OPEN or CLOSED while an operator holds it
    trips: int = 0  # trips in a row; sets the break time
    open_until: datetime | None = None
    changed_at: datetime | None = None
    reason: str | None = None
    half_open_successes: int = 0  # probe outcomes that succeeded in this HALF_OPEN period
    half_open_issued: int = 0  # probe permits handed out (for callers that ask first)
    # Outcomes with a sequence number at or below this were counted before the last close;
    # the CLOSED window starts after it (the window restarts when the breaker closes).
    window_after: int = 0


@dataclass(frozen=True, slots=True)
class CallStats:
    """Counts over the calls the CLOSED breaker judges, newest first for the streak."""

    calls: int
    failures: int
    slow_calls: int
    consecutive_failures: int
    refused: int = 0  # calls refused for rate limiting (not in `calls`)

    @property
    def failure_rate(self) -> float:
        """Failed calls in percent of calls (0 without calls)."""
        return 100.0 * self.failures / self.calls if self.calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        """Slow calls in percent of calls (0 without calls)."""
        return 100.0 * self.slow_calls / self.calls if self.calls else 0.0


def call_stats(calls: Iterable[tuple[bool, float]], slow_ms: float) -> CallStats:
    """Counts over (success, latency ms) pairs given newest first; slow means above slow_ms."""
    total = failures = slow = streak = 0
    streak_open = True
    for success, latency in calls:
        total += 1
        if latency > slow_ms:
            slow += 1
        if success:
            streak_open = False
        else:
            failures += 1
            if streak_open:
                streak += 1
    return CallStats(total, failures, slow, streak)


def break_seconds(trips: int, config: BreakerConfig) -> float:
    """How long the breaker stays OPEN after its `trips`-th trip in a row (base x 2^(n-1))."""
    exponent = max(0, trips - 1)
    # Capped before exponentiation too, so a long-flapping node cannot overflow the float.
    if exponent > 30:
        return config.max_break_seconds
    return min(config.base_break_seconds * 2.0**exponent, config.max_break_seconds)


def effective_state(status: BreakerStatus) -> BreakerState:
    """The state routing obeys: the forced one while an operator holds the breaker."""
    return status.forced if status.forced is not None else status.state


def trip(status: BreakerStatus, now: datetime, reason: str, config: BreakerConfig) -> BreakerStatus:
    """OPEN now for the break time of one more trip in a row."""
    trips = status.trips + 1
    return replace(
        status,
        state=BreakerState.OPEN,
        trips=trips,
        open_until=now + timedelta(seconds=break_seconds(trips, config)),
        changed_at=now,
        reason=reason,
        half_open_successes=0,
        half_open_issued=0,
    )


def tick(status: BreakerStatus, now: datetime, config: BreakerConfig) -> BreakerStatus:
    """Apply the passage of time: OPEN -> HALF_OPEN after the break; old trips forgotten."""
    if status.forced is not None:
        return status
    if status.state is BreakerState.OPEN:
        if status.open_until is None or now >= status.open_until:
            return replace(
                status,
                state=BreakerState.HALF_OPEN,
                open_until=None,
                changed_at=now,
                reason=BreakerReason.BREAK_OVER.value,
                half_open_successes=0,
                half_open_issued=0,
            )
        return status
    if (
        status.state is BreakerState.CLOSED
        and status.trips > 0
        and status.changed_at is not None
        and (now - status.changed_at).total_seconds() >= config.trip_memory_seconds
    ):
        return replace(status, trips=0)
    return status


def evaluate(
    status: BreakerStatus, stats: CallStats, now: datetime, config: BreakerConfig
) -> BreakerStatus:
    """Trip a CLOSED breaker when the counted calls cross a threshold; otherwise unchanged."""
    if status.forced is not None or status.state is not BreakerState.CLOSED:
        return status
    if stats.consecutive_failures >= config.consecutive_failures:
        return trip(status, now, BreakerReason.CONSECUTIVE_FAILURES.value, config)
    if stats.calls >= config.minimum_calls:
        if stats.failure_rate >= config.failure_rate_threshold:
            return trip(status, now, BreakerReason.FAILURE_RATE.value, config)
        if stats.slow_call_rate >= config.slow_call_rate_threshold:
            return trip(status, now, BreakerReason.SLOW_CALLS.value, config)
    if stats.refused >= config.rate_limited_calls:
        return trip(status, now, BreakerReason.RATE_LIMITED.value, config)
    return status


def try_acquire(
    status: BreakerStatus, now: datetime, config: BreakerConfig
) -> tuple[bool, BreakerStatus]:
    """Whether a call may go to the node now, and the status after handing out the permit.

    CLOSED permits everything and OPEN nothing; HALF_OPEN permits `half_open_calls` probes
    and refuses the rest until their outcomes have closed or re-opened the breaker.
    """
    if status.forced is not None:
        return status.forced is BreakerState.CLOSED, status
    current = tick(status, now, config)
    if current.state is BreakerState.CLOSED:
        return True, current
    if current.state is BreakerState.OPEN:
        return False, current
    if current.half_open_issued >= config.half_open_calls:
        return False, current
    return True, replace(current, half_open_issued=current.half_open_issued + 1)


def record(
    status: BreakerStatus,
    *,
    success: bool,
    slow: bool,
    now: datetime,
    config: BreakerConfig,
    sequence: int = 0,
    refused: bool = False,
) -> BreakerStatus:
    """Count one call's outcome: in HALF_OPEN it is a probe, elsewhere the window decides.

    A probe that failed or was slow re-opens the breaker for a longer break, one refused for
    rate limiting too (reason `rate_limited`); the `half_open_calls`-th successful probe
    closes it and restarts its window after `sequence`.
    """
    if status.forced is not None or status.state is not BreakerState.HALF_OPEN:
        return status
    if refused:
        return trip(status, now, BreakerReason.RATE_LIMITED.value, config)
    if not success or slow:
        return trip(status, now, BreakerReason.PROBE_FAILED.value, config)
    successes = status.half_open_successes + 1
    if successes < config.half_open_calls:
        return replace(status, half_open_successes=successes)
    return replace(
        status,
        state=BreakerState.CLOSED,
        open_until=None,
        changed_at=now,
        reason=BreakerReason.PROBES_SUCCEEDED.value,
        half_open_successes=0,
        half_open_issued=0,
        window_after=max(status.window_after, sequence),
    )


def force(status: BreakerStatus, state: BreakerState, now: datetime) -> BreakerStatus:
    """An operator holds the breaker OPEN or CLOSED until released."""
    if state is BreakerState.HALF_OPEN:
        raise ValueError("a breaker can be forced OPEN or CLOSED, not HALF_OPEN")
    forced_open = state is BreakerState.OPEN
    reason = BreakerReason.FORCED_OPEN if forced_open else BreakerReason.FORCED_CLOSED
    return replace(
        status,
        state=state,
        forced=state,
        open_until=None,
        changed_at=now,
        reason=reason.value,
        half_open_successes=0,
        half_open_issued=0,
    )


def release(status: BreakerStatus, now: datetime, sequence: int = 0) -> BreakerStatus:
    """Hand the breaker back to the automatic rules (AUTO).

    From forced OPEN it goes HALF_OPEN, so probes confirm the node before full traffic;
    from forced CLOSED it stays CLOSED with a fresh window (calls before `sequence` no
    longer count), since the operator vouched for the node.
    """
    if status.forced is None:
        return status
    target = BreakerState.HALF_OPEN if status.forced is BreakerState.OPEN else BreakerState.CLOSED
    return replace(
        status,
        state=target,
        forced=None,
        open_until=None,
        changed_at=now,
        reason=BreakerReason.RELEASED.value,
        half_open_successes=0,
        half_open_issued=0,
        window_after=max(status.window_after, sequence)
        if target is BreakerState.CLOSED
        else status.window_after,
    )


def seconds_to_half_open(status: BreakerStatus, now: datetime) -> float | None:
    """Seconds until an OPEN (not forced) breaker half-opens; None otherwise."""
    if status.forced is not None or status.state is not BreakerState.OPEN:
        return None
    if status.open_until is None:
        return 0.0
    return max(0.0, (status.open_until - now).total_seconds())
