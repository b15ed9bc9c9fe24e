"""The live catalog: versioned in the store and changed while everything runs.

Every change is applied in one transaction: the rows, a numbered revision (the whole catalog
after it, who applied it and why, one line per change), a `catalog_changed` event and a
snapshot reload, so every API replica routes with it within a second. Live health, breakers,
budgets and recoveries of the nodes a change leaves alone are not touched. A node removed
from the catalog is disabled, its history kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.base import utcnow
from store.catalog import (
    CatalogChange,
    CatalogSpec,
    ConsumerSpec,
    NodeSpec,
    ServiceSpec,
    catalog_changes,
    plans_entry,
)
from store.events import publish, snapshot_changed
from store.models import (
    CatalogRevision,
    Emergency,
    NodeHealthRow,
    ProviderNodeRow,
    ProviderService,
    ServiceConsumer,
)
from store.snapshot import load_overrides


class CatalogConflict(RuntimeError):
    """The change cannot be applied as it stands; the message says what stands in the way."""


class StaleRevision(CatalogConflict):
    """The change was made against a revision that is no longer the current one."""

    def __init__(self, expected: int, current: int) -> None:
        self.expected, self.current = expected, current
        super().__init__(
            f"the catalog is at revision {current}, not {expected}: read it again and retry"
        )


@dataclass(frozen=True, slots=True)
class Revision:
    """A catalog revision without its content."""

    number: int
    created_at: datetime
    author: str
    summary: str
    changes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying a catalog did: its changes and the revision it made (or the current
    one, when there was nothing to change)."""

    revision: Revision
    changes: list[CatalogChange]


def _revision(row: CatalogRevision) -> Revision:
    return Revision(row.number, row.created_at, row.author, row.summary, list(row.changes))


def current_revision(session: Session) -> Revision | None:
    """The catalog's current revision, None before the first."""
    row = session.scalars(
        select(CatalogRevision).order_by(CatalogRevision.number.desc()).limit(1)
    ).first()
    return _revision(row) if row is not None else None


def revision_number(session: Session) -> int:
    """The current revision's number (0 before the first)."""
    return int(session.scalar(select(func.max(CatalogRevision.number))) or 0)


def live_catalog(session: Session) -> CatalogSpec | None:
    """The catalog as the store holds it (disabled nodes included), None when empty."""
    services = session.scalars(select(ProviderService).order_by(ProviderService.position)).all()
    if not services:
        return None
    nodes = session.scalars(
        select(ProviderNodeRow).order_by(ProviderNodeRow.service, ProviderNodeRow.position)
    ).all()
    by_service: dict[str, list[NodeSpec]] = {s.name: [] for s in services}
    for row in nodes:
        by_service[row.service].append(_node_spec(row))
    consumers = session.scalars(select(ServiceConsumer).order_by(ServiceConsumer.position)).all()
    return CatalogSpec(
        consumers={
            c.name: ConsumerSpec(description=c.description, uses=list(c.uses)) for c in consumers
        },
        services={
            s.name: ServiceSpec.model_validate(
                {
                    "description": s.description,
                    "budget": {"period": s.budget_period, "limit": s.budget_limit},
                    "nodes": by_service[s.name],
                    "constraints": s.constraints,
                    "recoveryPlans": s.recovery_plans,
                    "idempotentOperations": list(s.idempotent_operations),
                }
            )
            for s in services
            if by_service[s.name]
        },
    )


def _node_spec(row: ProviderNodeRow) -> NodeSpec:
    return NodeSpec(
        id=row.node_id,
        name=row.provider_name,
        region=row.region,
        success_rate=row.success_rate,
        cost_per_request=row.cost_per_request,
        latency_ms=row.latency_ms,
        health_score=row.health_score,
        emergency_only=row.emergency_only,
        enabled=row.enabled,
        latency_slo_ms=row.latency_slo_ms,
        error_rate_slo=row.error_rate_slo,
        tags=list(row.tags),
        operations=list(row.operations) if row.operations is not None else None,
        weight=row.weight,
    )


