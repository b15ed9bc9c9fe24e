"""Recording many routing decisions in one transaction (the API's group commit).

A batch is written in two steps of one transaction, both called by the API's writer:

1. `book_decisions` charges each decision's spend (its budget or its emergency's cap) and
   registers its error stream and monitoring session, and says how long that integration
   took. A decision the store refuses (budget or cap spent) is reported back, so its request
   can decide again.
2. `write_decisions` writes the accepted decisions' complete records: the coordination rows,
   their events and the requests' audit entries, so an answered decision is an audited one.

Between the two, the API builds each answer with the measured figure; the store never calls
into the API. One batch costs a fixed handful of statements whatever its size: the budget rows
it charges are locked once (in key order, so concurrent writers never deadlock), every decision
is checked against them in arrival order, and rows, touches and events go in as multi-row
statements.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from routing.budget import period_start
from routing.types import BudgetPeriod
from store.audit import AuditRecord
from store.audit import append as append_audit
from store.coordinations import CoordinationRecord
from store.events import EventDraft, publish_many
from store.models import BudgetSpend, Coordination, Emergency, ErrorStream, MonitoringSession


@dataclass(frozen=True, slots=True)
class BudgetCharge:
    """The server-side budget a decision's cost is booked against."""

    period: BudgetPeriod
    limit: float


@dataclass(frozen=True, slots=True)
class Touches:
    """What a decision registers besides its row: its error stream and monitoring session."""

    stream_id: str | None = None
    monitoring_session_id: str | None = None


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the writer did with a decision: booked (refusal None) or refused."""

    refusal: Refusal | None


class RefusalKind(StrEnum):
    """What the store found spent when it refused a decision."""

    budget = "budget"  # the service's budget for the period
    emergency = "emergency"  # the emergency's cap, or the emergency has ended


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the store refused a decision the snapshot allowed."""

    kind: RefusalKind
    detail: str
    spent: float | None = None  # the period's spend when refused, for the retry's decision


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """A booked decision, complete: its coordination row, events and audit entry."""

    coordination: CoordinationRecord
    events: list[EventDraft]
    audit: AuditRecord | None = None  # the request's entry, written in the same transaction


@dataclass(slots=True)
class DecisionCharge:
    """What a decision books: its spend, where it is charged, and what it registers."""

    coordination_id: str
    service: str
    amount: float
    at: datetime
    budget: BudgetCharge | None
    emergency_workflow_id: str | None
    touches: Touches
    refusal: Refusal | None = field(default=None, init=False)


@dataclass(frozen=True, slots=True)
class Booking:
    """Step 1's result: each charge's refusal (None: booked) and the integration time."""

    refusals: list[Refusal | None]
    integration_ms: float


class _Statements:
    """The batch's statements for one dialect, built once so SQLAlchemy compiles them once.

    Rows go in as parameter lists (executemany), never as literal multi-row VALUES, which
    would make every batch size a new statement to compile.
    """

    def __init__(self, dialect: str) -> None:
        module: Any = postgresql if dialect == "postgresql" else sqlite
        self.lock_emergency = (
            select(
                Emergency.coordination_id,
                Emergency.spent,
                Emergency.max_budget_override,
                Emergency.deadline,
            )
            .where(Emergency.workflow_id == bindparam("workflow_id"), Emergency.status == "active")
            .order_by(Emergency.coordination_id)
            .with_for_update()
        )
        self.set_emergency_spent = (
            update(Emergency)
            .where(Emergency.coordination_id == bindparam("key"))
            .values(spent=bindparam("spent"))
        )
        budgets = module.insert(BudgetSpend)
        self.ensure_budget = budgets.on_conflict_do_nothing()
        self.charge_budget = budgets.on_conflict_do_update(
            index_elements=[BudgetSpend.service, BudgetSpend.period_start],
            set_={
                "spent": BudgetSpend.spent + budgets.excluded.spent,
                "decisions": BudgetSpend.decisions + budgets.excluded.decisions,
            },
            where=BudgetSpend.spent + budgets.excluded.spent <= bindparam("limit"),
        ).returning(BudgetSpend.spent)
        self.lock_budget = (
            select(BudgetSpend.spent)
            .where(
                BudgetSpend.service == bindparam("service"),
                BudgetSpend.period_start == bindparam("period_start"),
            )
            .with_for_update()
        )
        self.set_budget_spent = (
            update(BudgetSpend)
            .where(
                BudgetSpend.service == bindparam("key_service"),
                BudgetSpend.period_start == bindparam("key_start"),
            )
            .values(spent=bindparam("spent"), decisions=BudgetSpend.decisions + bindparam("n"))
        )
        streams = module.insert(ErrorStream)
        self.touch_streams = streams.on_conflict_do_update(
            index_elements=[ErrorStream.stream_id],
            set_={
                "last_seen": streams.excluded.last_seen,
                "sync_count": ErrorStream.sync_count + streams.excluded.sync_count,
            },
        )
        sessions = module.insert(MonitoringSession)
        self.touch_monitoring = sessions.on_conflict_do_update(
            index_elements=[MonitoringSession.session_id],
            set_={
                "last_seen": sessions.excluded.last_seen,
                "active": True,
                "touches": MonitoringSession.touches + sessions.excluded.touches,
            },
        )
        self.insert_coordinations = insert(Coordination)


