"""The simulated providers: catalog nodes whose behaviour follows the scenario over time.

Randomness comes from one `random.Random` per source, each seeded from the run's seed and the
source's name: the arrivals, and one stream per node. A node's stream is indexed by request
number and by how many times that request already tried the node, so the answer a node gives
request i does not depend on the policy that sent it there (common random numbers): two
policies that send a request to the same node at the same time see the same outcome, and the
figures differ only where the policies do.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from routing.incidents import NO_CONSUMERS, ConsumerGraph
from routing.types import BudgetPeriod, ProviderNode
from sim.cascade import Traffic, scenario_traffic
from sim.scenario import Scenario, node_timelines, traffic_timeline
from store.catalog import load_catalog_file

DEFAULT_CATALOG = Path(__file__).resolve().parents[1] / "providers.yaml"
# A 429 comes back at once: the provider refuses before doing any work.
RATE_LIMITED_LATENCY_MS = 25.0
# Attempts per request and node drawn in advance: first try, and a retry on the same node.
DRAWS_PER_REQUEST = 2


class AttemptKind(StrEnum):
    """How one call to a node ended."""

    OK = "ok"
    ERROR = "error"  # a 5xx or a connection error
    TIMEOUT = "timeout"  # no answer within the client's timeout
    RATE_LIMITED = "rate_limited"  # 429: over the node's requests-per-second limit


@dataclass(frozen=True, slots=True)
class Attempt:
    """One call: how it ended, how long the client waited, what the provider billed."""

    kind: AttemptKind
    latency_ms: float
    billed: float

    @property
    def success(self) -> bool:
        """True for an answer the caller can use."""
        return self.kind is AttemptKind.OK


@dataclass(frozen=True, slots=True)
class Catalog:
    """The service's catalog nodes (providers.yaml) and its budget."""

    service: str
    nodes: tuple[ProviderNode, ...]
    budget_period: BudgetPeriod
    budget_limit: float
    consumers: ConsumerGraph = NO_CONSUMERS  # the catalog's internal services and their uses

    @property
    def regular(self) -> tuple[ProviderNode, ...]:
        """Enabled nodes that are not emergency-only, in catalog order: what baselines use."""
        return tuple(n for n in self.nodes if n.enabled and not n.emergency_only)


def load_catalog(service: str, path: Path = DEFAULT_CATALOG) -> Catalog:
    """The catalog figures of one service from the catalog file."""
    spec = load_catalog_file(path)
    if service not in spec.services:
        raise KeyError(f"service {service!r} is not in {path}")
    entry = spec.services[service]
    nodes = tuple(n.to_node(service) for n in entry.nodes)
    return Catalog(service, nodes, entry.budget.period, entry.budget.limit, spec.consumer_graph())


def arrivals(scenario: Scenario, seed: int) -> list[float]:
    """Request arrival times: a Poisson process following the scenario's rate (thinning)."""
    rate = traffic_timeline(scenario)
    steps = [p.rate for p in scenario.traffic]
    peak = max(steps)
    if peak <= 0:
        return []
    rng = random.Random(f"{seed}/arrivals")
    times: list[float] = []
    t = 0.0
    end = scenario.duration_seconds
    while True:
        t += rng.expovariate(peak)
        if t >= end:
            return times
        current = rate.at(t) or 0.0
        if rng.random() * peak < current:
            times.append(t)


class NodeStream:
    """A node's pre-drawn randomness: (uniform for success, normal for latency) per draw."""

    __slots__ = ("normals", "uniforms")

    def __init__(self, seed: int, node_id: str, requests: int) -> None:
        rng = random.Random(f"{seed}/node/{node_id}")
        count = requests * DRAWS_PER_REQUEST
        self.uniforms = [rng.random() for _ in range(count)]
        self.normals = [rng.gauss(0.0, 1.0) for _ in range(count)]


