"""EmergencyOverrideWorkflow on the time-skipping server with its real activities on the store.

The time-skipping server has no update-with-start that auto-skips time, so these tests start
with start_workflow + execute_update; the API's update-with-start runs against the dev server.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from test_emergency_support import (
    emergency_input,
    emergency_worker,
    fresh_ids,
    record_history,
    register_search_attributes,
)

from routing.decide import decide
from routing.types import RoutingRequest, Strategy
from store.db import transaction
from store.models import Coordination, Emergency, Event
from store.snapshot import load_snapshot
from switchyard.settings import Settings
from workflows.emergency import EmergencyOverrideWorkflow
from workflows.emergency_types import (
    CancelRequest,
    EmergencyOverrideInput,
    EmergencyPhase,
    EmergencyStatus,
    EndReason,
    ExtendRequest,
)

PREMIUM = "stripe_premium_emergency"


@pytest.fixture
async def env(time_env: WorkflowEnvironment) -> WorkflowEnvironment:
    """The session's time-skipping server with the search attributes the workflow sets."""
    await register_search_attributes(time_env.client)
    return time_env


def _row(sessions: sessionmaker[Session], coordination_id: str) -> Emergency:
    with sessions() as session:
        row = session.get(Emergency, coordination_id)
        assert row is not None
        return row


def _events(sessions: sessionmaker[Session], coordination_id: str) -> list[Event]:
    with sessions() as session:
        return list(
            session.scalars(
                select(Event).where(Event.coordination_id == coordination_id).order_by(Event.id)
            )
        )


def _routes_to(sessions: sessionmaker[Session], at: datetime) -> str:
    """The node routing picks for a plain stripe request on a fresh snapshot at `at`."""
    with sessions() as session:
        snapshot = load_snapshot(session, at)
    return decide(RoutingRequest(service="stripe", operation="payment"), snapshot, at).node.node_id


async def _start(
    env: WorkflowEnvironment, params: EmergencyOverrideInput, task_queue: str, workflow_id: str
) -> WorkflowHandle[EmergencyOverrideWorkflow, EmergencyStatus]:
    return await env.client.start_workflow(
        EmergencyOverrideWorkflow.run,
        params,
        id=workflow_id,
        task_queue=task_queue,
        static_summary=f"test emergency of {params.service}",
    )


async def test_expires_after_thirty_simulated_minutes(
    env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    settings: Settings,
) -> None:
    task_queue, workflow_id = fresh_ids()
    params = emergency_input()
    before = _routes_to(sessions, await env.get_current_time())
    async with emergency_worker(env.client, task_queue, sessions, settings):
        handle = await _start(env, params, task_queue, workflow_id)
        activation = await handle.execute_update(EmergencyOverrideWorkflow.activation)
        assert activation.selected_node.node_id == PREMIUM
        assert activation.routing_strategy == Strategy.HYBRID_OPTIMIZATION
        assert activation.confidence_score == 98
        assert activation.deadline - activation.started_at == timedelta(minutes=30)
        row = _row(sessions, params.coordination_id)
        assert (row.status, row.workflow_id, row.selected_node_id) == (
            "active",
            workflow_id,
            PREMIUM,
        )
        assert row.deadline == activation.deadline
        assert _routes_to(sessions, activation.started_at) == PREMIUM
        with sessions() as session:
            coordination = session.get(Coordination, params.coordination_id)
            assert coordination is not None and coordination.kind == "emergency"

        status = await handle.query(EmergencyOverrideWorkflow.status)
        assert status.phase is EmergencyPhase.active
        assert 0 < status.remaining_seconds <= 30 * 60

        result = await handle.result()
        await record_history(handle, "expiry")

    assert result.end_reason is EndReason.expired
    assert result.phase is EmergencyPhase.ended
    # Workflow time of the ending (the server's clock runs on once nothing waits on it).
    now = result.ended_at
    assert now is not None
    assert activation.deadline <= now < activation.deadline + timedelta(minutes=1)
    row = _row(sessions, params.coordination_id)
    assert (row.status, row.end_reason) == ("ended", "expired")
    assert [e.event_type for e in _events(sessions, params.coordination_id)] == [
        "emergency_mode_activated",
        "emergency_mode_ended",
    ]
    ended = _events(sessions, params.coordination_id)[-1].payload
    assert ended["endReason"] == "expired"
    # After the end, routing is exactly as before the emergency, at any time.
    assert _routes_to(sessions, activation.started_at) == before != PREMIUM
    assert _routes_to(sessions, now) == before


