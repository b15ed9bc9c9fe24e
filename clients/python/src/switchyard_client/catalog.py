"""The client's copy of the routing catalog: nodes, breakers, health, shares, emergencies.

Read from `GET /providers` and `GET /active-coordinations`, kept fresh from the figures every
`POST /outcomes` answer carries, and read by the local decision when Switchyard is away.
Times are the client's monotonic clock: a wrong wall clock on either side changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

# An OPEN breaker whose reopening time the copy does not know is taken as open this long
# (Switchyard's first break, BREAKER_BASE_BREAK_SECONDS).
DEFAULT_BREAK_SECONDS = 30.0
# An emergency listed without a deadline (a server older than the field) counts this long.
UNKNOWN_EMERGENCY_SECONDS = 60.0


@dataclass(frozen=True)
class NodeFigures:
    """One node as Switchyard last published it."""

    node_id: str
    service: str
    provider_name: str
    position: int  # catalog order
    enabled: bool
    emergency_only: bool
    cost: float
    health_score: float
    success_rate: float
    breaker_state: str  # CLOSED, OPEN or HALF_OPEN
    # While OPEN: until when (monotonic); infinite when held open by an operator.
    open_until: float | None
    admitted_share: float
    region: str = ""
    tags: frozenset[str] = frozenset()
    operations: frozenset[str] | None = None  # the operations it serves; None: all

    def breaker_at(self, now: float) -> str:
        """The breaker's state at `now`: an OPEN breaker whose break is over is HALF_OPEN."""
        if self.breaker_state == "OPEN" and self.open_until is not None and now >= self.open_until:
            return "HALF_OPEN"
        return self.breaker_state


@dataclass(frozen=True)
class CatalogCopy:
    """The catalog as of `taken_at`, with the emergencies then active."""

    services: Mapping[str, tuple[NodeFigures, ...]]
    emergencies: Mapping[str, float]  # service -> end of its emergency (monotonic)
    taken_at: float
    # service -> operation -> the catalog's default constraints (wire names), hard as the
    # request's own.
    constraints: Mapping[str, Mapping[str, Mapping[str, list[str]]]] = field(default_factory=dict)

    def emergency_active(self, service: str, now: float) -> bool:
        """Whether an emergency of `service` that the copy knows of is still on at `now`."""
        return now < self.emergencies.get(service, -math.inf)

    def has_emergency_only_nodes(self) -> bool:
        """Whether any node waits for an emergency (else emergencies need not be read)."""
        return any(node.emergency_only for nodes in self.services.values() for node in nodes)

    def with_outcome_figures(self, figures: list[Mapping[str, Any]], now: float) -> CatalogCopy:
        """The copy with the node figures a `POST /outcomes` answer carried."""
        by_node = {str(f.get("nodeId")): f for f in figures if isinstance(f, Mapping)}
        if not by_node:
            return self
        services = {
            service: tuple(
                _merged(node, by_node[node.node_id], now) if node.node_id in by_node else node
                for node in nodes
            )
            for service, nodes in self.services.items()
        }
        return replace(self, services=services)


def _merged(node: NodeFigures, figures: Mapping[str, Any], now: float) -> NodeFigures:
    state = str(figures.get("breakerState", node.breaker_state))
    if state != "OPEN":
        open_until = None
    elif node.breaker_state == "OPEN" and node.open_until is not None:
        open_until = node.open_until  # the same break, or a forced hold: keep what we knew
    else:
        open_until = now + DEFAULT_BREAK_SECONDS
    return replace(
        node,
        health_score=float(figures.get("healthScore", node.health_score)),
        success_rate=float(figures.get("successRate", node.success_rate)),
        admitted_share=float(figures.get("admittedShare", node.admitted_share)),
        breaker_state=state,
        open_until=open_until,
    )


def catalog_copy(
    providers: Mapping[str, Any], coordinations: Mapping[str, Any] | None, now: float
) -> CatalogCopy:
    """The copy from the answers of GET /providers and GET /active-coordinations."""
    services: dict[str, list[NodeFigures]] = {}
    for position, view in enumerate(providers["data"]["providers"]):
        node = _node(view, position, now)
        services.setdefault(node.service, []).append(node)
    return CatalogCopy(
        services={service: tuple(nodes) for service, nodes in services.items()},
        emergencies=_emergencies(coordinations, now) if coordinations is not None else {},
        taken_at=now,
        constraints=providers["data"].get("constraints") or {},
    )


def _node(view: Mapping[str, Any], position: int, now: float) -> NodeFigures:
    health, breaker, catalog = view["health"], view["breaker"], view["catalog"]
    state = str(breaker["state"])
    open_until: float | None = None
    if state == "OPEN":
        to_half_open = breaker.get("secondsToHalfOpen")
        if breaker.get("forced") == "OPEN":
            open_until = math.inf
        elif isinstance(to_half_open, int | float):
            open_until = now + float(to_half_open)
        else:
            open_until = now + DEFAULT_BREAK_SECONDS
    return NodeFigures(
        node_id=str(view["nodeId"]),
        service=str(view["serviceName"]),
        provider_name=str(view.get("providerName", view["nodeId"])),
        position=position,
        enabled=bool(view.get("enabled", True)),
        emergency_only=bool(view.get("emergencyOnly", False)),
        cost=float(catalog["costPerRequest"]),
        health_score=float(health["healthScore"]),
        success_rate=float(health["successRate"]),
        breaker_state=state,
        open_until=open_until,
        admitted_share=float(health.get("admittedShare", 1.0)),
        region=str(view.get("region", "")),
        tags=frozenset(str(t) for t in view.get("tags") or ()),
        operations=(
            frozenset(str(o) for o in view["operations"])
            if view.get("operations") is not None
            else None
        ),
    )


def _emergencies(answer: Mapping[str, Any], now: float) -> dict[str, float]:
    """Each service's active emergency and when it ends, on the server's clock made ours."""
    ends: dict[str, float] = {}
    for item in answer["data"]["coordinations"]:
        if item.get("kind") != "emergency" or item.get("phase") != "active":
            continue
        deadline, started = _instant(item.get("deadline")), _instant(item.get("startedAt"))
        age = item.get("ageSeconds")
        if deadline is None or started is None or not isinstance(age, int | float):
            ends[str(item["serviceName"])] = now + UNKNOWN_EMERGENCY_SECONDS
            continue
        # The server's now is startedAt + ageSeconds: the remaining time needs no shared clock.
        remaining = (deadline - started).total_seconds() - float(age)
        ends[str(item["serviceName"])] = now + remaining
    return ends


def _instant(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        # Python 3.10's fromisoformat does not read a trailing Z.
        return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return None
