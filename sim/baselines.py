"""Baseline policies: what a team would deploy without Switchyard.

Each gets the service's regular nodes (enabled, not emergency-only) in catalog order; the
emergency-only nodes belong to Switchyard's emergency override, which the baselines lack.
Where a baseline has a failover order it is the catalog order: primary first, as a team with
a primary and a backup would configure LiteLLM's `order` or Envoy's priorities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from routing.types import ProviderNode
from sim.policy import Call
from sim.world import Attempt, AttemptKind


class PrimaryOnly:
    """Every call to the first catalog node; a retry goes to it again."""

    name = "primary-only"

    def __init__(self, nodes: Sequence[ProviderNode]) -> None:
        self._primary = nodes[0].node_id

    def choose(self, call: Call) -> str | None:
        """The primary, always."""
        return self._primary

    def observe(self, node_id: str, attempt: Attempt, t: float) -> None:
        """Learns nothing."""

    def tick(self, t: float) -> None:
        """No control plane."""

    def covers(self, cost: float, t: float) -> bool:
        """No emergency budget."""
        return False


class RoundRobin:
    """Calls rotate over the nodes; a retry takes the next node the request has not tried."""

    name = "round-robin"

    def __init__(self, nodes: Sequence[ProviderNode]) -> None:
        self._ids = [n.node_id for n in nodes]
        self._next = 0

    def choose(self, call: Call) -> str | None:
        """The next node in rotation, skipping the ones this request already tried."""
        for _ in range(len(self._ids)):
            node_id = self._ids[self._next]
            self._next = (self._next + 1) % len(self._ids)
            if node_id not in call.tried:
                return node_id
        return self._ids[self._next]

    def observe(self, node_id: str, attempt: Attempt, t: float) -> None:
        """Learns nothing."""

    def tick(self, t: float) -> None:
        """No control plane."""

    def covers(self, cost: float, t: float) -> bool:
        """No emergency budget."""
        return False


@dataclass(slots=True)
class _Cooldown:
    fails: int = 0
    fails_expire: float = 0.0
    cooling_until: float = 0.0


class LiteLLMCooldown:
    """LiteLLM's router with `allowed_fails` and `cooldown_time`, deployments in `order`.

    Failures of a deployment are counted in a cache entry whose time to live (the cooldown
    time) restarts with each failure; the failure after `allowed_fails` puts the deployment in
    cooldown for `cooldown_time`. Every failed call counts, 429s and timeouts included. A
    pick takes the first deployment in order that is not cooling down (preferring one the
    request has not tried); with every deployment cooling down there is none.
    """

    name = "litellm-cooldown"

    def __init__(
        self, nodes: Sequence[ProviderNode], allowed_fails: int = 3, cooldown_seconds: float = 5.0
    ) -> None:
        self._ids = [n.node_id for n in nodes]
        self._state = {node_id: _Cooldown() for node_id in self._ids}
        self.allowed_fails = allowed_fails
        self.cooldown_seconds = cooldown_seconds

    def choose(self, call: Call) -> str | None:
        """The first deployment in order not cooling down; one not yet tried if possible."""
        available = [i for i in self._ids if self._state[i].cooling_until <= call.t]
        for node_id in available:
            if node_id not in call.tried:
                return node_id
        return available[0] if available else None

    def observe(self, node_id: str, attempt: Attempt, t: float) -> None:
        """Count a failure; past the allowed ones, cool the deployment down."""
        if attempt.success:
            return
        state = self._state[node_id]
        fails = state.fails if state.fails_expire > t else 0
        if fails + 1 > self.allowed_fails:
            state.cooling_until = t + self.cooldown_seconds
            state.fails, state.fails_expire = 0, 0.0
        else:
            state.fails, state.fails_expire = fails + 1, t + self.cooldown_seconds

    def tick(self, t: float) -> None:
        """Cooldowns expire by themselves."""

    def covers(self, cost: float, t: float) -> bool:
        """No emergency budget."""
        return False


@dataclass(slots=True)
class _Host:
    consecutive: int = 0
    ejections: int = 0  # the ejection time multiplier
    ejected_until: float | None = None
    returned_at: float | None = None


class EnvoyOutlierEjection:
    """Envoy's outlier detection (consecutive_5xx) with priority failover.

    `consecutive_5xx` server errors or local-origin failures (timeouts) in a row eject a host
    for `base_ejection_time` times its ejection count, at most `max_ejection_time`. A 429 is
    not a 5xx and resets the streak. Ejected hosts return at the first analysis `interval`
    after their time is up; a host back in service for a base ejection time lowers its
    multiplier by one per interval (Envoy's detector does the same).
    With no host ejected, one may always be ejected; beyond that `max_ejection_percent`
    applies. Traffic goes to the first host in priority order that is not ejected; with all
    ejected, Envoy's panic mode balances over all of them.
    """

    name = "envoy-outlier"

    def __init__(
        self,
        nodes: Sequence[ProviderNode],
        consecutive_5xx: int = 5,
        base_ejection_seconds: float = 30.0,
        max_ejection_seconds: float = 300.0,
        interval_seconds: float = 10.0,
        max_ejection_percent: float = 10.0,
    ) -> None:
        self._ids = [n.node_id for n in nodes]
        self._hosts = {node_id: _Host() for node_id in self._ids}
        self.consecutive_5xx = consecutive_5xx
        self.base_ejection_seconds = base_ejection_seconds
        self.max_ejection_seconds = max_ejection_seconds
        self.interval_seconds = interval_seconds
        self.max_ejection_percent = max_ejection_percent
        self._next_interval = interval_seconds
        self._panic = 0

    def choose(self, call: Call) -> str | None:
        """The first host in priority order that is in; a retry skips the host it tried."""
        healthy = [i for i in self._ids if self._hosts[i].ejected_until is None]
        for node_id in healthy:
            if node_id not in call.tried:
                return node_id
        if healthy:
            return healthy[0]
        self._panic = (self._panic + 1) % len(self._ids)
        return self._ids[self._panic]

    def observe(self, node_id: str, attempt: Attempt, t: float) -> None:
        """Count 5xx-like failures in a row; eject at the threshold."""
        host = self._hosts[node_id]
        if attempt.kind in (AttemptKind.OK, AttemptKind.RATE_LIMITED):
            host.consecutive = 0
            return
        host.consecutive += 1
        if host.consecutive < self.consecutive_5xx or host.ejected_until is not None:
            return
        ejected = sum(1 for h in self._hosts.values() if h.ejected_until is not None)
        share = 100.0 * (ejected + 1) / len(self._hosts)
        if ejected and share > self.max_ejection_percent:
            return
        host.ejections += 1
        seconds = min(self.base_ejection_seconds * host.ejections, self.max_ejection_seconds)
        host.ejected_until = t + seconds
        host.consecutive = 0

    def tick(self, t: float) -> None:
        """Analysis sweeps: return hosts whose ejection is over, relax the others' multipliers."""
        while self._next_interval <= t:
            now = self._next_interval
            for host in self._hosts.values():
                if host.ejected_until is None:
                    since = now - host.returned_at if host.returned_at is not None else None
                    if since is None or since >= self.base_ejection_seconds:
                        host.ejections = max(0, host.ejections - 1)
                elif host.ejected_until <= now:
                    host.ejected_until, host.returned_at = None, now
            self._next_interval += self.interval_seconds

    def covers(self, cost: float, t: float) -> bool:
        """No emergency budget."""
        return False
