"""Workflow invariants: every recovery and emergency run ended correctly, each of its steps left
exactly one record in the store, and routing is held only by running workflows.

The workflows' own results (phase, error count, timeline) are compared with the ledger, the
outbox and the stream, emergency and override rows written by their activities.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from datetime import datetime

from fault_load import LoadLog
from fault_report import Verdict
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus

from store.models import (
    Coordination,
    Emergency,
    ErrorEvent,
    ErrorStream,
    Event,
    IncidentRow,
    RoutingOverrideRow,
)
from workflows.emergency_types import EmergencyStatus
from workflows.recovery_types import TERMINAL_PHASES, RecoveryPhase, RecoveryStatus

RECOVERY = "ErrorRecoveryWorkflow"
EMERGENCY = "EmergencyOverrideWorkflow"
INCIDENT = "IncidentWorkflow"
TERMINAL_EVENT = {
    RecoveryPhase.resolved: "recovery_resolved",
    RecoveryPhase.cancelled: "recovery_cancelled",
    RecoveryPhase.unresolved: "recovery_unresolved",
}


def event_counts(session: Session) -> Counter[tuple[str, str | None]]:
    """(event type, coordination id) -> count over the whole outbox."""
    rows = session.execute(select(Event.event_type, Event.coordination_id)).all()
    return Counter((t, c) for t, c in rows)


async def executions(client: Client, workflow_type: str) -> list[WorkflowExecution]:
    """Every run (open or closed) of one workflow type."""
    query = f"WorkflowType = '{workflow_type}'"
    return [execution async for execution in client.list_workflows(query)]


async def wait_workflows_ended(client: Client, within: float) -> float:
    """Seconds until no recovery, emergency or incident is running; fails after `within`
    seconds."""
    started = time.monotonic()
    running: list[str] = []
    while time.monotonic() - started < within:
        running = [
            e.id
            for kind in (RECOVERY, EMERGENCY, INCIDENT)
            for e in await executions(client, kind)
            if e.status == WorkflowExecutionStatus.RUNNING
        ]
        if not running:
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    raise AssertionError(f"still running after {within:g} s: {sorted(running)[:10]}")


def _notes(status: RecoveryStatus, step: str) -> list[str]:
    return [s.detail for s in status.timeline if s.step == step]


async def check_recoveries(
    client: Client, sessions: sessionmaker[Session], log: LoadLog, verdict: Verdict
) -> None:
    """Every recovery run ended, each error is recorded once and every step has its event."""
    runs: dict[str, list[RecoveryStatus]] = defaultdict(list)
    for execution in await executions(client, RECOVERY):
        verdict.expect(
            execution.status == WorkflowExecutionStatus.COMPLETED,
            f"recovery {execution.id} run {execution.run_id} is {execution.status}",
        )
        if execution.status != WorkflowExecutionStatus.COMPLETED:
            continue
        handle = client.get_workflow_handle(
            execution.id, run_id=execution.run_id, result_type=RecoveryStatus
        )
        status = await handle.result(follow_runs=False)
        runs[execution.id].append(status)
        verdict.expect(
            status.phase in TERMINAL_PHASES, f"recovery {execution.id} ended {status.phase}"
        )
        with sessions() as session:
            keys = session.scalars(
                select(ErrorEvent.idempotency_key).where(
                    ErrorEvent.idempotency_key.like(f"{execution.id}/{execution.run_id}/error/%")
                )
            ).all()
        numbers = sorted(int(key.rsplit("/", 1)[1]) for key in keys)
        verdict.expect(
            numbers == list(range(1, status.error_count + 1)),
            f"recovery {execution.id} run {execution.run_id}: {status.error_count} errors, "
            f"error events numbered {numbers}",
        )
    with sessions() as session:
        for workflow_id, statuses in runs.items():
            _check_recovery_records(session, workflow_id, statuses, verdict)
        accepted = log.accepted("error")
        coordinations = Counter(
            session.scalars(
                select(Coordination.coordination_id).where(Coordination.kind == "backend_error")
            ).all()
        )
    lost = 0
    for call in accepted:
        answer = (call.data or {}).get("backendAgentResponse", {})
        found = coordinations[answer.get("coordinationId")]
        lost += found == 0
        verdict.expect(
            found == 1,
            f"accepted error {call.key}: its coordination {answer.get('coordinationId')} "
            f"(error #{answer.get('errorCount')} of {answer.get('workflowId')}) stored {found}x",
        )
        verdict.expect(
            answer.get("workflowId") in runs, f"accepted error {call.key}: no ended recovery"
        )
    _check_error_keys(log, runs, verdict)
    verdict.figures["recoveries"] = {
        "workflows": len(runs),
        "runs": sum(len(s) for s in runs.values()),
        "errors_recorded": sum(s.error_count for ss in runs.values() for s in ss),
        "accepted_reports": len(accepted),
        "lost": lost,
        "phases": dict(Counter(s.phase.value for ss in runs.values() for s in ss)),
    }


def _check_error_keys(
    log: LoadLog, runs: dict[str, list[RecoveryStatus]], verdict: Verdict
) -> None:
    """Errors recorded per stream lie between the distinct keys accepted and those sent."""
    sent: dict[str, set[str]] = defaultdict(set)
    accepted: dict[str, set[str]] = defaultdict(set)
    for call in log.of("error"):
        workflow_id = f"recovery:{call.body['serviceName']}:{call.body['streamId']}"
        sent[workflow_id].add(call.key)
        if call.accepted:
            accepted[workflow_id].add(call.key)
    duplicated = 0
    for workflow_id, keys in sent.items():
        recorded = sum(s.error_count for s in runs.get(workflow_id, []))
        duplicated += max(0, recorded - len(keys))
        verdict.expect(
            len(accepted[workflow_id]) <= recorded <= len(keys),
            f"{workflow_id}: {recorded} errors recorded for {len(accepted[workflow_id])} "
            f"accepted and {len(keys)} distinct reports sent",
        )
    verdict.figures["error_reports_duplicated"] = duplicated


def _check_recovery_records(
    session: Session, workflow_id: str, statuses: list[RecoveryStatus], verdict: Verdict
) -> None:
    """The outbox and the stream row agree with what the workflow's runs did."""
    events = Counter(
        session.scalars(select(Event.event_type).where(Event.workflow_id == workflow_id)).all()
    )
    errors = sum(s.error_count for s in statuses)
    no_route = sum(len(_notes(s, "no_route")) for s in statuses)
    stages = sum(
        1 for s in statuses for d in _notes(s, "stage_restored") if not d.startswith("100%")
    )
    wanted = {
        "recovery_started": len(statuses),
        "recovery_route_applied": errors - no_route,
        "recovery_no_route": no_route,
        "recovery_stage_restored": stages,
        "recovery_restore_aborted": sum(len(_notes(s, "restore_aborted")) for s in statuses),
        "recovery_escalated": sum(len(_notes(s, "escalated")) for s in statuses),
    }
    for phase, event_type in TERMINAL_EVENT.items():
        wanted[event_type] = sum(1 for s in statuses if s.phase is phase)
    for event_type, count in wanted.items():
        verdict.expect(
            events[event_type] == count,
            f"{workflow_id}: {events[event_type]} {event_type} events, its runs did {count}",
        )
    stream_id = statuses[0].stream_id
    stream = session.get(ErrorStream, stream_id)
    verdict.expect(
        stream is not None and stream.error_count == errors,
        f"{workflow_id}: stream counts {stream.error_count if stream else None}, runs {errors}",
    )
    last = max(statuses, key=lambda s: s.started_at or datetime.min)
    verdict.expect(
        stream is not None and stream.status == last.phase.value,
        f"{workflow_id}: stream {stream.status if stream else None}, last run {last.phase}",
    )
    backend = session.scalars(
        select(Coordination.coordination_id).where(
            Coordination.kind == "backend_error", Coordination.error_stream_id == stream_id
        )
    ).all()
    verdict.expect(
        len(backend) == errors - no_route,
        f"{workflow_id}: {len(backend)} failover coordinations for {errors - no_route} routes",
    )


