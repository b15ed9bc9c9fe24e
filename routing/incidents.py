"""Cross-stream incidents: which error streams are one incident, what an incident puts at
risk, and how the services in its blast radius are protected (docs/INCIDENTS.md).

Pure rules, used by the API (correlating a reported error, guarding decisions), the monitor,
the incident workflow and the simulator alike.

Correlation: a new error joins an open incident, within the correlation window since the
incident's last error, by the first rule that matches, in this order:

1. `explicit` — the caller named the incident (`incidentId`);
   `same_stream` — its error stream is a member already (a repeated report stays in its
   incident however long ago the incident's last error was);
2. `same_node` — it names a failed node already in the incident;
3. `same_provider_region` — it names a node of the same service and region as one of the
   incident's failed nodes (one provider's region going down);
4. `cascade` — its service is in the incident's blast radius: among the services the
   incident hit directly or through cascades, or used (through the catalog's consumer graph)
   by a cascading service of the incident.

Several open incidents may match: the oldest wins (then the smallest id), so the same inputs
always give the same answer. No match: the error opens a new incident.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from routing.types import (
    BudgetState,
    BusinessCriticality,
    Priority,
    ProviderNode,
    RoutingRequest,
)

# An incident takes new errors for this long after its last one.
CORRELATION_WINDOW = timedelta(minutes=30)


class ConsumerGraphError(ValueError):
    """The consumer graph names an unknown service or has a cycle; the message says where."""


@dataclass(frozen=True, slots=True)
class ConsumerGraph:
    """Internal services and the services each uses (provider services or other consumers)."""

    uses: Mapping[str, frozenset[str]]

    @classmethod
    def of(cls, uses: Mapping[str, Iterable[str]], providers: Iterable[str]) -> ConsumerGraph:
        """The graph, checked: every used service exists and no consumer uses itself."""
        graph = {name: frozenset(used) for name, used in uses.items()}
        known = set(providers) | set(graph)
        for name, used in graph.items():
            strangers = sorted(used - known)
            if strangers:
                raise ConsumerGraphError(
                    f"consumers.{name}.uses: {', '.join(strangers)} is neither a service nor a "
                    "consumer of the catalog"
                )
        for name in graph:
            _check_acyclic(name, graph, [])
        return cls(graph)

    def providers_used_by(self, consumer: str) -> frozenset[str]:
        """The provider services `consumer` depends on, through other consumers too."""
        return frozenset(s for s in self._reachable(consumer) if s not in self.uses)

    def consumers_of(self, service: str) -> frozenset[str]:
        """The consumers that depend on `service`, directly or through other consumers."""
        return frozenset(c for c in self.uses if service in self._reachable(c))

    def _reachable(self, consumer: str) -> frozenset[str]:
        """Everything `consumer` uses, directly or through other consumers."""
        seen: set[str] = set()
        stack = [consumer]
        while stack:
            for used in self.uses.get(stack.pop(), ()):
                if used not in seen:
                    seen.add(used)
                    stack.append(used)
        return frozenset(seen)


NO_CONSUMERS = ConsumerGraph({})


def _check_acyclic(name: str, graph: Mapping[str, frozenset[str]], path: list[str]) -> None:
    if name in path:
        cycle = " -> ".join([*path[path.index(name) :], name])
        raise ConsumerGraphError(f"consumers: the consumer graph has a cycle: {cycle}")
    for used in graph.get(name, ()):
        _check_acyclic(used, graph, [*path, name])


@dataclass(frozen=True, slots=True)
class OpenIncident:
    """What correlation needs to know of an open incident."""

    incident_id: str
    opened_at: datetime
    last_error_at: datetime
    failed_nodes: frozenset[str]
    services: frozenset[str]  # hit directly: the services of its error streams
    cascading: frozenset[str]  # named as cascading by its errors
    streams: frozenset[str] = frozenset()  # its members' error streams


@dataclass(frozen=True, slots=True)
class ErrorSignal:
    """A reported error, as correlation sees it."""

    service: str
    failed_nodes: frozenset[str]
    cascading: frozenset[str]
    at: datetime
    incident_id: str | None = None  # the caller's explicit incidentId
    stream_id: str | None = None  # the error's stream


@dataclass(frozen=True, slots=True)
class Correlation:
    """The incident the error joins (None: it opens a new one) and the rule that matched."""

    incident_id: str | None
    rule: str  # explicit | same_stream | same_node | same_provider_region | cascade | new


def blast_radius(incident: OpenIncident, graph: ConsumerGraph) -> frozenset[str]:
    """Every service the incident puts at risk: hit directly, cascading, and the services the
    cascading consumers use (whose traffic the cascade moves)."""
    used = frozenset().union(*(graph.providers_used_by(c) for c in incident.cascading))
    return incident.services | incident.cascading | used


def correlate(
    signal: ErrorSignal,
    incidents: Sequence[OpenIncident],
    graph: ConsumerGraph,
    nodes: Mapping[str, ProviderNode],
    window: timedelta = CORRELATION_WINDOW,
) -> Correlation:
    """The incident `signal` joins by the rules of the module docstring."""
    if signal.incident_id is not None:
        return Correlation(signal.incident_id, "explicit")
    ordered = sorted(incidents, key=lambda i: (i.opened_at, i.incident_id))
    for incident in ordered:
        if signal.stream_id is not None and signal.stream_id in incident.streams:
            return Correlation(incident.incident_id, "same_stream")
    live = [i for i in ordered if signal.at - i.last_error_at <= window]
    for incident in live:
        if signal.failed_nodes & incident.failed_nodes:
            return Correlation(incident.incident_id, "same_node")
    for incident in live:
        if _shares_provider_region(signal.failed_nodes, incident.failed_nodes, nodes):
            return Correlation(incident.incident_id, "same_provider_region")
    for incident in live:
        if signal.service in blast_radius(incident, graph):
            return Correlation(incident.incident_id, "cascade")
    return Correlation(None, "new")


def _shares_provider_region(
    failed: frozenset[str], theirs: frozenset[str], nodes: Mapping[str, ProviderNode]
) -> bool:
    places = {(n.service, n.region) for i in theirs if (n := nodes.get(i)) is not None}
    return any((n.service, n.region) in places for i in failed if (n := nodes.get(i)) is not None)


# ---- cascade prevention ----


@dataclass(frozen=True, slots=True)
class ProtectionConfig:
    """How the services in an open incident's blast radius are protected (all tunable)."""

    # A request may retry this many times (nodes in failedProviders) while protected.
    retries_per_request: int = 2
    # A service's retries may be this share of its first attempts over the window...
    retry_ratio: float = 0.2
    retry_window_seconds: float = 60.0
    # ...and at least this many in the window, so a quiet service can still retry.
    min_retries: int = 10
    # The last share of the period's budget is kept for CRITICAL and HIGH requests.
    reserved_share: float = 0.3


