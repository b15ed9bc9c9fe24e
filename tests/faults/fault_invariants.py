"""What must hold after any fault: nothing accepted is lost, nothing is applied twice, every
workflow ended correctly, money and events add up.

Each check reads the store (directly, never through the outage proxy) and, for workflows, the
Temporal server (fault_workflows.py), and adds what it finds to a `Verdict`: problems, which
must be none, and figures for docs/RELIABILITY.md. The checks compare independent records of
the same facts — the load generator's answers, the workflows' own results, the ledger, the
outbox — so an effect lost or applied twice shows up as a disagreement.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import cast

from fault_load import LoadLog
from fault_report import Verdict
from fault_workflows import (
    check_emergencies,
    check_incidents,
    check_overrides,
    check_recoveries,
    event_counts,
)
from sqlalchemy import Table, func, inspect, select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from routing.budget import period_start
from routing.types import BudgetPeriod
from store.models import (
    AppliedEffect,
    BudgetSpend,
    Coordination,
    Emergency,
    Event,
    Outcome,
    ProviderService,
)

MONEY_TOLERANCE = 1e-6


def check_coordinations(session: Session, log: LoadLog, verdict: Verdict) -> None:
    """Every accepted execute-coordination is recorded once, with its completion event."""
    rows = session.execute(
        select(
            Coordination.coordination_id,
            Coordination.request_id,
            Coordination.service,
            Coordination.backend_integrated,
        ).where(Coordination.kind == "standard")
    ).all()
    by_id = {r.coordination_id: r for r in rows}
    per_request = Counter(r.request_id for r in rows)
    sent = {c.key: c for c in log.of("coordination")}
    accepted = log.accepted("coordination")
    answered_ids = Counter(str((c.data or {}).get("coordinationId")) for c in accepted)
    lost = 0
    for call in accepted:
        coordination_id = str((call.data or {}).get("coordinationId"))
        row = by_id.get(coordination_id)
        if row is None:
            lost += 1
            verdict.problems.append(f"accepted coordination {coordination_id} not in the store")
            continue
        verdict.expect(
            row.request_id == call.key and row.service == call.body["serviceName"],
            f"coordination {coordination_id} recorded for {row.request_id}/{row.service}, "
            f"answered to {call.key}",
        )
    duplicated = sum(n - 1 for key, n in per_request.items() if key in sent and n > 1)
    duplicated += sum(n - 1 for n in answered_ids.values() if n > 1)
    verdict.expect(duplicated == 0, f"{duplicated} coordinations recorded more than once")
    events = event_counts(session)
    for row in rows:
        verdict.expect(
            events[("enhanced_coordination_completed", row.coordination_id)] == 1,
            f"coordination {row.coordination_id} has "
            f"{events[('enhanced_coordination_completed', row.coordination_id)]} completion events",
        )
        if row.backend_integrated:
            verdict.expect(
                events[("backend_agent_sync_completed", row.coordination_id)] == 1,
                f"coordination {row.coordination_id} lacks its single sync event",
            )
    unanswered = sum(1 for key in per_request if key in sent and not sent[key].accepted)
    verdict.figures["coordinations"] = {
        "accepted": len(accepted),
        "lost": lost,
        "duplicated": duplicated,
        # Requests whose answer never arrived (or was a 503 after commit) but took effect.
        "recorded_without_success_answer": unanswered,
    }


def check_outcomes(
    session: Session, log: LoadLog, verdict: Verdict, subject: str = "fault-load"
) -> None:
    """Every accepted batch is stored once, whole; no batch (even an unanswered one) twice."""
    calls = log.of("outcomes")
    items = {o["coordinationId"]: call for call in calls for o in call.body["outcomes"]}
    stored = Counter(
        session.scalars(
            select(Outcome.coordination_id).where(Outcome.coordination_id.in_(list(items)))
        ).all()
        if items
        else []
    )
    ledger = set(
        session.scalars(
            select(AppliedEffect.key).where(AppliedEffect.key.like(f"outcomes/{subject}/%"))
        ).all()
    )
    lost = duplicated = partial = 0
    for call in calls:
        counts = [stored[o["coordinationId"]] for o in call.body["outcomes"]]
        duplicated += sum(n - 1 for n in counts if n > 1)
        if len(set(counts)) > 1:
            partial += 1
            verdict.problems.append(f"batch {call.key} stored in part: {counts}")
        if call.accepted:
            missing = counts.count(0)
            lost += missing
            verdict.expect(missing == 0, f"accepted batch {call.key}: {missing} outcomes missing")
            verdict.expect(
                f"outcomes/{subject}/{call.key}" in ledger,
                f"accepted batch {call.key} has no idempotency ledger row",
            )
    verdict.expect(duplicated == 0, f"{duplicated} outcomes stored more than once")
    verdict.figures["outcomes"] = {
        "batches": len(calls),
        "accepted": len(log.accepted("outcomes")),
        "replayed_answers": sum(1 for c in calls if c.replayed),
        "outcomes_stored": sum(stored.values()),
        "lost": lost,
        "duplicated": duplicated,
        "partial_batches": partial,
    }


def check_budget(session: Session, verdict: Verdict) -> None:
    """Budget spend rows equal the decisions recorded; emergency spend equals its decisions."""
    periods = {
        name: period
        for name, period in session.execute(
            select(ProviderService.name, ProviderService.budget_period)
        )
    }
    expected: dict[tuple[str, datetime], list[float]] = defaultdict(lambda: [0.0, 0.0])
    emergencies = session.scalars(select(Emergency).order_by(Emergency.started_at)).all()
    charged: dict[str, float] = defaultdict(float)
    for row in session.execute(
        select(
            Coordination.service,
            Coordination.estimated_cost,
            Coordination.created_at,
            Coordination.emergency_workflow_id,
        ).where(Coordination.kind == "standard")
    ):
        if row.emergency_workflow_id is not None:
            owner = _emergency_at(emergencies, row.emergency_workflow_id, row.created_at)
            verdict.expect(owner is not None, f"decision at {row.created_at} has no emergency")
            if owner is not None:
                charged[owner] += row.estimated_cost
            continue
        start = period_start(BudgetPeriod(periods[row.service]), row.created_at)
        expected[(row.service, start)][0] += row.estimated_cost
        expected[(row.service, start)][1] += 1
    spends = {(s.service, s.period_start): s for s in session.scalars(select(BudgetSpend))}
    for key in set(expected) | set(spends):
        want_spent, want_count = expected.get(key, [0.0, 0.0])
        spend = spends.get(key)
        spent, count = (spend.spent, spend.decisions) if spend is not None else (0.0, 0)
        verdict.expect(
            abs(spent - want_spent) <= MONEY_TOLERANCE * max(1.0, want_count)
            and count == want_count,
            f"budget {key[0]} {key[1]:%Y-%m-%d}: {count} decisions / {spent:.6f} booked, "
            f"{want_count:g} / {want_spent:.6f} recorded",
        )
    for emergency in emergencies:
        verdict.expect(
            abs(emergency.spent - charged[emergency.coordination_id]) <= MONEY_TOLERANCE * 1000,
            f"emergency {emergency.coordination_id}: {emergency.spent:.6f} spent, "
            f"{charged[emergency.coordination_id]:.6f} in its decisions",
        )
    verdict.figures["budget"] = {
        "periods": len(spends),
        "decisions": int(sum(count for _, count in expected.values())),
        "emergency_decisions_spend": round(sum(charged.values()), 6),
    }


def _emergency_at(emergencies: Iterable[Emergency], workflow_id: str, at: datetime) -> str | None:
    """The emergency of `workflow_id` in force at `at` (the latest started before it)."""
    owner = None
    for row in emergencies:
        if row.workflow_id == workflow_id and row.started_at <= at:
            owner = row.coordination_id
    return owner


def check_event_log(session: Session, verdict: Verdict) -> None:
    """Where the schema orders events by commit, their order numbers run without a gap.

    A `position` column, or ids drawn at commit from the `event_log_head` counter: either
    way a rolled-back transaction takes no number, so a gap is an event lost after commit.
    """
    inspector = inspect(session.connection())
    columns = {c["name"] for c in inspector.get_columns("events")}
    table = cast(Table, Event.__table__)
    if "position" in columns:
        order = table.c.position
    elif "event_log_head" in inspector.get_table_names():
        order = table.c.id
    else:
        verdict.figures["event_log"] = {"commit_ordered": False}
        return
    numbers = sorted(n for n in session.scalars(select(order)) if n is not None)
    total = session.scalar(select(func.count()).select_from(table)) or 0
    gaps = [(a, b) for a, b in itertools.pairwise(numbers) if b != a + 1]
    verdict.expect(not gaps, f"the event log has gaps at {gaps[:5]}")
    verdict.expect(len(numbers) == total, f"{total - len(numbers)} events without a position")
    verdict.figures["event_log"] = {
        "commit_ordered": order.name,
        "events": total,
        "gaps": len(gaps),
    }


async def check_all(
    client: Client,
    sessions: sessionmaker[Session],
    log: LoadLog,
    verdict: Verdict | None = None,
) -> Verdict:
    """Every invariant, once no workflow runs any more."""
    verdict = verdict or Verdict()
    with sessions() as session:
        check_coordinations(session, log, verdict)
        check_outcomes(session, log, verdict)
        check_budget(session, verdict)
        check_event_log(session, verdict)
    await check_overrides(client, sessions, verdict)
    await check_recoveries(client, sessions, log, verdict)
    await check_emergencies(client, sessions, log, verdict)
    await check_incidents(client, sessions, log, verdict)
    lost = sum(v.get("lost", 0) for v in verdict.figures.values() if isinstance(v, dict))
    duplicated = sum(
        v.get("duplicated", 0) for v in verdict.figures.values() if isinstance(v, dict)
    ) + int(verdict.figures.get("error_reports_duplicated", 0))
    verdict.figures["lost"] = lost
    verdict.figures["duplicated"] = duplicated
    return verdict
