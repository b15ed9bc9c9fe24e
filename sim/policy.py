"""What the engine asks of a routing policy: pick a node, learn from outcomes, let time pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sim.world import Attempt


@dataclass(frozen=True, slots=True)
class Call:
    """One attempt to place: which request, when, and the nodes it already tried."""

    request: int
    t: float
    tried: tuple[str, ...] = ()
    budget_remaining: float | None = None  # the service's money left for this period


class Policy(Protocol):
    """A routing policy under simulation; every method runs at virtual time, never wall time."""

    name: str

    def choose(self, call: Call) -> str | None:
        """The node for this attempt, or None when the policy has no node to offer."""
        ...

    def observe(self, node_id: str, attempt: Attempt, t: float) -> None:
        """The outcome of an attempt, at the time the caller learned it."""
        ...

    def tick(self, t: float) -> None:
        """Control-plane work due by time t (called once per simulated second)."""
        ...

    def covers(self, cost: float, t: float) -> bool:
        """True when an emergency budget override pays for a call of `cost` made at t."""
        ...
