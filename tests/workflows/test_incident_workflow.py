"""IncidentWorkflow on the time-skipping server with its real activities on the test store.

The member recoveries are stood in for by their error streams' rows (what the incident
polls); the recovery path's side is tested over HTTP in tests/api/test_api_incidents.py.
Re-record the replay histories with
`SWITCHYARD_RECORD_HISTORIES=1 .venv/bin/pytest tests/workflows/test_incident_workflow.py`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from test_emergency_support import HISTORIES, RECORD, register_search_attributes

from activities.incident import IncidentActivities
from store.base import utcnow
from store.db import transaction
from store.models import ErrorStream, Event, IncidentRow
from switchyard.settings import Settings
from temporal_client.incidents import IncidentEnded, join_incident
from workflows.incident import IncidentWorkflow
from workflows.incident_types import (
    IncidentInput,
    IncidentMember,
    IncidentPhase,
    IncidentStatus,
    JoinIncidentInput,
    ResolveIncident,
    incident_workflow_id,
)
from workflows.search import INCIDENT_ID

POLL_SECONDS = 30.0


@asynccontextmanager
async def incident_worker(
    client: Client, task_queue: str, sessions: sessionmaker[Session]
) -> AsyncIterator[Worker]:
    """A worker running IncidentWorkflow with its real activities on the test store."""
    activities = IncidentActivities(sessions, Settings())
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="incident-test") as executor:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[IncidentWorkflow],
            activities=activities.all(),
            activity_executor=executor,
        ) as worker:
            yield worker


def stream(sessions: sessionmaker[Session], stream_id: str, service: str, status: str) -> None:
    """Create or move a member's error stream (what the incident polls)."""
    with transaction(sessions) as session:
        row = session.get(ErrorStream, stream_id)
        if row is None:
            session.add(ErrorStream(stream_id=stream_id, service=service, status=status))
        else:
            row.status = status


def member(stream_id: str, service: str, revenue: float, **extra: Any) -> IncidentMember:
    values: dict[str, Any] = {
        "recovery_workflow_id": f"recovery:{service}:{stream_id}",
        "stream_id": stream_id,
        "service": service,
        "error_type": "performance_degradation",
        "severity": "high",
        "revenue_at_risk": revenue,
        "customer_impact": "moderate",
        "joined_at": utcnow(),
    }
    values.update(extra)
    return IncidentMember(**values)


async def start(
    client: Client, task_queue: str, **extra: Any
) -> WorkflowHandle[IncidentWorkflow, IncidentStatus]:
    incident_id = f"incident_test_{uuid.uuid4().hex[:10]}"
    await register_search_attributes(client)
    return await client.start_workflow(
        IncidentWorkflow.run,
        IncidentInput(incident_id=incident_id, poll_seconds=POLL_SECONDS, **extra),
        id=incident_workflow_id(incident_id),
        task_queue=task_queue,
    )


def row_of(sessions: sessionmaker[Session], incident_id: str) -> IncidentRow:
    with sessions() as session:
        row = session.get(IncidentRow, incident_id)
        assert row is not None
        return row


def events_of(sessions: sessionmaker[Session], workflow_id: str) -> list[str]:
    with sessions() as session:
        query = select(Event.event_type).where(Event.workflow_id == workflow_id).order_by(Event.id)
        return list(session.scalars(query))


