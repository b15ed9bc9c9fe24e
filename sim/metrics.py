"""A run's figures: success, cost, latency, how quickly traffic left a faulty node and came back.

Time to fail over, per incident: the faulty node's share of first attempts in the minute
before the incident is its usual share; the policy has failed over at the first second t of
the incident from which fewer than half that share of the next 5 s of requests go to the
node first. Time to restore: after the incident ends (and before the node's next incident),
the first second from which at least half the usual share goes to it again; an incident that
lasts to the end of the scenario has no restore time. A policy that never sent traffic to the
node has nothing to fail over ("n/a"); one that failed over and never came back within the
scenario shows "never".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate

from routing.health import percentile
from sim.engine import RunRecord
from sim.scenario import Incident

SHARE_WINDOW_SECONDS = 5
BASELINE_SECONDS = 60


@dataclass(frozen=True, slots=True)
class ShiftTimes:
    """Fail-over and restore times (seconds) for the incidents a policy had traffic on."""

    failover: tuple[float | None, ...] = ()
    restore: tuple[float | None, ...] = ()  # per incident that failed over

    def mean_failover(self) -> float | None:
        """Mean over the incidents that failed over."""
        return _mean(self.failover)

    def mean_restore(self) -> float | None:
        """Mean over the incidents whose traffic came back."""
        return _mean(self.restore)


@dataclass(frozen=True, slots=True)
class Summary:
    """One policy's figures on one scenario."""

    policy: str
    requests: int
    successes: int
    first_try_successes: int
    cost: float
    p50_ms: float | None
    p95_ms: float | None
    shifts: ShiftTimes
    wall_seconds: float
    budget_left: float = 0.0  # the service's money left at the end

    @property
    def failed(self) -> int:
        """Requests that did not succeed, retries included."""
        return self.requests - self.successes

    @property
    def success_rate(self) -> float:
        """Percent of requests that succeeded (after the client's retries)."""
        return 100.0 * self.successes / self.requests if self.requests else 100.0

    @property
    def first_try_rate(self) -> float:
        """Percent of requests whose first attempt succeeded."""
        return 100.0 * self.first_try_successes / self.requests if self.requests else 100.0

    @property
    def cost_per_success(self) -> float | None:
        """Money spent per successful request (failed attempts are spent too)."""
        return self.cost / self.successes if self.successes else None

    @property
    def requests_per_wall_second(self) -> float:
        """Simulated requests per second of wall time."""
        return self.requests / self.wall_seconds if self.wall_seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Series:
    """Success rate and cost per successful request over time, per bucket of arrivals."""

    times: tuple[float, ...]  # bucket starts, seconds
    success_rate: tuple[float | None, ...]
    cost_per_success: tuple[float | None, ...]


def summarize(record: RunRecord, incidents: Sequence[Incident], duration: float) -> Summary:
    """The figures of one run."""
    latencies = [lat for lat, ok in zip(record.latency_ms, record.success, strict=True) if ok]
    return Summary(
        policy=record.policy,
        requests=len(record.arrivals),
        successes=sum(record.success),
        first_try_successes=sum(record.first_ok),
        cost=sum(record.cost),
        p50_ms=percentile(latencies, 50) if latencies else None,
        p95_ms=percentile(latencies, 95) if latencies else None,
        shifts=shift_times(record, incidents, duration),
        wall_seconds=record.wall_seconds,
        budget_left=record.budget_left,
    )


def shift_times(record: RunRecord, incidents: Sequence[Incident], duration: float) -> ShiftTimes:
    """Fail-over and restore times of each incident the policy had traffic on."""
    seconds = int(duration) + 1
    totals = [0] * seconds
    for t in record.arrivals:
        totals[min(int(t), seconds - 1)] += 1
    total_sums = [0, *accumulate(totals)]
    failover: list[float | None] = []
    restore: list[float | None] = []
    for incident in incidents:
        on_node = [0] * seconds
        for t, node in zip(record.arrivals, record.first_node, strict=True):
            if node == incident.node:
                on_node[min(int(t), seconds - 1)] += 1
        node_sums = [0, *accumulate(on_node)]

        def share(start: int, end: int, sums: list[int] = node_sums) -> float | None:
            start, end = max(0, start), min(seconds, end)
            count = total_sums[end] - total_sums[start]
            return (sums[end] - sums[start]) / count if count else None

        start, end = int(incident.start), int(min(incident.end, duration))
        usual = share(start - BASELINE_SECONDS, start)
        if not usual:
            continue
        half = usual / 2.0

        def below(t: int, half: float = half) -> bool:
            return _below(share(t, t + SHARE_WINDOW_SECONDS), half)

        def back_on(t: int, half: float = half) -> bool:
            return _at_least(share(t, t + SHARE_WINDOW_SECONDS), half)

        moved = _first(start, end, below)
        failover.append(None if moved is None else float(moved - start))
        if moved is None or incident.end >= duration:
            continue
        limit = _next_start(incidents, incident, duration)
        back = _first(end, limit, back_on)
        restore.append(None if back is None else float(back - end))
    return ShiftTimes(tuple(failover), tuple(restore))


def series(record: RunRecord, duration: float, bucket_seconds: float) -> Series:
    """Per-bucket success rate and cost per successful request of requests arriving in it."""
    buckets = max(1, int(duration // bucket_seconds) + (1 if duration % bucket_seconds else 0))
    requests = [0] * buckets
    successes = [0] * buckets
    spend = [0.0] * buckets
    for t, ok, cost in zip(record.arrivals, record.success, record.cost, strict=True):
        index = min(int(t // bucket_seconds), buckets - 1)
        requests[index] += 1
        successes[index] += ok
        spend[index] += cost
    return Series(
        times=tuple(i * bucket_seconds for i in range(buckets)),
        success_rate=tuple(
            100.0 * s / r if r else None for s, r in zip(successes, requests, strict=True)
        ),
        cost_per_success=tuple(c / s if s else None for c, s in zip(spend, successes, strict=True)),
    )


def _first(start: int, end: int, test: Callable[[int], bool]) -> int | None:
    for t in range(start, end):
        if test(t):
            return t
    return None


def _below(value: float | None, limit: float) -> bool:
    return value is not None and value < limit


def _at_least(value: float | None, limit: float) -> bool:
    return value is not None and value >= limit


def _next_start(incidents: Sequence[Incident], incident: Incident, duration: float) -> int:
    later = [i.start for i in incidents if i.node == incident.node and i.start >= incident.end]
    return int(min([*later, duration]))


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None