class Protection(StrEnum):
    """Why a protected request was refused."""

    retry_budget_exhausted = "retry_budget_exhausted"
    shed_for_incident = "shed_for_incident"


@dataclass(slots=True)
class RetryWindow:
    """First attempts and retries of one service over the last window (explicit clock)."""

    window_seconds: float
    firsts: deque[float] = field(default_factory=deque)
    retries: deque[float] = field(default_factory=deque)

    def count(self, now: float, retry: bool) -> None:
        """Count one attempt the service took."""
        (self.retries if retry else self.firsts).append(now)

    def totals(self, now: float) -> tuple[int, int]:
        """(first attempts, retries) within the window ending at `now`."""
        horizon = now - self.window_seconds
        for queue in (self.firsts, self.retries):
            while queue and queue[0] < horizon:
                queue.popleft()
        return len(self.firsts), len(self.retries)


def protection_refusal(
    request: RoutingRequest,
    budget: BudgetState | None,
    window: RetryWindow,
    now: float,
    config: ProtectionConfig,
) -> tuple[Protection, str] | None:
    """Why a request for a protected service is refused, or None when it may go on.

    A retry (the request names nodes it failed on) beyond `retries_per_request`, or beyond the
    service's retry budget (retries in the window up to `max(min_retries, retry_ratio x
    first attempts)`), is refused: a failing dependency's callers retrying everything
    multiply the traffic on what is left. A request below HIGH priority that is not
    revenue-blocking is refused once the service's budget is down to `reserved_share` of its
    limit: what is left is for the traffic that matters most.
    """
    retries = len(request.failed_providers)
    if retries:
        if retries > config.retries_per_request:
            return (
                Protection.retry_budget_exhausted,
                f"this request already retried {retries} times; "
                f"{config.retries_per_request} are allowed during an incident",
            )
        firsts, taken = window.totals(now)
        allowed = max(config.min_retries, int(config.retry_ratio * firsts))
        if taken >= allowed:
            return (
                Protection.retry_budget_exhausted,
                f"{taken} retries in the last {config.retry_window_seconds:g} s against "
                f"{firsts} first attempts; the incident's retry budget is {allowed}",
            )
    important = request.priority in (Priority.CRITICAL, Priority.HIGH) or (
        request.business_criticality == BusinessCriticality.REVENUE_BLOCKING
    )
    if not important and budget is not None and budget.limit > 0:
        floor = config.reserved_share * budget.limit
        if budget.remaining <= floor:
            return (
                Protection.shed_for_incident,
                f"{budget.remaining:g} of the {budget.period.value} budget {budget.limit:g} is "
                f"left and the last {config.reserved_share:.0%} is kept for CRITICAL and HIGH "
                "requests during the incident",
            )
    return None