async def check_emergencies(
    client: Client, sessions: sessionmaker[Session], log: LoadLog, verdict: Verdict
) -> None:
    """Every emergency ended in the workflow and in the store alike, announced once each way."""
    ended: dict[str, EmergencyStatus] = {}
    for execution in await executions(client, EMERGENCY):
        if execution.status == WorkflowExecutionStatus.CONTINUED_AS_NEW:
            continue
        verdict.expect(
            execution.status == WorkflowExecutionStatus.COMPLETED,
            f"emergency {execution.id} run {execution.run_id} is {execution.status}",
        )
        if execution.status == WorkflowExecutionStatus.COMPLETED:
            handle = client.get_workflow_handle(
                execution.id, run_id=execution.run_id, result_type=EmergencyStatus
            )
            status = await handle.result(follow_runs=False)
            ended[status.coordination_id] = status
    with sessions() as session:
        rows = {e.coordination_id: e for e in session.scalars(select(Emergency))}
        events = event_counts(session)
        kinds = Counter(
            session.scalars(
                select(Coordination.coordination_id).where(Coordination.kind == "emergency")
            ).all()
        )
    for coordination_id, status in ended.items():
        row = rows.get(coordination_id)
        verdict.expect(
            row is not None
            and row.status == "ended"
            and status.end_reason is not None
            and row.end_reason == status.end_reason.value,
            f"emergency {coordination_id}: workflow ended {status.end_reason}, store "
            f"{(row.status, row.end_reason) if row else None}",
        )
    for coordination_id in rows:
        verdict.expect(
            coordination_id in ended, f"emergency {coordination_id} has no ended workflow"
        )
        for event_type in ("emergency_mode_activated", "emergency_mode_ended"):
            count = events[(event_type, coordination_id)]
            verdict.expect(count == 1, f"emergency {coordination_id}: {count} {event_type}")
        verdict.expect(
            kinds[coordination_id] == 1,
            f"emergency {coordination_id}: {kinds[coordination_id]} activation coordinations",
        )
    accepted = log.accepted("emergency")
    for call in accepted:
        coordination_id = (call.data or {}).get("emergencyStatus", {}).get("coordinationId")
        verdict.expect(coordination_id in rows, f"accepted emergency {coordination_id} not stored")
    verdict.figures["emergencies"] = {
        "accepted": len(accepted),
        "ended": len(ended),
        "end_reasons": dict(
            Counter(s.end_reason.value for s in ended.values() if s.end_reason is not None)
        ),
    }


