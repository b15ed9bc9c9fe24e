"""The provider catalog file (providers.yaml): validation and first-start loading."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from routing.types import BudgetPeriod, ProviderNode
from store.models import NodeHealthRow, ProviderNodeRow, ProviderService


class CatalogError(ValueError):
    """The catalog file is missing or malformed; the message names file, entry and field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class NodeSpec(_Model):
    """One node entry of the catalog file."""

    id: str = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9_\-]+$")
    name: str = Field(min_length=1, max_length=200)
    region: str = Field(min_length=1, max_length=64)
    success_rate: float = Field(alias="successRate", ge=0, le=100)
    cost_per_request: float = Field(alias="costPerRequest", ge=0)
    latency_ms: float = Field(alias="latencyMs", gt=0)
    health_score: float = Field(alias="healthScore", ge=0, le=100)
    emergency_only: bool = Field(default=False, alias="emergencyOnly")
    enabled: bool = True
    latency_slo_ms: float = Field(default=2000.0, alias="latencySloMs", gt=0)
    error_rate_slo: float = Field(default=5.0, alias="errorRateSlo", gt=0, le=100)

    def to_node(self, service: str) -> ProviderNode:
        """The routing value of this entry (the store's rows give the same: node_from_row)."""
        return ProviderNode(
            node_id=self.id,
            service=service,
            provider_name=self.name,
            region=self.region,
            success_rate=self.success_rate,
            cost_per_request=self.cost_per_request,
            latency_ms=self.latency_ms,
            health_score=self.health_score,
            emergency_only=self.emergency_only,
            enabled=self.enabled,
            latency_slo_ms=self.latency_slo_ms,
            error_rate_slo=self.error_rate_slo,
        )


class BudgetSpec(_Model):
    """A service's server-side budget."""

    period: BudgetPeriod = BudgetPeriod.daily
    limit: float = Field(gt=0)


class ServiceSpec(_Model):
    """One service entry: its budget and nodes."""

    description: str = ""
    budget: BudgetSpec
    nodes: list[NodeSpec] = Field(min_length=1)


class CatalogSpec(_Model):
    """The whole catalog file."""

    services: dict[str, ServiceSpec] = Field(min_length=1)

    @field_validator("services")
    @classmethod
    def _unique_node_ids(cls, services: dict[str, ServiceSpec]) -> dict[str, ServiceSpec]:
        seen: dict[str, str] = {}
        for service, spec in services.items():
            for node in spec.nodes:
                if node.id in seen:
                    raise ValueError(
                        f"node id {node.id!r} appears in {seen[node.id]!r} and {service!r}"
                    )
                seen[node.id] = service
        return services


def load_catalog_file(path: Path) -> CatalogSpec:
    """Parse and validate a catalog file, or raise CatalogError naming what is wrong."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise CatalogError(f"{path}: catalog file not found") from exc
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return CatalogSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CatalogError(
            f"{path}: {_describe_location(raw, first['loc'])}: {first['msg']}"
        ) from exc


def _describe_location(raw: object, loc: tuple[int | str, ...]) -> str:
    """Turn a pydantic error location into 'service stripe, node stripe_x, field successRate'."""
    parts: list[str] = []
    node_list: object = None
    for index, key in enumerate(loc):
        previous = loc[index - 1] if index else None
        if previous == "services":
            parts.append(f"service {key!r}")
            node_list = raw.get("services", {}).get(key, {}) if isinstance(raw, dict) else None
        elif previous == "nodes" and isinstance(key, int):
            nodes = node_list.get("nodes", []) if isinstance(node_list, dict) else []
            entry = nodes[key] if isinstance(nodes, list) and key < len(nodes) else {}
            node_id = entry.get("id") if isinstance(entry, dict) else None
            parts.append(f"node {node_id!r}" if node_id else f"node #{key + 1}")
        elif key not in ("services", "nodes"):
            parts.append(f"field {key!r}")
    return ", ".join(parts) or "top level"


def seed_catalog(session: Session, catalog: CatalogSpec) -> bool:
    """Load the catalog into an empty store; returns False (and changes nothing) otherwise."""
    if session.scalar(select(func.count()).select_from(ProviderService)):
        return False
    for position, (name, spec) in enumerate(catalog.services.items()):
        session.add(
            ProviderService(
                name=name,
                description=spec.description,
                budget_period=spec.budget.period.value,
                budget_limit=spec.budget.limit,
                position=position,
            )
        )
    session.flush()
    for service, spec in catalog.services.items():
        for position, node in enumerate(spec.nodes):
            # The row holds exactly the routing value's fields, plus the catalog order.
            row = asdict(node.to_node(service))
            session.add(ProviderNodeRow(**row, position=position))
    session.flush()
    for spec in catalog.services.values():
        for node in spec.nodes:
            session.add(
                NodeHealthRow(
                    node_id=node.id,
                    health_score=node.health_score,
                    success_rate=node.success_rate,
                    latency_p50_ms=node.latency_ms,
                    latency_p95_ms=node.latency_ms,
                )
            )
    return True