STATEMENTS = {name: _Statements(name) for name in ("postgresql", "sqlite")}


def book_decisions(session: Session, charges: Sequence[DecisionCharge]) -> Booking:
    """Step 1: charge `charges` in order and register their streams and monitoring sessions.

    Statement by statement, on every backend and for every batch; on PostgreSQL the writer
    sends the usual batch in two round trips instead (store/decisions_pg.py).
    """
    connection = session.connection()
    statements = STATEMENTS[connection.dialect.name]
    _charge_emergencies(
        connection, statements, [c for c in charges if c.emergency_workflow_id is not None]
    )
    _charge_budgets(
        connection,
        statements,
        [c for c in charges if c.emergency_workflow_id is None and c.budget is not None],
    )
    accepted = [c for c in charges if c.refusal is None]
    started = time.perf_counter()
    streams, monitoring = stream_rows(accepted), monitoring_rows(accepted)
    if streams:
        connection.execute(statements.touch_streams, streams)
    if monitoring:
        connection.execute(statements.touch_monitoring, monitoring)
    return Booking([c.refusal for c in charges], elapsed_ms(started))


def write_decisions(session: Session, records: Sequence[DecisionRecord]) -> None:
    """Step 2: write the booked decisions' rows, events and audit entries."""
    if not records:
        return
    connection = session.connection()
    statements = STATEMENTS[connection.dialect.name]
    connection.execute(statements.insert_coordinations, [r.coordination.values() for r in records])
    for record in records:
        publish_many(session, record.events)
    audits = [r.audit for r in records if r.audit is not None]
    if audits:
        append_audit(session, audits)


def elapsed_ms(started: float) -> float:
    """Milliseconds since `started` (a perf_counter reading), to the microsecond."""
    return round((time.perf_counter() - started) * 1000, 3)


def _charge_emergencies(
    connection: Connection, statements: _Statements, charges: list[DecisionCharge]
) -> None:
    """Book each charge against its emergency's cap while the emergency is active."""
    if not charges:
        return
    live: dict[str, Any] = {}  # workflow id -> its locked emergency row
    spent: dict[str, float] = {}
    for workflow_id in sorted(
        {d.emergency_workflow_id for d in charges if d.emergency_workflow_id}
    ):
        row = connection.execute(statements.lock_emergency, {"workflow_id": workflow_id}).first()
        if row is not None:
            live[workflow_id], spent[workflow_id] = row, float(row.spent)
    for charge in charges:
        workflow_id = charge.emergency_workflow_id or ""
        row = live.get(workflow_id)
        if row is None or row.deadline <= charge.at:
            charge.refusal = Refusal(
                RefusalKind.emergency, f"the emergency {workflow_id} has ended"
            )
        elif spent[workflow_id] + charge.amount > row.max_budget_override:
            cap = row.max_budget_override
            charge.refusal = Refusal(
                RefusalKind.emergency, f"the emergency's cap of {cap:g} is spent"
            )
        else:
            spent[workflow_id] += charge.amount
    changed = [
        {"key": row.coordination_id, "spent": spent[workflow_id]}
        for workflow_id, row in live.items()
        if spent[workflow_id] != float(row.spent)
    ]
    if changed:
        connection.execute(statements.set_emergency_spent, changed)


