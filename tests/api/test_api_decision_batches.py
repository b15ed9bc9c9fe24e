"""Group commit of decisions: a batch books, refuses and touches exactly as one-by-one would."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from api.coordinator import routing_request
from api.decision_writer import DecisionWriter, PendingDecision, completed
from api.schemas.coordination import CoordinationRequest
from routing.decide import decide
from routing.types import BudgetPeriod, RoutingSnapshot
from store.audit import AuditRecord, append_entry, verify_chain
from store.base import utcnow
from store.coordinations import CoordinationKind, CoordinationRecord
from store.db import transaction
from store.decisions import (
    BudgetCharge,
    DecisionCharge,
    DecisionRecord,
    Recorded,
    Touches,
    book_decisions,
    write_decisions,
)
from store.decisions_pg import APPLICATION_NAME, BatchConnection
from store.events import event_draft
from store.models import (
    AuditEntry,
    BudgetSpend,
    Coordination,
    Emergency,
    ErrorStream,
    Event,
    MonitoringSession,
)
from store.snapshot import load_snapshot

LIMIT = 0.10
STRIPE = CoordinationRequest.model_validate(
    {"serviceName": "stripe", "operation": "payment_processing"}
)


def record_decisions(session: Session, decisions: list[PendingDecision]) -> list[Recorded]:
    """Both steps of a batch in the session's transaction, as the writer takes them."""
    booking = book_decisions(session, [d.charge for d in decisions])
    write_decisions(session, completed(decisions, booking))
    return [Recorded(refusal) for refusal in booking.refusals]


class Answer:
    """Builds a test decision's record: a row and one event, failing on demand."""

    def __init__(self, build: Callable[[float], DecisionRecord]) -> None:
        self.build = build

    def record(self, integration_ms: float) -> DecisionRecord:
        return self.build(integration_ms)


def draft(
    snapshot: RoutingSnapshot,
    n: int,
    *,
    amount: float = 0.029,
    limit: float = LIMIT,
    stream: str | None = None,
    monitoring: str | None = None,
    emergency: str | None = None,
    fail: bool = False,
    audited: bool = False,
) -> PendingDecision:
    """A stripe decision of `amount` whose completion writes a row and one event."""
    now = utcnow()
    decision = decide(routing_request(STRIPE), snapshot, now)
    coordination_id = f"coordination_{n}"

    def complete(integration_ms: float) -> DecisionRecord:
        if fail:
            raise ValueError("this decision cannot be written")
        row = CoordinationRecord.of_decision(
            decision,
            coordination_id=coordination_id,
            kind=CoordinationKind.standard,
            service="stripe",
            operation="payment_processing",
            response={"integrationMs": integration_ms},
            created_at=now,
            request_id=None,
            backend_integrated=stream is not None,
            error_stream_id=stream,
            emergency_workflow_id=emergency,
            coordination_ms=1.0,
        )
        event = event_draft(
            "enhanced_coordination_completed",
            {"coordinationId": coordination_id},
            service="stripe",
            coordination_id=coordination_id,
        )
        entry = audit_record(f"req_{n}") if audited else None
        return DecisionRecord(replace(row, estimated_cost=amount), [event], entry)

    charge = DecisionCharge(
        coordination_id=coordination_id,
        service="stripe",
        amount=amount,
        at=now,
        budget=BudgetCharge(BudgetPeriod.daily, limit),
        emergency_workflow_id=emergency,
        touches=Touches(stream_id=stream, monitoring_session_id=monitoring),
    )
    return PendingDecision(charge, Answer(complete))


def audit_record(request_id: str) -> AuditRecord:
    return AuditRecord(
        principal="bench",
        role="operator",
        action="POST execute-coordination",
        resource="stripe",
        request_id=request_id,
        outcome="200",
        detail={"coordinationId": request_id, "n": 1.5},
    )


@pytest.fixture
def snapshot(clean_store: Engine, sessions: sessionmaker[Session]) -> RoutingSnapshot:
    """The default catalog as the API would see it."""
    with sessions() as session:
        return load_snapshot(session, utcnow(), version=1)


def spend(sessions: sessionmaker[Session]) -> tuple[float, int]:
    with sessions() as session:
        row = session.execute(select(BudgetSpend.spent, BudgetSpend.decisions)).one()
        return float(row.spent), int(row.decisions)


