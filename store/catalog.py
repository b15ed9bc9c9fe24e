"""The provider catalog as a document: its format (providers.yaml, `PUT /catalog`),
validation with errors that name file, service, node and field, the difference between two
catalogs, and its YAML form. The store's side is store/catalog_revisions.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from routing.incidents import ConsumerGraph
from routing.recovery import RecoveryAction, RecoveryTemplate
from routing.types import BudgetPeriod, Constraints, ProviderNode, ServiceRules, Strategy

# Lower-case words joined by hyphens, as cloud regions are written (us-east-1, eu-west, global).
REGION_PATTERN = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"
TAG_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
NAME_PATTERN = r"^[a-z0-9_\-]+$"

Region = Field(min_length=1, max_length=64, pattern=REGION_PATTERN)


class CatalogError(ValueError):
    """The catalog file is missing or malformed; the message names file, entry and field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ConstraintSpec(_Model):
    """Constraints a service applies by default to one operation (routing/rules.py)."""

    allowed_regions: list[str] = Field(default_factory=list, alias="allowedRegions")
    excluded_regions: list[str] = Field(default_factory=list, alias="excludedRegions")
    required_tags: list[str] = Field(default_factory=list, alias="requiredTags")
    excluded_nodes: list[str] = Field(default_factory=list, alias="excludedNodes")

    @field_validator("allowed_regions", "excluded_regions")
    @classmethod
    def _regions(cls, regions: list[str]) -> list[str]:
        return [_checked(r, REGION_PATTERN, "region") for r in regions]

    @field_validator("required_tags")
    @classmethod
    def _tags(cls, tags: list[str]) -> list[str]:
        return [_checked(t, TAG_PATTERN, "tag") for t in tags]

    def to_constraints(self) -> Constraints:
        """The routing value."""
        return Constraints(
            allowed_regions=frozenset(self.allowed_regions),
            excluded_regions=frozenset(self.excluded_regions),
            required_tags=frozenset(self.required_tags),
            excluded_nodes=frozenset(self.excluded_nodes),
        )


def _checked(value: str, pattern: str, what: str) -> str:
    if not re.fullmatch(pattern, value):
        raise ValueError(f"{value!r} is not a {what} (expected {pattern})")
    return value


class NodeSpec(_Model):
    """One node entry of the catalog."""

    id: str = Field(min_length=1, max_length=100, pattern=NAME_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    region: str = Region
    success_rate: float = Field(alias="successRate", ge=0, le=100)
    cost_per_request: float = Field(alias="costPerRequest", ge=0)
    latency_ms: float = Field(alias="latencyMs", gt=0)
    health_score: float = Field(alias="healthScore", ge=0, le=100)
    emergency_only: bool = Field(default=False, alias="emergencyOnly")
    enabled: bool = True
    latency_slo_ms: float = Field(default=2000.0, alias="latencySloMs", gt=0)
    error_rate_slo: float = Field(default=5.0, alias="errorRateSlo", gt=0, le=100)
    tags: list[str] = Field(default_factory=list, max_length=32)
    operations: list[str] | None = Field(default=None, min_length=1, max_length=100)
    weight: float = Field(default=1.0, ge=0, le=1_000_000)

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str]) -> list[str]:
        return sorted({_checked(t, TAG_PATTERN, "tag") for t in tags})

    @field_validator("operations")
    @classmethod
    def _operations(cls, operations: list[str] | None) -> list[str] | None:
        if operations is None:
            return None
        return sorted({_checked(o, r"^[A-Za-z0-9_.:\-]{1,100}$", "operation") for o in operations})

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
            tags=frozenset(self.tags),
            operations=frozenset(self.operations) if self.operations is not None else None,
            weight=self.weight,
        )


class BudgetSpec(_Model):
    """A service's server-side budget."""

    period: BudgetPeriod = BudgetPeriod.daily
    limit: float = Field(gt=0)