@dataclass
class BudgetGroup:
    """The charges of one batch charging one service's budget for one period."""

    service: str
    start: datetime
    period: str
    charges: list[DecisionCharge]

    @property
    def limit(self) -> float:
        return min(d.budget.limit for d in self.charges if d.budget is not None)

    @property
    def total(self) -> float:
        return sum(d.amount for d in self.charges)

    def charge_params(self) -> dict[str, Any]:
        """Parameters of the conditional upsert booking the whole group at once."""
        return {
            "service": self.service,
            "period_start": self.start,
            "period": self.period,
            "spent": self.total,
            "decisions": len(self.charges),
            "limit": self.limit,
        }


def budget_groups(charges: list[DecisionCharge]) -> list[BudgetGroup]:
    """The charges grouped by budget row, in key order (one lock order: no deadlock)."""
    groups: dict[tuple[str, datetime], BudgetGroup] = {}
    for charge in charges:
        assert charge.budget is not None
        key = (charge.service, period_start(charge.budget.period, charge.at))
        group = groups.setdefault(key, BudgetGroup(*key, charge.budget.period.value, []))
        group.charges.append(charge)
    return [groups[key] for key in sorted(groups)]


def _charge_budgets(
    connection: Connection, statements: _Statements, charges: list[DecisionCharge]
) -> None:
    """Book each charge against its service's budget for the period, refusing past the limit."""
    changed = []
    for group in budget_groups(charges):
        # Usually the whole batch fits: one conditional upsert books it (a prefix of a batch
        # that fits fits too, so that is the same as checking each decision in turn).
        booked_all = (
            group.total <= group.limit
            and connection.execute(statements.charge_budget, group.charge_params()).first()
        )
        if booked_all:
            continue
        # Not all of it fits: lock the row and take the decisions in arrival order.
        service, start = group.service, group.start
        connection.execute(
            statements.ensure_budget,
            {"service": service, "period_start": start, "period": group.period}
            | {"spent": 0.0, "decisions": 0},
        )
        spent = float(
            connection.execute(
                statements.lock_budget, {"service": service, "period_start": start}
            ).scalar_one()
        )
        booked = 0
        for charge in group.charges:
            assert charge.budget is not None
            if spent + charge.amount <= charge.budget.limit:
                spent += charge.amount
                booked += 1
            else:
                limit, period = charge.budget.limit, charge.budget.period.value
                detail = f"{period} budget of {limit:g} for {service!r} is spent"
                charge.refusal = Refusal(RefusalKind.budget, detail, spent)
        if booked:
            changed.append(
                {"key_service": service, "key_start": start, "spent": spent, "n": booked}
            )
    if changed:
        connection.execute(statements.set_budget_spent, changed)


def stream_rows(charges: list[DecisionCharge]) -> list[dict[str, Any]]:
    """One upsert row per error stream the batch registers, counting its touches."""
    counts: dict[str, tuple[str, int, datetime]] = {}
    for charge in charges:
        stream = charge.touches.stream_id
        if stream is not None:
            _, seen, _ = counts.get(stream, (charge.service, 0, charge.at))
            counts[stream] = (charge.service, seen + 1, charge.at)
    return [
        {
            "stream_id": stream,
            "service": service,
            "status": "registered",
            "error_count": 0,
            "first_seen": at,
            "last_seen": at,
            "sync_count": seen,
            "cascading_services": [],
        }
        for stream, (service, seen, at) in sorted(counts.items())
    ]


def monitoring_rows(charges: list[DecisionCharge]) -> list[dict[str, Any]]:
    """One upsert row per monitoring session the batch records or refreshes."""
    counts: dict[str, tuple[str, str | None, int, datetime]] = {}
    for charge in charges:
        session_id = charge.touches.monitoring_session_id
        if session_id is not None:
            _, _, seen, _ = counts.get(session_id, (charge.service, None, 0, charge.at))
            counts[session_id] = (charge.service, charge.touches.stream_id, seen + 1, charge.at)
    return [
        {
            "session_id": session_id,
            "service": service,
            "stream_id": stream,
            "active": True,
            "touches": seen,
            "started_at": at,
            "last_seen": at,
        }
        for session_id, (service, stream, seen, at) in sorted(counts.items())
    ]