class SimNode:
    """One provider node: its behaviour over time and its rate-limit window."""

    __slots__ = (
        "_costs",
        "_latencies",
        "_limits",
        "_sigmas",
        "_successes",
        "_window",
        "_window_count",
        "node",
        "stream",
    )

    def __init__(self, node: ProviderNode, scenario: Scenario, stream: NodeStream) -> None:
        self.node = node
        self.stream = stream
        timelines = node_timelines(
            scenario.node_points(node.node_id),
            {
                "success_rate": node.success_rate,
                "latency_ms": node.latency_ms,
                "latency_sigma": scenario.latency_sigma,
                "rate_limit": None,
                "cost": node.cost_per_request,
            },
        )
        self._successes = timelines["success_rate"]
        self._latencies = timelines["latency_ms"]
        self._sigmas = timelines["latency_sigma"]
        self._limits = timelines["rate_limit"]
        self._costs = timelines["cost"]
        self._window = -1
        self._window_count = 0

    def price(self, t: float) -> float:
        """What one call costs at time t."""
        return self._costs.at(t) or 0.0

    def price_changes(self) -> list[float]:
        """Times at which the price changes."""
        return self._costs.changes()

    def headroom(self, t: float) -> float | None:
        """Calls the rate limit still admits in the window of time t; None: no limit."""
        limit = self._limits.at(t)
        if limit is None:
            return None
        used = self._window_count if int(t) == self._window else 0
        return max(0.0, limit - used)

    def chance(self, t: float, timeout_ms: float) -> float:
        """The probability that a call made at t succeeds, from the node's true behaviour.

        Its success rate times the chance its lognormal latency stays within the client's
        timeout, and 0 when the rate limit's current window is full. What the scenario says,
        not what a particular request's draw will be.
        """
        headroom = self.headroom(t)
        if headroom is not None and headroom <= 0:
            return 0.0
        answered = (self._successes.at(t) or 0.0) / 100.0
        median = self._latencies.at(t) or 1.0
        sigma = self._sigmas.at(t) or 0.0
        if sigma <= 0:
            in_time = 1.0 if median <= timeout_ms else 0.0
        else:
            z = math.log(timeout_ms / median) / sigma
            in_time = 0.5 * math.erfc(-z / math.sqrt(2.0))
        return answered * in_time

    def call(self, request: int, draw: int, t: float, timeout_ms: float) -> Attempt:
        """Request `request`'s `draw`-th call to this node, made at time t."""
        limit = self._limits.at(t)
        if limit is not None:
            # Fixed one-second windows, as most provider APIs count requests per second.
            window = int(t)
            if window != self._window:
                self._window, self._window_count = window, 0
            if self._window_count >= limit:
                return Attempt(AttemptKind.RATE_LIMITED, RATE_LIMITED_LATENCY_MS, 0.0)
            self._window_count += 1
        index = request * DRAWS_PER_REQUEST + min(draw, DRAWS_PER_REQUEST - 1)
        median = self._latencies.at(t) or 1.0
        sigma = self._sigmas.at(t) or 0.0
        latency = median * math.exp(sigma * self.stream.normals[index])
        price = self.price(t)
        if latency > timeout_ms:
            # The client gave up before an answer: nothing is billed for it.
            return Attempt(AttemptKind.TIMEOUT, timeout_ms, 0.0)
        if self.stream.uniforms[index] * 100.0 >= (self._successes.at(t) or 0.0):
            return Attempt(AttemptKind.ERROR, latency, price)
        return Attempt(AttemptKind.OK, latency, price)


class World:
    """Everything that is the same for every policy: arrivals, node streams, the catalog."""

    def __init__(self, scenario: Scenario, catalog: Catalog, seed: int) -> None:
        self.scenario = scenario
        self.catalog = catalog
        self.seed = seed
        # The requests: jobs of the scenario's mix and, in a cascade, the consumers' retries.
        self.traffic: Traffic = scenario_traffic(
            scenario, catalog.consumers, arrivals(scenario, seed), seed
        )
        self.arrivals = self.traffic.times
        known = {n.node_id for n in catalog.nodes}
        unknown = (set(scenario.nodes) | {i.node for i in scenario.all_incidents()}) - known
        if unknown:
            raise KeyError(f"scenario names nodes outside {catalog.service}: {sorted(unknown)}")
        self.streams = {
            n.node_id: NodeStream(seed, n.node_id, len(self.arrivals)) for n in catalog.nodes
        }

    def nodes(self) -> dict[str, SimNode]:
        """Fresh simulated nodes (rate-limit windows are per run)."""
        streams = self.streams
        return {
            n.node_id: SimNode(n, self.scenario, streams[n.node_id]) for n in self.catalog.nodes
        }
