"""Recording many routing decisions in one transaction (the API's group commit).

One batch costs a fixed handful of statements whatever its size: the budget rows it charges
are locked once (in key order, so concurrent writers never deadlock), every decision is
checked against them in arrival order, and rows, stream touches, monitoring touches and events
go in as multi-row statements. A decision the store refuses (its budget or its emergency's cap
is spent) is left out and reported back, so its request can decide again. The requests' audit
entries are appended in the same transaction, so an answered decision is an audited one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from routing.budget import period_start
from routing.types import BudgetPeriod
from store.audit import AuditRecord
from store.audit import append as append_audit
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


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the store refused a decision the snapshot allowed."""

    kind: str  # "budget" | "emergency"
    detail: str
    spent: float | None = None  # the period's spend when refused, for the retry's decision


@dataclass(frozen=True, slots=True)
class Completed:
    """A decision ready to write: its coordination row, events and audit entry."""

    row: dict[str, Any]  # coordinations column values
    events: list[EventDraft]
    audit: AuditRecord | None = None  # the request's entry, written in the same transaction


# Builds the completed decision once the batch's integration time is known, so the stored
# answer carries the measured figure.
Completer = Callable[[float], Completed]


@dataclass(slots=True)
class DecisionDraft:
    """A decision waiting for its batch."""

    coordination_id: str
    service: str
    amount: float
    at: datetime
    budget: BudgetCharge | None
    emergency_workflow_id: str | None
    touches: Touches
    complete: Completer
    refusal: Refusal | None = field(default=None, init=False)


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


def record_decisions(session: Session, drafts: Sequence[DecisionDraft]) -> list[Recorded]:
    """Charge, record and publish `drafts` in the session's transaction, in order.

    Statement by statement, on every backend and for every batch; on PostgreSQL the writer
    sends the usual batch in two round trips instead (store/decisions_pg.py).
    """
    connection = session.connection()
    statements = STATEMENTS[connection.dialect.name]
    _charge_emergencies(
        connection, statements, [d for d in drafts if d.emergency_workflow_id is not None]
    )
    _charge_budgets(
        connection,
        statements,
        [d for d in drafts if d.emergency_workflow_id is None and d.budget is not None],
    )
    accepted = [d for d in drafts if d.refusal is None]
    if not accepted:
        return [Recorded(d.refusal) for d in drafts]
    started = time.perf_counter()
    streams, monitoring = stream_rows(accepted), monitoring_rows(accepted)
    if streams:
        connection.execute(statements.touch_streams, streams)
    if monitoring:
        connection.execute(statements.touch_monitoring, monitoring)
    completed = complete_drafts(accepted, started)
    connection.execute(statements.insert_coordinations, [c.row for c in completed])
    for decision in completed:
        publish_many(session, decision.events)
    audits = [c.audit for c in completed if c.audit is not None]
    if audits:
        append_audit(session, audits)
    return [Recorded(d.refusal) for d in drafts]


def complete_drafts(drafts: list[DecisionDraft], integration_started: float) -> list[Completed]:
    """Each accepted draft's row, events and audit entry, with the measured integration time."""
    integration_ms = round((time.perf_counter() - integration_started) * 1000, 3)
    return [draft.complete(integration_ms) for draft in drafts]


def _charge_emergencies(
    connection: Connection, statements: _Statements, drafts: list[DecisionDraft]
) -> None:
    """Book each draft against its emergency's cap while the emergency is active."""
    if not drafts:
        return
    live: dict[str, Any] = {}  # workflow id -> its locked emergency row
    spent: dict[str, float] = {}
    for workflow_id in sorted({d.emergency_workflow_id for d in drafts if d.emergency_workflow_id}):
        row = connection.execute(statements.lock_emergency, {"workflow_id": workflow_id}).first()
        if row is not None:
            live[workflow_id], spent[workflow_id] = row, float(row.spent)
    for draft in drafts:
        workflow_id = draft.emergency_workflow_id or ""
        row = live.get(workflow_id)
        if row is None or row.deadline <= draft.at:
            draft.refusal = Refusal("emergency", f"the emergency {workflow_id} has ended")
        elif spent[workflow_id] + draft.amount > row.max_budget_override:
            cap = row.max_budget_override
            draft.refusal = Refusal("emergency", f"the emergency's cap of {cap:g} is spent")
        else:
            spent[workflow_id] += draft.amount
    changed = [
        {"key": row.coordination_id, "spent": spent[workflow_id]}
        for workflow_id, row in live.items()
        if spent[workflow_id] != float(row.spent)
    ]
    if changed:
        connection.execute(statements.set_emergency_spent, changed)


@dataclass
class BudgetGroup:
    """The drafts of one batch charging one service's budget for one period."""

    service: str
    start: datetime
    period: str
    drafts: list[DecisionDraft]

    @property
    def limit(self) -> float:
        return min(d.budget.limit for d in self.drafts if d.budget is not None)

    @property
    def total(self) -> float:
        return sum(d.amount for d in self.drafts)

    def charge_params(self) -> dict[str, Any]:
        """Parameters of the conditional upsert booking the whole group at once."""
        return {
            "service": self.service,
            "period_start": self.start,
            "period": self.period,
            "spent": self.total,
            "decisions": len(self.drafts),
            "limit": self.limit,
        }


def budget_groups(drafts: list[DecisionDraft]) -> list[BudgetGroup]:
    """The drafts grouped by budget row, in key order (one lock order: no deadlock)."""
    groups: dict[tuple[str, datetime], BudgetGroup] = {}
    for draft in drafts:
        assert draft.budget is not None
        key = (draft.service, period_start(draft.budget.period, draft.at))
        group = groups.setdefault(key, BudgetGroup(*key, draft.budget.period.value, []))
        group.drafts.append(draft)
    return [groups[key] for key in sorted(groups)]


def _charge_budgets(
    connection: Connection, statements: _Statements, drafts: list[DecisionDraft]
) -> None:
    """Book each draft against its service's budget for the period, refusing past the limit."""
    changed = []
    for group in budget_groups(drafts):
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
        for draft in group.drafts:
            assert draft.budget is not None
            if spent + draft.amount <= draft.budget.limit:
                spent += draft.amount
                booked += 1
            else:
                limit, period = draft.budget.limit, draft.budget.period.value
                detail = f"{period} budget of {limit:g} for {service!r} is spent"
                draft.refusal = Refusal("budget", detail, spent)
        if booked:
            changed.append(
                {"key_service": service, "key_start": start, "spent": spent, "n": booked}
            )
    if changed:
        connection.execute(statements.set_budget_spent, changed)


def stream_rows(drafts: list[DecisionDraft]) -> list[dict[str, Any]]:
    """One upsert row per error stream the batch registers, counting its touches."""
    counts: dict[str, tuple[str, int, datetime]] = {}
    for draft in drafts:
        stream = draft.touches.stream_id
        if stream is not None:
            _, seen, _ = counts.get(stream, (draft.service, 0, draft.at))
            counts[stream] = (draft.service, seen + 1, draft.at)
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


def monitoring_rows(drafts: list[DecisionDraft]) -> list[dict[str, Any]]:
    """One upsert row per monitoring session the batch records or refreshes."""
    counts: dict[str, tuple[str, str | None, int, datetime]] = {}
    for draft in drafts:
        session_id = draft.touches.monitoring_session_id
        if session_id is not None:
            _, _, seen, _ = counts.get(session_id, (draft.service, None, 0, draft.at))
            counts[session_id] = (draft.service, draft.touches.stream_id, seen + 1, draft.at)
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