def seed_catalog(session: Session, catalog: CatalogSpec, source: str = "providers.yaml") -> bool:
    """Load the catalog into an empty store as revision 1; False (nothing done) otherwise."""
    if session.scalar(select(func.count()).select_from(ProviderService)):
        return False
    summary = f"first start: loaded {source}"
    apply_catalog(session, catalog, author=source, summary=summary, announce=False)
    return True


def ensure_revision(session: Session, source: str) -> Revision:
    """The current revision; a store from before revisions gets its live catalog recorded
    as revision 1."""
    found = current_revision(session)
    if found is not None:
        return found
    live = live_catalog(session)
    if live is None:
        raise CatalogConflict("the store has no catalog yet")
    row = CatalogRevision(
        number=1,
        created_at=utcnow(),
        author=source,
        summary="the catalog as it was before revisions were kept",
        changes=[],
        content=live.document(),
    )
    session.add(row)
    session.flush()
    return _revision(row)


def apply_catalog(
    session: Session,
    wanted: CatalogSpec,
    *,
    author: str,
    summary: str = "",
    expected_revision: int | None = None,
    announce: bool = True,
) -> Applied:
    """Make the live catalog `wanted`, in the session's transaction, as a new revision.

    `expected_revision` (an If-Match): StaleRevision when the catalog has moved on since.
    CatalogConflict when the change would disable a node a running recovery or emergency
    holds, or leave a service without an enabled node. Nothing to change: no new revision.
    `announce=False` (the first load into an empty store) publishes no `catalog_changed`.
    """
    # Serialises catalog changes: the revision row locked here is the one every change reads.
    current = session.scalars(
        select(CatalogRevision).order_by(CatalogRevision.number.desc()).limit(1).with_for_update()
    ).first()
    number = current.number if current is not None else 0
    if expected_revision is not None and expected_revision != number:
        raise StaleRevision(expected_revision, number)
    live = live_catalog(session)
    changes = catalog_changes(live, wanted) if live is not None else _all_added(wanted)
    if not changes and current is not None:
        return Applied(_revision(current), [])
    _refuse_conflicts(session, live, wanted)
    _write(session, wanted)
    lines = [str(change) for change in changes]
    row = CatalogRevision(
        number=number + 1,
        created_at=utcnow(),
        author=author,
        summary=summary or _summary(changes),
        changes=lines,
        content=wanted.document(),
    )
    session.add(row)
    if announce:
        payload = {"revision": row.number, "author": author, "summary": row.summary}
        publish(session, "catalog_changed", payload | {"changes": lines})
    snapshot_changed(session)
    session.flush()
    return Applied(_revision(row), changes)


def _summary(changes: list[CatalogChange]) -> str:
    counts = {
        kind: sum(1 for c in changes if c.kind == kind) for kind in ("added", "changed", "removed")
    }
    return ", ".join(f"{n} {kind}" for kind, n in counts.items() if n) or "no change"


def _all_added(wanted: CatalogSpec) -> list[CatalogChange]:
    return [
        *(
            change
            for service, spec in wanted.services.items()
            for change in (
                CatalogChange("added", service),
                *(CatalogChange("added", service, n.id) for n in spec.nodes),
            )
        ),
        *(CatalogChange("added", name, field="consumer") for name in wanted.consumers),
    ]


def holds(session: Session) -> dict[str, str]:
    """Node id -> what holds it: a running recovery keeping it out of routing, or an active
    emergency routing to it. Such a node is not disabled under them."""
    held: dict[str, str] = {}
    for override in load_overrides(session).values():
        for node_id in override.excluded_nodes:
            held[node_id] = f"recovery {override.workflow_id}"
    for emergency in session.scalars(select(Emergency).where(Emergency.status == "active")):
        if emergency.selected_node_id:
            held[emergency.selected_node_id] = f"emergency {emergency.workflow_id}"
    return held


