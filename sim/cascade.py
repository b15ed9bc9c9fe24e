"""Cascades: a mix of request classes, a failing dependency whose consumers' retries multiply
the traffic to the scenario's service, and the incident whose protections apply meanwhile.

Traffic. Each arrival of the scenario's Poisson traffic is one job of a class of the mix,
drawn from its own seeded stream, so every policy sees the same classes. During the cascade
a job of a consumer that uses the dependency (through the catalog's consumer graph, other
consumers included) calls the dependency, which fails `failure_rate` % of the time; the
consumer then retries the whole job `retry_delay_seconds` later, up to `job_retries` times,
while the dependency is still failing. Every attempt of a job calls the scenario's service:
a new request to Switchyard that names no failed node of the service (none failed it), as
the consumer's client sends it.

The incident. In the live system the consumer's first report of the dependency's error
(backend-agent-error naming its consumers as cascading) opens an incident at once, and its
blast radius (`routing.incidents.blast_radius` over the catalog's consumer graph) says
which services are protected. The simulator opens the incident when the dependency starts
failing, with the dependency hit directly and every consumer of it cascading, and ends it
when the dependency is back. The live incident ends with its last recovery, minutes later,
so the simulated protection ends sooner than the live one would.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from routing.incidents import ConsumerGraph, OpenIncident, Protection, blast_radius
from routing.types import Priority
from sim.scenario import Cascade, RequestProfile, Scenario, TrafficClass

# The order per-class figures are shown in.
PRIORITIES = (Priority.CRITICAL, Priority.HIGH, Priority.NORMAL, Priority.LOW)
# Why a request ended without an answer when nobody was asked: the engine's budget limit.
OUT_OF_BUDGET = "out_of_budget"
# The blast radius does not depend on when the incident opened.
_ANY_TIME = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class IncidentWindow:
    """The simulated incident: when it is open and which services it protects."""

    incident_id: str
    start: float
    end: float
    blast_radius: frozenset[str]

    def protects(self, service: str, t: float) -> bool:
        """True while the incident is open and `service` is in its blast radius."""
        return self.start <= t < self.end and service in self.blast_radius


@dataclass(frozen=True, slots=True)
class Traffic:
    """Every request of a run: when it arrives, its class, and which attempt of its job it is."""

    times: list[float]
    classes: list[int]  # index into `profiles`
    job_attempts: list[int]  # 0: the job's first attempt; k: the consumer's k-th retry
    profiles: tuple[RequestProfile, ...]
    incident: IncidentWindow | None = None

    def profile(self, request: int) -> RequestProfile:
        """What request `request`'s caller sends."""
        return self.profiles[self.classes[request]]


def plain_traffic(scenario: Scenario, times: list[float]) -> Traffic:
    """Every request of the scenario's single profile, no cascade."""
    zeros = [0] * len(times)
    return Traffic(times, zeros, list(zeros), (scenario.request,))


def scenario_traffic(
    scenario: Scenario, graph: ConsumerGraph, times: list[float], seed: int
) -> Traffic:
    """The scenario's requests: its arrivals as jobs of its mix, plus the consumers' retries."""
    if not scenario.mix:
        return plain_traffic(scenario, times)
    mix = scenario.mix
    for index, entry in enumerate(mix):
        if entry.consumer is not None and entry.consumer not in graph.uses:
            known = ", ".join(sorted(graph.uses)) or "none"
            raise KeyError(
                f"mix[{index}].consumer: {entry.consumer!r} is not a consumer of the catalog "
                f"(consumers: {known})"
            )
    cascade = scenario.cascade
    if cascade is not None and not graph.consumers_of(cascade.dependency):
        raise KeyError(
            f"cascade.dependency: no consumer of the catalog uses {cascade.dependency!r}"
        )
    classes = _classes(mix, len(times), seed)
    jobs: list[tuple[float, int, int, int]] = [
        (t, i, c, 0) for i, (t, c) in enumerate(zip(times, classes, strict=True))
    ]
    incident = None
    if cascade is not None:
        jobs.extend(_retries(cascade, mix, graph, times, classes, scenario.duration_seconds, seed))
        incident = _incident(cascade, graph)
    jobs.sort()
    return Traffic(
        times=[j[0] for j in jobs],
        classes=[j[2] for j in jobs],
        job_attempts=[j[3] for j in jobs],
        profiles=tuple(mix),
        incident=incident,
    )


def _classes(mix: Sequence[TrafficClass], count: int, seed: int) -> list[int]:
    rng = random.Random(f"{seed}/mix")
    total = sum(entry.share for entry in mix)
    bounds = []
    running = 0.0
    for entry in mix:
        running += entry.share / total
        bounds.append(running)
    classes = []
    for _ in range(count):
        draw = rng.random()
        classes.append(next((i for i, b in enumerate(bounds) if draw < b), len(mix) - 1))
    return classes