async def test_extend_moves_the_deadline(
    env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    settings: Settings,
) -> None:
    task_queue, workflow_id = fresh_ids()
    params = emergency_input(poll_interval_seconds=300)
    async with emergency_worker(env.client, task_queue, sessions, settings):
        handle = await _start(env, params, task_queue, workflow_id)
        activation = await handle.execute_update(EmergencyOverrideWorkflow.activation)
        extended = await handle.execute_update(
            EmergencyOverrideWorkflow.extend,
            ExtendRequest(minutes=15, reason="provider still down", requested_by="ic"),
        )
        assert extended.previous_deadline == activation.deadline
        assert extended.deadline == activation.deadline + timedelta(minutes=15)
        assert (extended.total_minutes, extended.extensions) == (45, 1)
        assert _row(sessions, params.coordination_id).deadline == extended.deadline
        status = await handle.query(EmergencyOverrideWorkflow.status)
        assert (status.deadline, status.duration_minutes) == (extended.deadline, 45)

        refusals = [
            (ExtendRequest(minutes=0, reason="x"), "InvalidRequest"),
            (ExtendRequest(minutes=-5, reason="x"), "InvalidRequest"),
            (ExtendRequest(minutes=10, reason="   "), "InvalidRequest"),
            # 45 minutes so far: 24 h minus 44 minutes is the most that may still be added.
            (ExtendRequest(minutes=24 * 60 - 44, reason="too long"), "DurationLimit"),
        ]
        for request, kind in refusals:
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await handle.execute_update(EmergencyOverrideWorkflow.extend, request)
            assert isinstance(refused.value.cause, ApplicationError)
            assert refused.value.cause.type == kind
        assert _row(sessions, params.coordination_id).deadline == extended.deadline

        result = await handle.result()
        await record_history(handle, "extend")

    assert result.end_reason is EndReason.expired
    assert result.ended_at is not None
    assert extended.deadline <= result.ended_at < extended.deadline + timedelta(minutes=1)
    types = [e.event_type for e in _events(sessions, params.coordination_id)]
    assert types == ["emergency_mode_activated", "emergency_mode_extended", "emergency_mode_ended"]
    payload = _events(sessions, params.coordination_id)[1].payload
    assert (payload["addedMinutes"], payload["reason"]) == (15, "provider still down")


async def test_cancel_ends_at_once(
    env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    settings: Settings,
) -> None:
    task_queue, workflow_id = fresh_ids()
    params = emergency_input()
    async with emergency_worker(env.client, task_queue, sessions, settings):
        handle = await _start(env, params, task_queue, workflow_id)
        activation = await handle.execute_update(EmergencyOverrideWorkflow.activation)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(EmergencyOverrideWorkflow.cancel, CancelRequest(reason=" "))
        status = await handle.execute_update(
            EmergencyOverrideWorkflow.cancel,
            CancelRequest(reason="provider recovered", requested_by="ic"),
        )
        assert status.phase is EmergencyPhase.ended
        assert status.end_reason is EndReason.cancelled
        assert status.end_detail == "provider recovered"
        # Ended in the store before the update answered: routing is normal right away.
        row = _row(sessions, params.coordination_id)
        assert (row.status, row.end_reason) == ("ended", "cancelled")
        assert _routes_to(sessions, activation.started_at) != PREMIUM
        result = await handle.result()
        await record_history(handle, "cancel")

    assert result.end_reason is EndReason.cancelled
    assert result.ended_at is not None
    assert result.ended_at - activation.started_at < timedelta(minutes=1)
    ended = _events(sessions, params.coordination_id)[-1].payload
    assert (ended["endReason"], ended["detail"], ended["requestedBy"]) == (
        "cancelled",
        "provider recovered",
        "ic",
    )


async def test_spent_cap_ends_early(
    env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    settings: Settings,
) -> None:
    task_queue, workflow_id = fresh_ids()
    params = emergency_input(max_budget_override=1.0, poll_interval_seconds=30)
    async with emergency_worker(env.client, task_queue, sessions, settings):
        handle = await _start(env, params, task_queue, workflow_id)
        activation = await handle.execute_update(EmergencyOverrideWorkflow.activation)
        # What the coordinator charged under the override: 0.99 of 1.0 leaves less than the
        # cheapest stripe request (0.029), so nothing more can be routed under it.
        with transaction(sessions) as session:
            session.execute(
                update(Emergency)
                .where(Emergency.coordination_id == params.coordination_id)
                .values(spent=0.99)
            )
        result = await handle.result()
        await record_history(handle, "cap_spent")

    assert result.end_reason is EndReason.cap_spent
    assert result.spent == pytest.approx(0.99)
    assert result.ended_at is not None
    assert result.ended_at - activation.started_at <= timedelta(seconds=31)
    row = _row(sessions, params.coordination_id)
    assert (row.status, row.end_reason) == ("ended", "cap_spent")
    ended = _events(sessions, params.coordination_id)[-1].payload
    assert (ended["endReason"], ended["spent"]) == ("cap_spent", pytest.approx(0.99))


async def test_state_survives_continue_as_new(
    env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    settings: Settings,
) -> None:
    task_queue, workflow_id = fresh_ids()
    params = emergency_input(duration_minutes=3, poll_interval_seconds=20, polls_per_run=2)
    async with emergency_worker(env.client, task_queue, sessions, settings):
        handle = await _start(env, params, task_queue, workflow_id)
        activation = await handle.execute_update(EmergencyOverrideWorkflow.activation)
        extended = await handle.execute_update(
            EmergencyOverrideWorkflow.extend, ExtendRequest(minutes=2, reason="more time")
        )
        result = await handle.result()
        description = await env.client.get_workflow_handle(workflow_id).describe()
        await record_history(handle, "continue_as_new")

    # 5 minutes at 20 s polls, 2 polls per run: several runs, one emergency.
    assert description.run_id != handle.result_run_id
    assert result.end_reason is EndReason.expired
    assert (result.coordination_id, result.extensions) == (params.coordination_id, 1)
    assert result.started_at == activation.started_at
    assert result.ended_at is not None
    assert extended.deadline <= result.ended_at < extended.deadline + timedelta(minutes=1)
    types = [e.event_type for e in _events(sessions, params.coordination_id)]
    assert types == ["emergency_mode_activated", "emergency_mode_extended", "emergency_mode_ended"]