def _refuse_conflicts(session: Session, live: CatalogSpec | None, wanted: CatalogSpec) -> None:
    if live is None:
        return
    wanted_nodes = {n.id: n for s in wanted.services.values() for n in s.nodes}
    disabled = [
        node.id
        for spec in live.services.values()
        for node in spec.nodes
        if node.enabled and not (node.id in wanted_nodes and wanted_nodes[node.id].enabled)
    ]
    if disabled:
        held = holds(session)
        for node_id in disabled:
            if node_id in held:
                raise CatalogConflict(
                    f"node {node_id} is held by {held[node_id]}: "
                    "end or resolve it before disabling the node"
                )
    for service, spec in wanted.services.items():
        if not any(n.enabled for n in spec.nodes):
            raise CatalogConflict(f"service {service} would have no enabled node left")


def _write(session: Session, wanted: CatalogSpec) -> None:
    """The rows of `wanted`; live nodes it leaves out are disabled."""
    services = {s.name: s for s in session.scalars(select(ProviderService))}
    rows = {r.node_id: r for r in session.scalars(select(ProviderNodeRow))}
    for position, (name, spec) in enumerate(wanted.services.items()):
        service = services.get(name)
        if service is None:
            service = services[name] = ProviderService(name=name)
            session.add(service)
        service.description = spec.description
        service.budget_period = spec.budget.period.value
        service.budget_limit = spec.budget.limit
        service.position = position
        service.constraints = {
            op: c.model_dump(mode="json", by_alias=True, exclude_defaults=True)
            for op, c in spec.constraints.items()
        }
        service.recovery_plans = {k: plans_entry(v) for k, v in spec.recovery_plans.items()}
        service.idempotent_operations = list(spec.idempotent_operations)
    session.flush()  # services before the nodes that reference them
    wanted_ids: set[str] = set()
    fresh: list[NodeSpec] = []
    for name, spec in wanted.services.items():
        for position, node in enumerate(spec.nodes):
            wanted_ids.add(node.id)
            row = rows.get(node.id)
            if row is None:
                row = ProviderNodeRow(node_id=node.id)
                session.add(row)
                fresh.append(node)
            _set_node(row, name, node, position)
    session.flush()  # nodes before their health rows
    for node in fresh:
        # A new node starts from its catalog figures; a node that stays keeps its live ones.
        session.add(
            NodeHealthRow(
                node_id=node.id,
                health_score=node.health_score,
                success_rate=node.success_rate,
                latency_p50_ms=node.latency_ms,
                latency_p95_ms=node.latency_ms,
            )
        )
    end = len(wanted_ids)
    for node_id, row in sorted(rows.items(), key=lambda item: (item[1].service, item[1].position)):
        if node_id not in wanted_ids and row.enabled:
            row.enabled = False
            row.position = end
            end += 1
    _write_consumers(session, wanted)


def _write_consumers(session: Session, wanted: CatalogSpec) -> None:
    """The consumer graph of `wanted`; consumers it leaves out are deleted (they route no
    traffic and keep no history)."""
    consumers = {c.name: c for c in session.scalars(select(ServiceConsumer))}
    for position, (name, entry) in enumerate(wanted.consumers.items()):
        consumer = consumers.pop(name, None) or ServiceConsumer(name=name)
        consumer.description = entry.description
        consumer.uses = list(entry.uses)
        consumer.position = position
        session.add(consumer)
    for gone in consumers.values():
        session.delete(gone)


def _set_node(row: ProviderNodeRow, service: str, node: NodeSpec, position: int) -> None:
    row.service = service
    row.provider_name = node.name
    row.region = node.region
    row.success_rate = node.success_rate
    row.cost_per_request = node.cost_per_request
    row.latency_ms = node.latency_ms
    row.health_score = node.health_score
    row.emergency_only = node.emergency_only
    row.enabled = node.enabled
    row.latency_slo_ms = node.latency_slo_ms
    row.error_rate_slo = node.error_rate_slo
    row.tags = list(node.tags)
    row.operations = list(node.operations) if node.operations is not None else None
    row.weight = node.weight
    row.position = position