def _retries(
    cascade: Cascade,
    mix: Sequence[TrafficClass],
    graph: ConsumerGraph,
    times: Sequence[float],
    classes: Sequence[int],
    duration: float,
    seed: int,
) -> list[tuple[float, int, int, int]]:
    """The consumers' job retries: (time, order key, class, attempt) per retry."""
    hit = [
        entry.consumer is not None and cascade.dependency in graph.providers_used_by(entry.consumer)
        for entry in mix
    ]
    rng = random.Random(f"{seed}/cascade/{cascade.dependency}")
    retries = []
    order = len(times)
    for t, kind in zip(times, classes, strict=True):
        if not hit[kind]:
            continue
        attempt, at = 0, t
        # The job's attempt at `at` calls the dependency; while it fails, the job is retried.
        while cascade.start <= at < cascade.end and attempt < cascade.job_retries:
            if rng.random() * 100.0 >= cascade.failure_rate:
                break
            attempt += 1
            at = t + attempt * cascade.retry_delay_seconds
            if at >= duration:
                break
            retries.append((at, order, kind, attempt))
            order += 1
    return retries


def _incident(cascade: Cascade, graph: ConsumerGraph) -> IncidentWindow:
    """The incident the dependency's first error report opens, and its blast radius."""
    cascading = graph.consumers_of(cascade.dependency)
    opened = OpenIncident(
        incident_id=f"incident_sim_{cascade.dependency}",
        opened_at=_ANY_TIME,
        last_error_at=_ANY_TIME,
        failed_nodes=frozenset(),
        services=frozenset({cascade.dependency}),
        cascading=cascading,
    )
    radius = blast_radius(opened, graph)
    return IncidentWindow(opened.incident_id, cascade.start, cascade.end, radius)


@dataclass(frozen=True, slots=True)
class ClassFigures:
    """One priority class's requests in one run: served, and why the others were not."""

    priority: Priority
    requests: int
    successes: int
    shed: int  # refused with shed_for_incident
    retries_refused: int  # refused with retry_budget_exhausted
    out_of_budget: int  # refused because the service's budget was spent

    @property
    def success_rate(self) -> float:
        """Percent of the class's requests that succeeded."""
        return 100.0 * self.successes / self.requests if self.requests else 100.0


def class_figures(
    success: Sequence[bool], refusals: dict[int, str], traffic: Traffic
) -> tuple[ClassFigures, ...]:
    """Per-priority figures of one run, CRITICAL first; only the priorities the traffic has."""
    counts: dict[Priority, list[int]] = {}
    for request, ok in enumerate(success):
        priority = traffic.profile(request).priority
        row = counts.setdefault(priority, [0, 0, 0, 0, 0])
        row[0] += 1
        row[1] += ok
        reason = refusals.get(request)
        if reason == Protection.shed_for_incident:
            row[2] += 1
        elif reason == Protection.retry_budget_exhausted:
            row[3] += 1
        elif reason == OUT_OF_BUDGET:
            row[4] += 1
    return tuple(ClassFigures(p, *counts[p]) for p in PRIORITIES if p in counts)


@dataclass(frozen=True, slots=True)
class ClassSeries:
    """CRITICAL requests' success rate and the budget left over time, per bucket of arrivals."""

    times: tuple[float, ...]  # bucket starts, seconds
    critical_success_rate: tuple[float | None, ...]
    budget_left: tuple[float, ...]  # at the bucket's end, less what later arrivals spent


def class_series(
    success: Sequence[bool],
    cost: Sequence[float],
    budget_left: float,
    traffic: Traffic,
    duration: float,
    bucket_seconds: float,
) -> ClassSeries:
    """Per-bucket CRITICAL success and budget left; a request's spend counts at its arrival."""
    buckets = max(1, int(duration // bucket_seconds) + (1 if duration % bucket_seconds else 0))
    critical = [0] * buckets
    served = [0] * buckets
    spend = [0.0] * buckets
    for request, (t, ok, paid) in enumerate(zip(traffic.times, success, cost, strict=True)):
        index = min(int(t // bucket_seconds), buckets - 1)
        spend[index] += paid
        if traffic.profile(request).priority is Priority.CRITICAL:
            critical[index] += 1
            served[index] += ok
    left, later = [], 0.0
    for index in reversed(range(buckets)):
        left.append(budget_left + later)
        later += spend[index]
    return ClassSeries(
        times=tuple(i * bucket_seconds for i in range(buckets)),
        critical_success_rate=tuple(
            100.0 * s / n if n else None for s, n in zip(served, critical, strict=True)
        ),
        budget_left=tuple(reversed(left)),
    )