async def record_history(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """Write the run's history to histories/{name}.json when recording is on."""
    if RECORD:
        history = await handle.fetch_history()
        (HISTORIES / f"{name}.json").write_text(history.to_json())


@pytest.fixture
def queue() -> str:
    return f"incident-test-{uuid.uuid4().hex[:8]}"


async def test_members_sum_once_and_the_incident_ends_with_its_last_recovery(
    time_env: WorkflowEnvironment, clean_store: Engine, sessions: sessionmaker[Session], queue: str
) -> None:
    client = time_env.client
    stream(sessions, "s_samsara", "samsara", "recovering")
    stream(sessions, "s_maps", "maps", "recovering")
    async with incident_worker(client, queue, sessions):
        handle = await start(client, queue)
        incident_id = (await handle.describe()).id.removeprefix("incident:")
        cascading = ["driver_notifications", "route_optimization"]
        first = await handle.execute_update(
            IncidentWorkflow.add_member,
            member("s_samsara", "samsara", 2000, cascading_services=cascading),
        )
        second = await handle.execute_update(
            IncidentWorkflow.add_member, member("s_maps", "maps", 1500, rule="cascade")
        )
        # The same stream reported again (a worse severity): counted once, figures merged.
        again = await handle.execute_update(
            IncidentWorkflow.add_member,
            member("s_samsara", "samsara", 2000, severity="critical"),
        )
        assert (first.joined_existing, first.member_count) == (False, 1)
        assert (second.joined_existing, second.member_count) == (True, 2)
        assert again.member_count == 2 and again.revenue_at_risk == 3500

        row = row_of(sessions, incident_id)
        assert row.status == "open" and row.revenue_at_risk == 3500
        assert row.severity == "critical"
        # samsara and maps hit directly; route_optimization uses both, driver_notifications
        # uses twilio: the blast radius holds the provider services the cascade reaches.
        assert set(row.blast_radius) >= {"samsara", "maps", "twilio"}
        assert "stripe" not in row.blast_radius

        stream(sessions, "s_samsara", "samsara", "resolved")
        await time_env.sleep(POLL_SECONDS + 1)
        status = await handle.query(IncidentWorkflow.status)
        assert status.phase is IncidentPhase.recovering  # maps still recovers
        stream(sessions, "s_maps", "maps", "unresolved")
        result = await handle.result()
        await record_history(handle, "incident_members_end")

    assert result.phase is IncidentPhase.resolved
    assert result.end_reason == "every member recovery has ended"
    assert [m.stream_status for m in result.members] == ["resolved", "unresolved"]
    row = row_of(sessions, incident_id)
    assert row.status == "ended" and row.blast_radius == []  # nothing is protected any more
    types = events_of(sessions, handle.id)
    assert types[0] == "incident_opened" and types[-1] == "incident_resolved"
    assert types.count("incident_opened") == 1
    described = await handle.describe()
    assert described.typed_search_attributes.get(INCIDENT_ID) == incident_id


async def test_an_operator_resolves_and_a_late_member_is_refused(
    time_env: WorkflowEnvironment, clean_store: Engine, sessions: sessionmaker[Session], queue: str
) -> None:
    client = time_env.client
    stream(sessions, "s_twilio", "twilio", "recovering")
    async with incident_worker(client, queue, sessions):
        handle = await start(client, queue)
        await handle.execute_update(IncidentWorkflow.add_member, member("s_twilio", "twilio", 300))
        status = await handle.execute_update(
            IncidentWorkflow.resolve, ResolveIncident(reason="carrier confirmed", operator="ic")
        )
        assert status.phase is IncidentPhase.resolved
        assert status.end_reason == "resolved by ic: carrier confirmed"
        await handle.result()
        # Its id is not started again: a late member is refused (and opens a new incident).
        settings = Settings(temporal_task_queue=queue)
        with pytest.raises(IncidentEnded):
            await join_incident(client, settings, status.incident_id, member("s_late", "twilio", 1))
        # The recovery's joining step opens a new incident for it instead, the same on a retry.
        steps = IncidentActivities(sessions, settings, client)
        late = JoinIncidentInput(
            incident_id=status.incident_id, member=member("s_late", "twilio", 1)
        )
        moved = await steps.join_incident(late)
        assert moved.incident_id != status.incident_id and moved.member_count == 1
        assert (await steps.join_incident(late)).incident_id == moved.incident_id
        await client.get_workflow_handle(incident_workflow_id(moved.incident_id)).execute_update(
            IncidentWorkflow.resolve, ResolveIncident(reason="test over")
        )
        await record_history(handle, "incident_resolved_by_operator")
    assert row_of(sessions, status.incident_id).end_reason == status.end_reason


async def test_a_member_past_its_deadline_escalates_the_incident(
    time_env: WorkflowEnvironment, clean_store: Engine, sessions: sessionmaker[Session], queue: str
) -> None:
    client = time_env.client
    stream(sessions, "s_stripe", "stripe", "recovering")
    async with incident_worker(client, queue, sessions):
        handle = await start(client, queue)
        await handle.execute_update(IncidentWorkflow.add_member, member("s_stripe", "stripe", 50))
        stream(sessions, "s_stripe", "stripe", "escalated")
        await time_env.sleep(POLL_SECONDS + 1)
        status = await handle.query(IncidentWorkflow.status)
        assert status.phase is IncidentPhase.escalated
        assert row_of(sessions, status.incident_id).phase == "escalated"
        assert any(t.step == "member_moved" for t in status.timeline)
        stream(sessions, "s_stripe", "stripe", "resolved")
        assert (await handle.result()).phase is IncidentPhase.resolved


async def test_a_long_incident_continues_as_new_with_every_member(
    time_env: WorkflowEnvironment, clean_store: Engine, sessions: sessionmaker[Session], queue: str
) -> None:
    client = time_env.client
    ids = [f"s_many_{i}" for i in range(3)]
    for stream_id in ids:
        stream(sessions, stream_id, "maps", "recovering")
    async with incident_worker(client, queue, sessions):
        handle = await start(client, queue, max_members_per_run=2)
        first_run = (await handle.describe()).run_id
        for stream_id in ids:
            await handle.execute_update(IncidentWorkflow.add_member, member(stream_id, "maps", 100))
        await time_env.sleep(timedelta(seconds=POLL_SECONDS + 1).total_seconds())
        latest = client.get_workflow_handle(handle.id)
        status = await latest.query(IncidentWorkflow.status)
        assert (await latest.describe()).run_id != first_run
        assert len(status.members) == 3 and status.revenue_at_risk == 300
        for stream_id in ids:
            stream(sessions, stream_id, "maps", "resolved")
        second_run = (await latest.describe()).run_id
        final = client.get_workflow_handle(handle.id, run_id=second_run, result_type=IncidentStatus)
        result = await final.result()
        await record_history(latest, "incident_continued")
        await record_history(
            client.get_workflow_handle(handle.id, run_id=first_run), "incident_continue_as_new"
        )
    assert result.phase is IncidentPhase.resolved and len(result.members) == 3