class RecoveryPlanSpec(_Model):
    """A named recovery plan of a service (an error report picks it by `recoveryStrategyId`):
    the strategy and action it pins, and optionally its own timers and retry budget."""

    strategy: Strategy
    action: RecoveryAction
    restore_stages: list[float] | None = Field(
        default=None, alias="restoreStages", min_length=1, max_length=10
    )
    stage_hold_seconds: int | None = Field(default=None, alias="stageHoldSeconds", ge=1, le=86400)
    monitoring_seconds: int | None = Field(default=None, alias="monitoringSeconds", ge=1, le=86400)
    max_retries: int | None = Field(default=None, alias="maxRetries", ge=0, le=100)

    @field_validator("restore_stages")
    @classmethod
    def _stages(cls, stages: list[float] | None) -> list[float] | None:
        if stages is None:
            return None
        if any(not 0 < s <= 1 for s in stages) or stages != sorted(set(stages)):
            raise ValueError("restoreStages: increasing fractions in (0, 1]")
        if stages[-1] != 1.0:
            raise ValueError("restoreStages: the last stage gives all traffic back (1.0)")
        return stages

    def template(self, plan_id: str) -> RecoveryTemplate:
        """The routing value."""
        return RecoveryTemplate(
            plan_id=plan_id,
            strategy=self.strategy,
            action=self.action,
            restore_stages=tuple(self.restore_stages) if self.restore_stages else None,
            stage_hold_seconds=self.stage_hold_seconds,
            monitoring_seconds=self.monitoring_seconds,
            max_retries=self.max_retries,
        )


class ServiceSpec(_Model):
    """One service entry: its budget, nodes, default constraints by operation and recovery
    plans by id."""

    description: str = ""
    budget: BudgetSpec
    nodes: list[NodeSpec] = Field(min_length=1)
    constraints: dict[str, ConstraintSpec] = Field(default_factory=dict)
    recovery_plans: dict[str, RecoveryPlanSpec] = Field(
        default_factory=dict, alias="recoveryPlans", max_length=50
    )

    @field_validator("recovery_plans")
    @classmethod
    def _plan_ids(cls, plans: dict[str, RecoveryPlanSpec]) -> dict[str, RecoveryPlanSpec]:
        for plan_id in plans:
            _checked(plan_id, NAME_PATTERN, "recovery plan id")
        return plans

    def recovery_templates(self) -> dict[str, RecoveryTemplate]:
        """The service's recovery plans as routing applies them."""
        return {plan_id: spec.template(plan_id) for plan_id, spec in self.recovery_plans.items()}

    # Operations safe to send twice: a recovery's redundancy plan hedges them
    # (routing/redundancy.py).
    idempotent_operations: list[str] = Field(
        default_factory=list, alias="idempotentOperations", max_length=100
    )

    @field_validator("idempotent_operations")
    @classmethod
    def _operations(cls, operations: list[str]) -> list[str]:
        return sorted({_checked(o, r"^[A-Za-z0-9_.:\-]{1,100}$", "operation") for o in operations})

    @model_validator(mode="after")
    def _constraints_name_its_nodes(self) -> ServiceSpec:
        ids = {node.id for node in self.nodes}
        for operation, spec in self.constraints.items():
            strangers = sorted(set(spec.excluded_nodes) - ids)
            if strangers:
                raise ValueError(
                    f"constraints.{operation}.excludedNodes: {', '.join(strangers)} "
                    "not a node of this service"
                )
        return self

    def rules(self) -> ServiceRules:
        """The routing rules of this service."""
        return ServiceRules(
            {op: spec.to_constraints() for op, spec in self.constraints.items()},
            frozenset(self.idempotent_operations),
        )


class ConsumerSpec(_Model):
    """An internal service (not routed by Switchyard) and the services it uses: an error of
    a service it uses cascades to it (docs/INCIDENTS.md)."""

    description: str = ""
    uses: list[str] = Field(min_length=1, max_length=50)