def count(sessions: sessionmaker[Session], model: type[Any]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_a_batch_over_the_budget_books_in_arrival_order(
    clean_store: Engine, sessions: sessionmaker[Session], snapshot: RoutingSnapshot
) -> None:
    # 0.03 each against 0.10: the first three fit, the fourth and fifth are refused.
    drafts = [draft(snapshot, n, amount=0.03) for n in range(5)]
    with transaction(sessions) as session:
        results = record_decisions(session, drafts)

    assert [r.refusal is None for r in results] == [True, True, True, False, False]
    refused = results[3].refusal
    assert refused is not None and refused.kind == "budget"
    assert refused.spent == pytest.approx(0.09)
    assert "daily budget of 0.1 for 'stripe' is spent" in refused.detail
    assert spend(sessions) == (pytest.approx(0.09), 3)
    with sessions() as session:
        ids = set(session.scalars(select(Coordination.coordination_id)))
        events = set(session.scalars(select(Event.coordination_id)))
    assert ids == events == {"coordination_0", "coordination_1", "coordination_2"}


def test_a_batch_that_fits_is_booked_whole_on_an_existing_row(
    clean_store: Engine, sessions: sessionmaker[Session], snapshot: RoutingSnapshot
) -> None:
    for first in range(0, 6, 3):  # the second batch finds the period's row already there
        with transaction(sessions) as session:
            batch = [draft(snapshot, first + n, amount=0.01) for n in range(3)]
            assert all(r.refusal is None for r in record_decisions(session, batch))
    assert spend(sessions) == (pytest.approx(0.06), 6)
    assert count(sessions, Coordination) == 6


def test_streams_and_monitoring_sessions_count_every_touch_of_a_batch(
    clean_store: Engine, sessions: sessionmaker[Session], snapshot: RoutingSnapshot
) -> None:
    drafts = [
        draft(snapshot, 0, amount=0.0, stream="s1", monitoring="m1"),
        draft(snapshot, 1, amount=0.0, stream="s1", monitoring="m1"),
        draft(snapshot, 2, amount=0.0, stream="s2"),
    ]
    with transaction(sessions) as session:
        record_decisions(session, drafts)
    with transaction(sessions) as session:
        record_decisions(session, [draft(snapshot, 3, amount=0.0, stream="s1")])

    with sessions() as session:
        streams = {s.stream_id: s.sync_count for s in session.scalars(select(ErrorStream))}
        monitoring = session.scalars(select(MonitoringSession)).one()
    assert streams == {"s1": 3, "s2": 1}
    assert (monitoring.session_id, monitoring.touches, monitoring.active) == ("m1", 2, True)


def test_an_emergency_books_up_to_its_cap_and_an_ended_one_refuses(
    clean_store: Engine, sessions: sessionmaker[Session], snapshot: RoutingSnapshot
) -> None:
    now = utcnow()
    with transaction(sessions) as session:
        for service, status in (("stripe", "active"), ("maps", "ended")):
            session.add(
                Emergency(
                    coordination_id=f"emergency_{service}",
                    workflow_id=f"emergency:{service}",
                    service=service,
                    emergency_reason="r",
                    business_justification="j",
                    max_budget_override=0.05,
                    status=status,
                    deadline=now + timedelta(minutes=30),
                )
            )
    drafts = [draft(snapshot, n, amount=0.02, emergency="emergency:stripe") for n in range(3)]
    drafts.append(draft(snapshot, 3, amount=0.01, emergency="emergency:maps"))
    with transaction(sessions) as session:
        results = record_decisions(session, drafts)

    kinds = [r.refusal.kind if r.refusal else None for r in results]
    assert kinds == [None, None, "emergency", "emergency"]
    assert results[2].refusal and "cap of 0.05 is spent" in results[2].refusal.detail
    assert results[3].refusal and "has ended" in results[3].refusal.detail
    with sessions() as session:
        assert session.scalar(
            select(Emergency.spent).where(Emergency.workflow_id == "emergency:stripe")
        ) == pytest.approx(0.04)
        # Emergency decisions are charged to the emergency, not to the service's budget.
        assert session.scalar(select(func.count()).select_from(BudgetSpend)) == 0


WRITER_KINDS = ["step_by_step", "two_round_trips"]


@pytest.fixture(params=WRITER_KINDS)
def make_writer(
    request: pytest.FixtureRequest, engine: Engine, sessions: sessionmaker[Session]
) -> Callable[[], DecisionWriter]:
    """Writers of the kind under test: statement by statement, or the PostgreSQL batch."""
    if request.param == "step_by_step":
        return lambda: DecisionWriter(sessions)
    if engine.dialect.name != "postgresql":
        pytest.skip("the two-round-trip batch is PostgreSQL's")
    conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return lambda: DecisionWriter(sessions, connection=BatchConnection(conninfo))


async def test_the_writer_batches_concurrent_decisions(
    clean_store: Engine,
    sessions: sessionmaker[Session],
    snapshot: RoutingSnapshot,
    make_writer: Callable[[], DecisionWriter],
) -> None:
    writer = make_writer()
    try:
        drafts = [
            draft(snapshot, n, amount=0.001, limit=1000.0, stream="s1", monitoring="m1")
            for n in range(60)
        ]
        results = await asyncio.gather(*(writer.record(d) for d in drafts))
    finally:
        await writer.stop()
    assert all(r.refusal is None for r in results)
    assert count(sessions, Coordination) == 60
    assert writer.decisions == 60
    assert writer.batches < 60  # decisions that arrive together share a transaction
    assert spend(sessions) == (pytest.approx(0.06), 60)
    with sessions() as session:
        stream = session.scalars(select(ErrorStream)).one()
        monitoring = session.scalars(select(MonitoringSession)).one()
        events = list(session.scalars(select(Event.id).order_by(Event.id)))
        rows = session.scalars(select(Coordination)).all()
    assert (stream.sync_count, monitoring.touches) == (60, 60)
    assert events == list(range(events[0], events[0] + 60))  # one each, no gap
    # The stored answer carries the measured integration time of its own batch.
    assert all(row.response["integrationMs"] > 0 for row in rows)


async def test_one_bad_decision_does_not_fail_its_batch(
    clean_store: Engine,
    sessions: sessionmaker[Session],
    snapshot: RoutingSnapshot,
    make_writer: Callable[[], DecisionWriter],
) -> None:
    writer = make_writer()
    try:
        drafts = [draft(snapshot, n, amount=0.01, fail=n == 2) for n in range(5)]
        results = await asyncio.gather(*(writer.record(d) for d in drafts), return_exceptions=True)
        # The writer goes on: what the failed batch had booked was rolled back, not kept.
        after = await writer.record(draft(snapshot, 5, amount=0.01))
    finally:
        await writer.stop()
    assert [isinstance(r, ValueError) for r in results] == [False, False, True, False, False]
    assert after.refusal is None
    assert count(sessions, Coordination) == 5
    assert spend(sessions) == (pytest.approx(0.05), 5)


async def test_two_writers_on_one_budget_never_overspend(
    clean_store: Engine,
    sessions: sessionmaker[Session],
    snapshot: RoutingSnapshot,
    make_writer: Callable[[], DecisionWriter],
) -> None:
    # Two API replicas: two writers charging the same row, each deciding on its own.
    writers = [make_writer(), make_writer()]
    try:
        drafts = [draft(snapshot, n, amount=0.003) for n in range(80)]
        results = await asyncio.gather(*(writers[n % 2].record(d) for n, d in enumerate(drafts)))
    finally:
        for writer in writers:
            await writer.stop()
    booked = sum(1 for r in results if r.refusal is None)
    spent, decisions = spend(sessions)
    assert booked == decisions == count(sessions, Coordination) == 33  # floor(0.10 / 0.003)
    assert spent == pytest.approx(booked * 0.003) and spent <= LIMIT


async def test_concurrent_writers_keep_the_audit_chain_and_the_event_order(
    clean_store: Engine,
    sessions: sessionmaker[Session],
    snapshot: RoutingSnapshot,
    make_writer: Callable[[], DecisionWriter],
) -> None:
    writers = [make_writer(), make_writer()]
    try:
        drafts = [draft(snapshot, n, amount=0.001, limit=1000.0, audited=True) for n in range(60)]
        await asyncio.gather(*(writers[n % 2].record(d) for n, d in enumerate(drafts)))
        # Another writer of the audit log (a route's own entry) moves the head between batches.
        append_entry(sessions, audit_record("between"))
        await asyncio.gather(
            *(
                writers[0].record(draft(snapshot, 60 + n, audited=True, amount=0.001, limit=1000.0))
                for n in range(5)
            )
        )
    finally:
        for writer in writers:
            await writer.stop()
    with sessions() as session:
        report = verify_chain(session)
        entries = session.scalars(select(AuditEntry.request_id)).all()
        events = list(session.scalars(select(Event.id).order_by(Event.id)))
    assert report.ok and report.checked == 66
    assert sorted(entries) == sorted([f"req_{n}" for n in range(65)] + ["between"])
    assert events == list(range(events[0], events[0] + 65))


def writer_backends(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.scalars(
                text(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE application_name = :name AND datname = current_database()"
                ),
                {"name": APPLICATION_NAME},
            )
        )


async def test_a_broken_connection_is_replaced_without_losing_the_batch(
    clean_store: Engine,
    engine: Engine,
    sessions: sessionmaker[Session],
    snapshot: RoutingSnapshot,
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("the writer's own connection is PostgreSQL's")
    conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = BatchConnection(conninfo)
    writer = DecisionWriter(sessions, connection=connection)
    try:
        assert (await writer.record(draft(snapshot, 0, amount=0.01))).refusal is None
        first = writer_backends(engine)
        with engine.begin() as admin:  # the server drops the writer's connection
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first[0]})
        assert (await writer.record(draft(snapshot, 1, amount=0.01))).refusal is None
        second = writer_backends(engine)
        assert len(first) == len(second) == 1 and first != second
    finally:
        await writer.stop()
    assert count(sessions, Coordination) == 2
    assert spend(sessions) == (pytest.approx(0.02), 2)