async def check_overrides(
    client: Client, sessions: sessionmaker[Session], verdict: Verdict
) -> None:
    """Every override and active emergency in the store belongs to a running workflow.

    The store is read first: a workflow that still runs then cannot have been missed, and
    the read transaction is over before Temporal is asked (SQLite writers wait for it).
    """
    with sessions() as session:
        holders = [
            *session.scalars(select(RoutingOverrideRow.workflow_id)),
            *session.scalars(select(Emergency.workflow_id).where(Emergency.status == "active")),
        ]
    running = {
        e.id
        for kind in (RECOVERY, EMERGENCY)
        for e in await executions(client, kind)
        if e.status == WorkflowExecutionStatus.RUNNING
    }
    for workflow_id in holders:
        verdict.expect(
            workflow_id in running, f"{workflow_id} holds routing but its workflow is not running"
        )


async def check_incidents(
    client: Client, sessions: sessionmaker[Session], log: LoadLog, verdict: Verdict
) -> None:
    """Every accepted error's stream is a member of the incident its answer named, each
    stream once; every incident ended because its members did, its row says so."""
    with sessions() as session:
        rows = {row.incident_id: row for row in session.scalars(select(IncidentRow))}
    members: dict[str, Counter[str]] = {
        incident_id: Counter(m["stream_id"] for m in row.members)
        for incident_id, row in rows.items()
    }
    lost = duplicated = 0
    for call in log.accepted("error"):
        agent = (call.data or {}).get("backendAgentResponse", {})
        incident_id, stream = agent.get("incidentId"), call.body.get("streamId")
        if incident_id is None or members.get(incident_id, Counter())[stream] == 0:
            lost += 1
            verdict.problems.append(f"error of {stream} not a member of incident {incident_id}")
    for incident_id, counts in members.items():
        for stream, count in counts.items():
            if count > 1:
                duplicated += 1
                verdict.problems.append(f"{stream} is {count} members of {incident_id}")
    for execution in await executions(client, INCIDENT):
        verdict.expect(
            execution.status
            in (WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.CONTINUED_AS_NEW),
            f"incident {execution.id} run {execution.run_id} is {execution.status}",
        )
    for row in rows.values():
        verdict.expect(row.status == "ended", f"incident {row.incident_id} is still {row.status}")
    verdict.figures["incidents"] = {
        "incidents": len(rows),
        "members": sum(len(c) for c in members.values()),
        "lost": lost,
        "duplicated": duplicated,
    }
