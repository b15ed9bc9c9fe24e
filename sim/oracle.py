"""The oracle: a router that knows the true state of every node, but not the luck of a call.

It is the bound the other policies are read against. For every attempt it knows, from the
scenario, each node's current success rate, its latency distribution and so the chance that
an answer arrives before the client's timeout, the headroom left in its rate limit's current
window and its current price, the service's remaining budget and the traffic still to come.
It does not know how the particular request's call will end (the node's random draw).

The rule, per attempt (first try and retry alike: a retry's draw is independent of the
first's, so the nodes a request already tried are no worse than before):

1. A node's chance is `SimNode.chance`: success rate times P(latency <= timeout), 0 with no
   rate-limit headroom left in the current window, 0 when the call's price is more than the
   budget left (and no emergency override pays for it). Emergency-only nodes are candidates
   only while an emergency override of the scenario is active and its cap covers the call,
   as they are for Switchyard.
2. Budget pacing: when the budget left divided by the requests the traffic is still expected
   to bring is below a node's price, choosing that node now would leave later requests
   unpaid; such nodes are dropped while a node within that allowance has any chance.
3. The highest chance wins; among nodes within `TOLERANCE` (percentage points of attempt
   success) of it, the cheapest, then the likelier, then catalog order.

With a client retry, a tolerance of half a point costs at most about half a point times the
retry's failure chance of request success (0.0025 pp at catalog figures): negligible for
success, and it lets the oracle take the cheap node among nearly equally good ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from routing.types import ProviderNode
from sim.policy import Call
from sim.scenario import Emergency, Scenario, traffic_timeline
from sim.world import Attempt, Catalog, SimNode

# Nodes within this many percentage points of the best attempt success count as equally good.
TOLERANCE = 0.5


@dataclass
class _EmergencyWindow:
    start: float
    end: float
    cap: float
    spent: float = 0.0

    def active(self, t: float) -> bool:
        return self.start <= t < self.end

    def pays(self, cost: float) -> bool:
        return self.spent + cost <= self.cap


class Oracle:
    """Clairvoyant of state, not of luck: the best node for each attempt (module docstring)."""

    name = "oracle"

    def __init__(self, catalog: Catalog, scenario: Scenario, nodes: dict[str, SimNode]) -> None:
        self._nodes = nodes
        self._regular = [n for n in catalog.nodes if n.enabled and not n.emergency_only]
        self._emergency_only = [n for n in catalog.nodes if n.enabled and n.emergency_only]
        self._timeout_ms = scenario.client.timeout_ms
        self._emergencies = [_window(e) for e in sorted(scenario.emergencies, key=lambda e: e.at)]
        self._covering: _EmergencyWindow | None = None
        self._expected = _Expected(scenario)

    def choose(self, call: Call) -> str | None:
        """The likeliest node for this attempt, the cheapest among nearly equally likely ones."""
        t = call.t
        emergency = self._emergency(t)
        candidates = list(self._regular)
        if emergency is not None:
            candidates.extend(self._emergency_only)
        budget = call.budget_remaining
        scored: list[tuple[ProviderNode, float, float]] = []
        for node in candidates:
            sim = self._nodes[node.node_id]
            price = sim.price(t)
            paid = emergency is not None and emergency.pays(price)
            if node.emergency_only and not paid:
                continue
            if not paid and budget is not None and price > budget:
                chance = 0.0
            else:
                chance = sim.chance(t, self._timeout_ms)
            scored.append((node, chance, price))
        if not scored:
            return None
        if budget is not None and emergency is None:
            allowance = budget / max(self._expected(t), 1.0)
            paced = [s for s in scored if s[2] <= allowance]
            if any(chance > 0 for _, chance, _ in paced):
                scored = paced
        chosen = pick(scored)
        self._covering = emergency
        return chosen.node_id

    def observe(self, node_id: str, attempt: Attempt, t: float) -> None:
        """Learns nothing: it already knows the state, and outcomes are luck."""

    def tick(self, t: float) -> None:
        """No control plane."""

    def covers(self, cost: float, t: float) -> bool:
        """An active emergency override pays for the call while its cap lasts."""
        window = self._covering
        if window is None or not window.active(t) or not window.pays(cost):
            return False
        window.spent += cost
        return True

    def _emergency(self, t: float) -> _EmergencyWindow | None:
        return next((w for w in self._emergencies if w.active(t) and w.spent < w.cap), None)


def pick(scored: list[tuple[ProviderNode, float, float]]) -> ProviderNode:
    """The rule's step 3 over (node, chance, price) in catalog order."""
    best = max(chance for _, chance, _ in scored)
    close = [s for s in scored if s[1] >= best - TOLERANCE / 100.0]
    return min(close, key=lambda s: (s[2], -s[1]))[0]


def _window(emergency: Emergency) -> _EmergencyWindow:
    end = emergency.at + emergency.duration_minutes * 60.0
    return _EmergencyWindow(emergency.at, end, emergency.max_budget_override)


class _Expected:
    """The requests the traffic timeline still brings after t (its integral, per second)."""

    def __init__(self, scenario: Scenario) -> None:
        rate = traffic_timeline(scenario)
        seconds = int(scenario.duration_seconds) + 1
        per_second = [rate.at(s + 0.5) or 0.0 for s in range(seconds)]
        remaining = [0.0] * (seconds + 1)
        for s in range(seconds - 1, -1, -1):
            remaining[s] = remaining[s + 1] + per_second[s]
        self._remaining = remaining
        self._per_second = per_second

    def __call__(self, t: float) -> float:
        second = min(max(int(t), 0), len(self._per_second) - 1)
        left_in_second = (second + 1 - t) * self._per_second[second]
        return self._remaining[second + 1] + max(0.0, left_in_second)
