"""An API replica's per-second headroom on nodes with a known rate capacity.

A node that refuses for rate limiting has a capacity: the calls per second it was seen to
take (routing/admission.py). A replica counts the calls it routes to such a node in the
current clock second; once the count reaches the capacity, the node's headroom is spent and
the replica decides on a view of its snapshot in which the node's admitted share is 0 (no
first attempt) and it is no retry target, until the second is over. Every other node, and a
node with no known capacity, is decided as before; when the spent nodes leave nothing, the
share and the retry preference yield as they always do.

Counts are the replica's own: with several replicas, each counts its own calls, and the
refusals their sum still causes move the node's admitted share, which all replicas share.
Not thread-safe: one replica decides on one event loop.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from routing.types import RoutingSnapshot


class Headroom:
    """Calls routed per node in the current second, and the view they make of a snapshot."""

    __slots__ = ("_cached", "_second", "_sent")

    def __init__(self) -> None:
        self._second: int | None = None
        self._sent: dict[str, int] = {}
        # (snapshot, spent nodes, view): the last view, reused while neither changes.
        self._cached: tuple[RoutingSnapshot, frozenset[str], RoutingSnapshot] | None = None

    def view(self, snapshot: RoutingSnapshot, now: datetime) -> RoutingSnapshot:
        """The snapshot to decide on at ``now``: nodes whose capacity this replica used up in
        the current second marked `headroom_spent`, with an admitted share of 0."""
        self._roll(now)
        if not self._sent:
            return snapshot
        spent = frozenset(node_id for node_id in self._sent if self._full(snapshot, node_id))
        if not spent:
            return snapshot
        cached = self._cached
        if cached is not None and cached[0] is snapshot and cached[1] == spent:
            return cached[2]
        health = dict(snapshot.health)
        for node_id in spent:
            health[node_id] = replace(health[node_id], admitted_share=0.0, headroom_spent=True)
        view = replace(snapshot, health=health)
        self._cached = (snapshot, spent, view)
        return view

    def sent(self, snapshot: RoutingSnapshot, node_id: str, now: datetime) -> None:
        """Count a call routed to ``node_id`` at ``now`` (nodes with a known capacity only)."""
        live = snapshot.health.get(node_id)
        if live is None or live.rate_capacity is None:
            return
        self._roll(now)
        self._sent[node_id] = self._sent.get(node_id, 0) + 1

    def _full(self, snapshot: RoutingSnapshot, node_id: str) -> bool:
        live = snapshot.health.get(node_id)
        capacity = live.rate_capacity if live is not None else None
        return capacity is not None and self._sent[node_id] >= capacity

    def _roll(self, now: datetime) -> None:
        second = int(now.timestamp())
        if second != self._second:
            self._second = second
            self._sent.clear()
            self._cached = None
