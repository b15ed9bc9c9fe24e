"""What emergency overrides write and read: the `emergencies` row of each override."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.crypto import FieldCipher
from store.events import snapshot_changed
from store.models import Emergency, ProviderNodeRow, ProviderService


class EmergencyNotFound(LookupError):
    """No emergency with that coordination id."""


class EmergencyEnded(RuntimeError):
    """The emergency is no longer active."""


class EmergencyAlreadyActive(RuntimeError):
    """Another emergency of the service is active and before its deadline."""

    def __init__(self, other: Emergency) -> None:
        # Values, not the row: the transaction that read it is rolled back by this error.
        self.coordination_id = other.coordination_id
        self.workflow_id = other.workflow_id
        self.deadline = other.deadline
        super().__init__(
            f"emergency {other.coordination_id!r} is already active for {other.service!r}"
        )


@dataclass(frozen=True, slots=True)
class EmergencySpend:
    """Spend under an override, its cap, and what the service's cheapest request costs."""

    spent: float
    max_budget_override: float
    cheapest_cost: float | None


def service_exists(*, session: Session, service: str) -> bool:
    """True when the catalog has the service."""
    return session.get(ProviderService, service) is not None


def close_stale_emergency(
    *, session: Session, service: str, coordination_id: str, end_reason: str, now: datetime
) -> Emergency | None:
    """End the service's other active emergency with `end_reason` when its deadline has passed
    (its workflow stopped before ending it) and return it; EmergencyAlreadyActive while it
    runs."""
    other = session.scalars(
        select(Emergency).where(
            Emergency.service == service,
            Emergency.status == "active",
            Emergency.coordination_id != coordination_id,
        )
    ).first()
    if other is None:
        return None
    if other.deadline > now:
        raise EmergencyAlreadyActive(other)
    other.status = "ended"
    other.ended_at = now
    other.end_reason = end_reason
    session.flush()
    return other


def open_emergency(
    *,
    session: Session,
    workflow_id: str,
    coordination_id: str,
    service: str,
    operation: str,
    emergency_reason: str,
    business_justification: str,
    max_budget_override: float,
    started_at: datetime,
    deadline: datetime,
    cipher: FieldCipher,
) -> Emergency:
    """Insert the active emergency (reason and justification encrypted) and flush it, so a
    snapshot loaded in this transaction routes with it."""
    row = Emergency(
        workflow_id=workflow_id,
        coordination_id=coordination_id,
        service=service,
        operation=operation,
        status="active",
        emergency_reason=cipher.seal(Emergency.emergency_reason, coordination_id, emergency_reason),
        business_justification=cipher.seal(
            Emergency.business_justification, coordination_id, business_justification
        ),
        max_budget_override=max_budget_override,
        spent=0.0,
        started_at=started_at,
        deadline=deadline,
    )
    session.add(row)
    session.flush()
    return row


def select_emergency_node(*, session: Session, coordination_id: str, node_id: str) -> None:
    """Record the node the activation routed to. Snapshots reload."""
    _get(session, coordination_id).selected_node_id = node_id
    snapshot_changed(session)


def extend_emergency(*, session: Session, coordination_id: str, deadline: datetime) -> Emergency:
    """Move the active emergency's deadline; EmergencyEnded when it is over. Snapshots reload."""
    row = _get(session, coordination_id)
    if row.status != "active":
        raise EmergencyEnded(f"emergency {coordination_id!r} has ended ({row.end_reason})")
    row.deadline = deadline
    snapshot_changed(session)
    return row


def end_emergency(
    *, session: Session, coordination_id: str, end_reason: str, ended_at: datetime
) -> tuple[Emergency, bool]:
    """End the emergency unless it has ended; the row and whether this call ended it.
    Snapshots reload when it did."""
    row = _get(session, coordination_id)
    if row.status != "active":
        return row, False
    row.status = "ended"
    row.ended_at = ended_at
    row.end_reason = end_reason
    snapshot_changed(session)
    return row, True


def emergency_spend(*, session: Session, coordination_id: str) -> EmergencySpend:
    """Spend charged to the override so far and the cheapest enabled node of the service."""
    row = _get(session, coordination_id)
    cheapest = session.scalar(
        select(func.min(ProviderNodeRow.cost_per_request)).where(
            ProviderNodeRow.service == row.service, ProviderNodeRow.enabled.is_(True)
        )
    )
    return EmergencySpend(row.spent, row.max_budget_override, cheapest)


def active_emergency(*, session: Session, service: str) -> Emergency | None:
    """The service's active emergency row, if any."""
    return session.scalars(
        select(Emergency).where(Emergency.service == service, Emergency.status == "active")
    ).first()


def last_emergency(*, session: Session, service: str) -> Emergency | None:
    """The service's most recent emergency row, if any."""
    return session.scalars(
        select(Emergency)
        .where(Emergency.service == service)
        .order_by(Emergency.started_at.desc())
        .limit(1)
    ).first()


def active_emergencies(*, session: Session) -> list[Emergency]:
    """Every active emergency row."""
    return list(session.scalars(select(Emergency).where(Emergency.status == "active")))


def _get(session: Session, coordination_id: str) -> Emergency:
    row = session.get(Emergency, coordination_id)
    if row is None:
        raise EmergencyNotFound(f"no emergency {coordination_id!r} in the store")
    return row