class CatalogSpec(_Model):
    """The whole catalog."""

    services: dict[str, ServiceSpec] = Field(min_length=1)
    consumers: dict[str, ConsumerSpec] = Field(default_factory=dict)

    @field_validator("services")
    @classmethod
    def _unique_node_ids(cls, services: dict[str, ServiceSpec]) -> dict[str, ServiceSpec]:
        seen: dict[str, str] = {}
        for service, spec in services.items():
            _checked(service, NAME_PATTERN, "service name")
            for node in spec.nodes:
                if node.id in seen:
                    raise ValueError(
                        f"node id {node.id!r} appears in {seen[node.id]!r} and {service!r}"
                    )
                seen[node.id] = service
        return services

    @field_validator("consumers")
    @classmethod
    def _consumer_graph(
        cls, consumers: dict[str, ConsumerSpec], info: ValidationInfo
    ) -> dict[str, ConsumerSpec]:
        services = info.data.get("services")
        if services is None:  # the services are invalid: their error says why
            return consumers
        for name in consumers:
            _checked(name, NAME_PATTERN, "consumer name")
            if name in services:
                raise ValueError(f"consumers.{name}: a service of the catalog has that name")
        # Unknown services and cycles, named.
        ConsumerGraph.of({name: spec.uses for name, spec in consumers.items()}, services)
        return consumers

    def consumer_graph(self) -> ConsumerGraph:
        """The consumer graph, checked (ConsumerGraphError naming the consumer)."""
        return ConsumerGraph.of(
            {name: spec.uses for name, spec in self.consumers.items()}, self.services
        )

    def document(self) -> dict[str, Any]:
        """The catalog as it is written in a file: camelCase, defaults left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)


class CatalogEditError(ValueError):
    """An edit names a service or node the catalog does not have, or one it already has."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def with_node_added(catalog: CatalogSpec, service: str, node: NodeSpec) -> CatalogSpec:
    """The catalog with `node` appended to `service`'s nodes."""
    if service not in catalog.services:
        known = ", ".join(catalog.services)
        raise CatalogEditError("serviceName", f"unknown service {service!r}; known: {known}")
    for name, spec in catalog.services.items():
        if any(n.id == node.id for n in spec.nodes):
            raise CatalogEditError("node.id", f"node id {node.id!r} is taken (service {name!r})")
    return _replaced_nodes(catalog, service, [*catalog.services[service].nodes, node])


def with_node_changed(catalog: CatalogSpec, node_id: str, fields: dict[str, Any]) -> CatalogSpec:
    """The catalog with the named node's fields (by alias or name) set; validated again."""
    service, node = find_node(catalog, node_id)
    changed = NodeSpec.model_validate(node.model_dump(by_alias=True) | fields)
    nodes = [changed if n.id == node_id else n for n in catalog.services[service].nodes]
    return _replaced_nodes(catalog, service, nodes)


def find_node(catalog: CatalogSpec, node_id: str) -> tuple[str, NodeSpec]:
    """The node's service and entry; CatalogEditError when there is no such node."""
    for service, spec in catalog.services.items():
        for node in spec.nodes:
            if node.id == node_id:
                return service, node
    raise CatalogEditError("nodeId", f"unknown node {node_id!r}")


def _replaced_nodes(catalog: CatalogSpec, service: str, nodes: list[NodeSpec]) -> CatalogSpec:
    spec = catalog.services[service]
    entry = ServiceSpec.model_validate(
        spec.model_dump(by_alias=True) | {"nodes": [n.model_dump(by_alias=True) for n in nodes]}
    )
    return CatalogSpec(services={**catalog.services, service: entry}, consumers=catalog.consumers)


def load_catalog_file(path: Path) -> CatalogSpec:
    """Parse and validate a catalog file, or raise CatalogError naming what is wrong."""
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise CatalogError(f"{path}: catalog file not found") from exc
    return parse_catalog(text, str(path))


