"""ErrorRecoveryWorkflow on the time-skipping server with real activities on the test store."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta

import pytest
from recovery_harness import (
    SEED_REPORT,
    event_types,
    override_of,
    recovery_worker,
    save_history,
    set_breaker,
    start_recovery,
)
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from routing.decide import decide
from routing.types import RoutingRequest
from store.base import utcnow
from store.models import (
    Coordination,
    ErrorEvent,
    ErrorStream,
    Event,
    NodeHealthRow,
    RecoveryRun,
)
from store.snapshot import load_snapshot
from worker.setup import ensure_search_attributes
from workflows.incident import IncidentWorkflow
from workflows.incident_types import ResolveIncident, incident_workflow_id
from workflows.recovery import ErrorRecoveryWorkflow
from workflows.recovery_types import CancelRequest, RecoveryPhase, ResolveRequest
from workflows.search import INCIDENT_ID

RECORD = os.environ.get("SWITCHYARD_RECORD_HISTORIES") == "1"


def _queue() -> str:
    return f"recovery-{uuid.uuid4().hex[:8]}"


def _route(sessions: sessionmaker[Session], service: str = "samsara") -> str:
    with sessions() as session:
        snapshot = load_snapshot(session, utcnow())
    request = RoutingRequest(service=service, operation="gps_tracking", request_id="r-1")
    return decide(request, snapshot, utcnow()).node.node_id


async def test_happy_path_reroutes_monitors_and_restores_in_stages(
    time_env: WorkflowEnvironment, clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    queue = _queue()
    async with recovery_worker(time_env.client, sessions, queue):
        handle = await start_recovery(time_env.client, queue)
        result = await handle.execute_update(ErrorRecoveryWorkflow.report_error, SEED_REPORT)

        # The seed's decision, from the documented plan formulas.
        assert result.plan.selected.node_id == "samsara_backup"
        assert result.plan.strategy == "AVAILABILITY_FOCUSED"
        assert result.plan.action == "enable_multi_provider_redundancy"
        assert result.plan.estimated_cost == 0.061
        assert result.plan.estimated_latency == 300
        assert result.plan.estimated_resolution_minutes == 5
        assert result.coordination_id.startswith("backend_error_coordination_")
        assert not result.joined_existing

        # The override is in the store once the update returns: routing avoids the primary.
        row = override_of(sessions, handle.id)
        assert row is not None and row.excluded_nodes == ["samsara_primary"]
        # The redundancy plan's standby, for the hedges and retries it directs.
        assert row.standby_node == "samsara_secondary_eu"
        assert _route(sessions) != "samsara_primary"

        final = await handle.result()
        if RECORD:
            await save_history(handle, "recovery_happy_path")

    assert final.phase is RecoveryPhase.resolved
    steps = [s.step for s in final.timeline]
    assert steps.count("stage_restored") == 3  # 10%, 50%, 100%
    assert steps[-1] == "resolved"
    assert override_of(sessions, handle.id) is None
    assert _route(sessions) == "samsara_primary"
    assert event_types(sessions, handle.id) == [
        "recovery_started",
        "recovery_route_applied",
        "recovery_stage_restored",
        "recovery_stage_restored",
        "recovery_resolved",
    ]
    with sessions() as session:
        stream = session.get(ErrorStream, final.stream_id)
        assert stream is not None and stream.status == "resolved"
        assert stream.cascading_services == ["driver_notifications", "route_optimization"]
        coordination = session.get(Coordination, result.coordination_id)
        assert coordination is not None and coordination.kind == "backend_error"


async def test_repeated_errors_join_one_workflow_and_reselect(
    time_env: WorkflowEnvironment, clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    queue = _queue()
    async with recovery_worker(time_env.client, sessions, queue):
        handle = await start_recovery(time_env.client, queue)
        first = await handle.execute_update(ErrorRecoveryWorkflow.report_error, SEED_REPORT)
        second_report = SEED_REPORT.model_copy(update={"failed_providers": ["samsara_backup"]})
        second = await handle.execute_update(ErrorRecoveryWorkflow.report_error, second_report)
        status = await handle.query(ErrorRecoveryWorkflow.status)
        row = override_of(sessions, handle.id)
        await handle.execute_update(ErrorRecoveryWorkflow.cancel, CancelRequest(reason="test"))

    assert first.plan.selected.node_id == "samsara_backup"
    assert second.joined_existing and second.error_count == 2
    assert second.plan.selected.node_id == "samsara_secondary_eu"
    assert status.failed_providers == ["samsara_backup", "samsara_primary"]
    assert row is not None and sorted(row.excluded_nodes) == ["samsara_backup", "samsara_primary"]
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(ErrorEvent)) == 2
        stream = session.get(ErrorStream, status.stream_id)
        assert stream is not None and stream.error_count == 2


async def test_same_delivery_twice_is_applied_once(
    time_env: WorkflowEnvironment, clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    queue = _queue()
    report = SEED_REPORT.model_copy(update={"request_key": "delivery-1"})
    async with recovery_worker(time_env.client, sessions, queue):
        handle = await start_recovery(time_env.client, queue)
        first = await handle.execute_update(ErrorRecoveryWorkflow.report_error, report)
        again = await handle.execute_update(ErrorRecoveryWorkflow.report_error, report)
        await handle.execute_update(ErrorRecoveryWorkflow.cancel, CancelRequest(reason="test"))
    assert again == first
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(ErrorEvent)) == 1


async def test_escalates_after_time_to_resolution_then_resolves(
    time_env: WorkflowEnvironment, clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    queue = _queue()
    set_breaker(sessions, "samsara_primary", "OPEN")
    async with recovery_worker(time_env.client, sessions, queue):
        handle = await start_recovery(time_env.client, queue)
        await handle.execute_update(ErrorRecoveryWorkflow.report_error, SEED_REPORT)
        await time_env.sleep(timedelta(minutes=16))
        escalated = await handle.query(ErrorRecoveryWorkflow.status)
        assert override_of(sessions, handle.id) is not None
        set_breaker(sessions, "samsara_primary", "CLOSED")
        final = await handle.result()
        if RECORD:
            await save_history(handle, "recovery_escalated")

    assert escalated.phase is RecoveryPhase.escalated and escalated.escalated
    assert final.phase is RecoveryPhase.resolved
    steps = [s.step for s in final.timeline]
    assert steps.index("escalated") < steps.index("resolved")
    types = event_types(sessions, handle.id)
    assert "recovery_escalated" in types and types[-1] == "recovery_resolved"
    assert override_of(sessions, handle.id) is None


async def test_unresolved_after_monitoring_maximum_leaves_routing_safe(
    time_env: WorkflowEnvironment, clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    queue = _queue()
    set_breaker(sessions, "samsara_primary", "OPEN")
    async with recovery_worker(time_env.client, sessions, queue):
        handle = await start_recovery(time_env.client, queue, max_monitoring_minutes=30)
        await handle.execute_update(ErrorRecoveryWorkflow.report_error, SEED_REPORT)
        final = await handle.result()

    assert final.phase is RecoveryPhase.unresolved
    assert override_of(sessions, handle.id) is None
    # No override any more, yet the failed node stays out: its breaker is held open.
    with sessions() as session:
        health = session.get(NodeHealthRow, "samsara_primary")
        assert health is not None and health.breaker_forced == "OPEN"
        # Operators see why (GET providers/{nodeId}) and since when.
        assert health.breaker_reason == "recovery_unresolved"
        assert health.breaker_changed_at is not None
    assert _route(sessions) != "samsara_primary"
    assert event_types(sessions, handle.id)[-1] == "recovery_unresolved"


async def test_restore_stage_aborted_by_new_errors(
    time_env: WorkflowEnvironment, clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    queue = _queue()
    async with recovery_worker(time_env.client, sessions, queue):
        handle = await start_recovery(time_env.client, queue)
        await handle.execute_update(ErrorRecoveryWorkflow.report_error, SEED_REPORT)
        # Checks every 30 s, two healthy in a row, 120 s window: the 10% stage starts at ~120 s.
        await time_env.sleep(timedelta(seconds=150))
        restoring = await handle.query(ErrorRecoveryWorkflow.status)
        row = override_of(sessions, handle.id)
        await handle.execute_update(ErrorRecoveryWorkflow.report_error, SEED_REPORT)
        await time_env.sleep(timedelta(seconds=5))
        aborted = await handle.query(ErrorRecoveryWorkflow.status)
        aborted_row = override_of(sessions, handle.id)
        final = await handle.result()
        if RECORD:
            await save_history(handle, "recovery_restore_aborted")

    assert restoring.phase is RecoveryPhase.restoring
    assert row is not None and row.restore_fraction == 0.1
    assert "restore_aborted" in [s.step for s in aborted.timeline]
    assert aborted.phase is RecoveryPhase.rerouted
    assert aborted_row is not None and aborted_row.restore_fraction == 0.0
    assert final.phase is RecoveryPhase.resolved and final.error_count == 2
    assert "recovery_restore_aborted" in event_types(sessions, handle.id)


async def test_cancel_removes_the_override_at_once(
    time_env: WorkflowEnvironment, clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    queue = _queue()
    async with recovery_worker(time_env.client, sessions, queue):
        handle = await start_recovery(time_env.client, queue)
        await handle.execute_update(ErrorRecoveryWorkflow.report_error, SEED_REPORT)
        status = await handle.execute_update(
            ErrorRecoveryWorkflow.cancel, CancelRequest(reason="false alarm", operator="ops")
        )
        final = await handle.result()
        # An ended recovery takes no more errors (the API then starts a new run of the id).
        with pytest.raises((WorkflowUpdateFailedError, RPCError)):
            await handle.execute_update(ErrorRecoveryWorkflow.report_error, SEED_REPORT)
        if RECORD:
            await save_history(handle, "recovery_cancelled")

    assert status.phase is RecoveryPhase.cancelled and final.phase is RecoveryPhase.cancelled
    assert override_of(sessions, handle.id) is None
    assert event_types(sessions, handle.id)[-1] == "recovery_cancelled"


async def test_operator_resolve_ends_resolved(
    time_env: WorkflowEnvironment, clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    queue = _queue()
    async with recovery_worker(time_env.client, sessions, queue):
        handle = await start_recovery(time_env.client, queue)
        await handle.execute_update(ErrorRecoveryWorkflow.report_error, SEED_REPORT)
        status = await handle.execute_update(
            ErrorRecoveryWorkflow.resolve, ResolveRequest(reason="provider confirmed fix")
        )
    assert status.phase is RecoveryPhase.resolved
    assert override_of(sessions, handle.id) is None
    assert _route(sessions) == "samsara_primary"


async def test_unknown_severity_is_refused_by_the_validator(
    time_env: WorkflowEnvironment, clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    queue = _queue()
    async with recovery_worker(time_env.client, sessions, queue):
        handle = await start_recovery(time_env.client, queue)
        bad = SEED_REPORT.model_copy(update={"severity": "apocalyptic"})
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(ErrorRecoveryWorkflow.report_error, bad)
        await handle.execute_update(ErrorRecoveryWorkflow.cancel, CancelRequest(reason="test"))
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(ErrorEvent)) == 0


async def test_a_correlated_error_joins_its_incident_before_the_recovery_ends(
    time_env: WorkflowEnvironment, clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    queue = _queue()
    await ensure_search_attributes(time_env.client, time_env.client.namespace)
    incident_id = f"incident_test_{uuid.uuid4().hex[:8]}"
    report = SEED_REPORT.model_copy(update={"incident_id": incident_id, "incident_rule": "new"})
    async with recovery_worker(time_env.client, sessions, queue):
        handle = await start_recovery(time_env.client, queue)
        await handle.execute_update(ErrorRecoveryWorkflow.report_error, report)
        # The same figures again: the incident is not told twice.
        again = report.model_copy(update={"request_key": "again"})
        await handle.execute_update(ErrorRecoveryWorkflow.report_error, again)
        status = await handle.execute_update(
            ErrorRecoveryWorkflow.cancel, CancelRequest(reason="test over")
        )
        assert status.incident_id == incident_id
        incident = time_env.client.get_workflow_handle(incident_workflow_id(incident_id))
        members = (await incident.query(IncidentWorkflow.status)).members
        assert [(m.recovery_workflow_id, m.rule) for m in members] == [(handle.id, "new")]
        assert members[0].revenue_at_risk == SEED_REPORT.revenue_at_risk
        described = await handle.describe()
        assert described.typed_search_attributes.get(INCIDENT_ID) == incident_id
        await incident.execute_update(IncidentWorkflow.resolve, ResolveIncident(reason="done"))
        if RECORD:
            await save_history(handle, "recovery_incident_joined")
    with sessions() as session:
        joins = session.scalar(
            select(func.count())
            .select_from(Event)
            .where(
                Event.event_type.in_(("incident_opened", "incident_updated")),
                Event.workflow_id == incident_workflow_id(incident_id),
            )
        )
    assert joins == 1  # opened by the one join; the repeat told it nothing new


async def test_a_plan_pins_the_recovery_and_its_run_feeds_the_next_estimate(
    time_env: WorkflowEnvironment, clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    queue = _queue()
    planned = SEED_REPORT.model_copy(update={"recovery_strategy_id": "samsara_failover_strategy"})
    stranger = SEED_REPORT.model_copy(
        update={"recovery_strategy_id": "no_such_plan", "retry_attempts": 3}
    )
    async with recovery_worker(time_env.client, sessions, queue):
        handle = await start_recovery(time_env.client, queue)
        first = await handle.execute_update(ErrorRecoveryWorkflow.report_error, planned)
        second = await handle.execute_update(ErrorRecoveryWorkflow.report_error, stranger)
        status = await handle.query(ErrorRecoveryWorkflow.status)
        final = await handle.result()
        if RECORD:
            await save_history(handle, "recovery_plan_pinned")

        # The next recovery of the service under the same strategy: estimated from this one.
        after = await start_recovery(time_env.client, queue)
        estimate = await after.execute_update(ErrorRecoveryWorkflow.report_error, planned)
        await after.execute_update(ErrorRecoveryWorkflow.cancel, CancelRequest(reason="test"))

    assert (first.plan.plan_status, first.plan.estimated_resolution_minutes) == ("applied", 5)
    assert first.plan.resolution_basis == "plan_timers"
    # The pinned plan holds; the stranger id is recorded; its spent retries raise the severity.
    assert (second.plan.recovery_plan_id, second.plan.plan_status) == (
        "samsara_failover_strategy",
        "pinned_elsewhere",
    )
    assert second.plan.handled_severity == "critical"
    assert status.recovery_plan_id == "samsara_failover_strategy"
    assert status.severity == "critical"
    assert final.phase is RecoveryPhase.resolved
    with sessions() as session:
        run = session.scalars(select(RecoveryRun).where(RecoveryRun.workflow_id == handle.id)).one()
    assert (run.outcome, run.strategy, run.declared_minutes) == (
        "resolved",
        "AVAILABILITY_FOCUSED",
        15,
    )
    assert run.recovery_plan_id == "samsara_failover_strategy"
    assert (estimate.plan.resolution_basis, estimate.plan.resolution_samples) == ("history", 1)
    assert estimate.plan.estimated_resolution_minutes == round(run.minutes, 2)
