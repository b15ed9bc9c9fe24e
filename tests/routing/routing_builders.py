"""Builders shared by the routing tests: hand-made nodes and the default catalog snapshot."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from routing import BudgetPeriod, BudgetState, ProviderNode, RoutingSnapshot
from routing.types import ServiceRules

NOW = datetime(2025, 8, 16, 10, 30, tzinfo=UTC)
PROVIDERS_YAML = Path(__file__).resolve().parents[2] / "providers.yaml"


def node(
    node_id: str,
    *,
    service: str = "svc",
    health: float = 90.0,
    success: float = 99.0,
    latency: float = 200.0,
    cost: float = 0.01,
    emergency_only: bool = False,
    enabled: bool = True,
) -> ProviderNode:
    """A catalog node with readable defaults; the provider name is the id in title case."""
    return ProviderNode(
        node_id=node_id,
        service=service,
        provider_name=node_id.replace("_", " ").title(),
        region="test-1",
        success_rate=success,
        cost_per_request=cost,
        latency_ms=latency,
        health_score=health,
        emergency_only=emergency_only,
        enabled=enabled,
    )


def snapshot_of(*nodes: ProviderNode, **fields: Any) -> RoutingSnapshot:
    """A snapshot holding these nodes under their services, plus any other snapshot fields."""
    by_service: dict[str, list[ProviderNode]] = {}
    for n in nodes:
        by_service.setdefault(n.service, []).append(n)
    return RoutingSnapshot(nodes={s: tuple(ns) for s, ns in by_service.items()}, **fields)


def load_default_snapshot(path: Path = PROVIDERS_YAML) -> RoutingSnapshot:
    """The default catalog from providers.yaml, with each service's budget unspent and its
    idempotent operations (its default constraints are left out)."""
    document = yaml.safe_load(path.read_text())
    nodes: dict[str, tuple[ProviderNode, ...]] = {}
    budgets: dict[str, BudgetState] = {}
    rules: dict[str, ServiceRules] = {}
    for service, spec in document["services"].items():
        if spec.get("idempotentOperations"):
            rules[service] = ServiceRules(idempotent=frozenset(spec["idempotentOperations"]))
        nodes[service] = tuple(
            ProviderNode(
                node_id=raw["id"],
                service=service,
                provider_name=raw["name"],
                region=raw["region"],
                success_rate=float(raw["successRate"]),
                cost_per_request=float(raw["costPerRequest"]),
                latency_ms=float(raw["latencyMs"]),
                health_score=float(raw["healthScore"]),
                emergency_only=bool(raw.get("emergencyOnly", False)),
                enabled=bool(raw.get("enabled", True)),
                latency_slo_ms=float(raw.get("latencySloMs", 2000.0)),
            )
            for raw in spec["nodes"]
        )
        budget = spec["budget"]
        budgets[service] = BudgetState(
            service=service,
            period=BudgetPeriod(budget["period"]),
            limit=float(budget["limit"]),
            spent=0.0,
        )
    return RoutingSnapshot(nodes=nodes, budgets=budgets, rules=rules)