def parse_catalog(text: str, source: str) -> CatalogSpec:
    """Parse and validate catalog YAML; CatalogError naming `source`, the line of a YAML
    error, or the service, node and field of an invalid entry."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise CatalogError(f"{source}: not valid YAML{where}: {problem}") from exc
    return validate_catalog(raw, source)


def validate_catalog(raw: object, source: str) -> CatalogSpec:
    """Validate a catalog document; CatalogError naming service, node and field."""
    try:
        return CatalogSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CatalogError(
            f"{source}: {describe_location(raw, first['loc'])}: {first['msg']}"
        ) from exc


def describe_location(raw: object, loc: tuple[int | str, ...]) -> str:
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


def to_yaml(catalog: CatalogSpec) -> str:
    """The catalog as YAML that `parse_catalog` reads back to the same catalog."""
    return yaml.safe_dump(catalog.document(), sort_keys=False, allow_unicode=True)


# ---- differences ----

ChangeKind = Literal["added", "removed", "changed"]
_NODE_FIELDS = tuple(
    (name, field.alias or name) for name, field in NodeSpec.model_fields.items() if name != "id"
)


@dataclass(frozen=True, slots=True)
class CatalogChange:
    """One difference between the live catalog and a wanted one."""

    kind: ChangeKind
    service: str
    node_id: str | None = None
    field: str | None = None  # for a change: the field, as written in the file
    old: object = None
    new: object = None

    def __str__(self) -> str:
        if self.node_id:
            subject = f"node {self.node_id} ({self.service})"
        elif self.field == "consumer":
            subject = f"consumer {self.service}"
        else:
            subject = f"service {self.service}"
        if self.kind == "added":
            return f"+ {subject}"
        if self.kind == "removed":
            return f"- {subject}" + (" (disabled, history kept)" if self.node_id else "")
        if self.field == "consumer":
            return f"~ {subject}: {_show(self.old)} -> {_show(self.new)}"
        return f"~ {subject}: {self.field} {_show(self.old)} -> {_show(self.new)}"


def _show(value: object) -> str:
    if isinstance(value, list | dict):
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip() or "[]"
    return repr(value) if isinstance(value, str) else str(value)


def catalog_changes(live: CatalogSpec, wanted: CatalogSpec) -> list[CatalogChange]:
    """What applying `wanted` changes in `live`.

    A node absent from `wanted` is removed (disabled, its history kept), as is every enabled
    node of a service absent from `wanted`; a node `live` holds disabled counts as absent.
    """
    return list(_changes(live, wanted))


def _changes(live: CatalogSpec, wanted: CatalogSpec) -> Iterator[CatalogChange]:
    live_nodes = {n.id: (service, n) for service, s in live.services.items() for n in s.nodes}
    wanted_ids = {n.id for s in wanted.services.values() for n in s.nodes}
    for service, spec in wanted.services.items():
        before = live.services.get(service)
        if before is None:
            yield CatalogChange("added", service)
        else:
            yield from _service_changes(service, before, spec)
        for node in spec.nodes:
            found = live_nodes.get(node.id)
            if found is None:
                yield CatalogChange("added", service, node.id)
                continue
            old_service, old = found
            if old_service != service:
                yield CatalogChange("changed", service, node.id, "service", old_service, service)
            for name, alias in _NODE_FIELDS:
                a, b = getattr(old, name), getattr(node, name)
                if a != b:
                    yield CatalogChange("changed", service, node.id, alias, a, b)
        if before is not None:
            order = [n.id for n in spec.nodes]
            was = [n.id for n in before.nodes if n.id in set(order)]
            if was != [i for i in order if i in set(was)]:
                yield CatalogChange("changed", service, None, "node order", was, order)
    for node_id, (service, node) in live_nodes.items():
        if node.enabled and node_id not in wanted_ids:
            yield CatalogChange("removed", service, node_id)
    for service in live.services:
        if service not in wanted.services:
            yield CatalogChange("removed", service)
    yield from _consumer_changes(live, wanted)


def _consumer_changes(live: CatalogSpec, wanted: CatalogSpec) -> Iterator[CatalogChange]:
    for name, consumer in wanted.consumers.items():
        before = live.consumers.get(name)
        if before is None:
            yield CatalogChange("added", name, field="consumer")
        elif before != consumer:
            old = before.model_dump(mode="json", exclude_defaults=True)
            new = consumer.model_dump(mode="json", exclude_defaults=True)
            yield CatalogChange("changed", name, None, "consumer", old, new)
    for name in live.consumers:
        if name not in wanted.consumers:
            yield CatalogChange("removed", name, field="consumer")


def _service_changes(
    service: str, before: ServiceSpec, after: ServiceSpec
) -> Iterator[CatalogChange]:
    if before.description != after.description:
        yield CatalogChange(
            "changed", service, None, "description", before.description, after.description
        )
    if before.budget != after.budget:
        yield CatalogChange(
            "changed",
            service,
            None,
            "budget",
            before.budget.model_dump(mode="json"),
            after.budget.model_dump(mode="json"),
        )
    if before.recovery_plans != after.recovery_plans:
        yield CatalogChange(
            "changed",
            service,
            None,
            "recoveryPlans",
            _plans_document(before.recovery_plans),
            _plans_document(after.recovery_plans),
        )
    if before.idempotent_operations != after.idempotent_operations:
        yield CatalogChange(
            "changed",
            service,
            None,
            "idempotentOperations",
            before.idempotent_operations,
            after.idempotent_operations,
        )
    if before.constraints != after.constraints:
        yield CatalogChange(
            "changed",
            service,
            None,
            "constraints",
            {
                k: v.model_dump(mode="json", by_alias=True, exclude_defaults=True)
                for k, v in before.constraints.items()
            },
            {
                k: v.model_dump(mode="json", by_alias=True, exclude_defaults=True)
                for k, v in after.constraints.items()
            },
        )


def _plans_document(plans: dict[str, RecoveryPlanSpec]) -> dict[str, Any]:
    return {k: plans_entry(v) for k, v in plans.items()}


def plans_entry(plan: RecoveryPlanSpec) -> dict[str, Any]:
    """A recovery plan as written in the catalog (and stored)."""
    return plan.model_dump(mode="json", by_alias=True, exclude_none=True)
