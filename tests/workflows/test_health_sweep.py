"""HealthSweepWorkflow on the time-skipping server: the real sweep activity on the test store,
a same-name fake for starting recoveries (that one needs a real server; the devserver
end-to-end test covers it).

Record the replay histories with
`SWITCHYARD_RECORD_HISTORIES=1 .venv/bin/pytest tests/workflows/test_health_sweep.py`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta

from recovery_harness import recovery_worker, save_history
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.monitoring import MonitoringActivities
from store.base import utcnow
from store.db import transaction
from store.health import monitoring_config
from store.models import Event, NodeHealthRow, ProviderNodeRow, RoutingOverrideRow
from store.outcomes import OutcomeReport, record_outcomes
from switchyard.settings import Settings
from workflows.health_sweep import HealthSweepWorkflow
from workflows.health_sweep_types import (
    START_RECOVERIES,
    DegradedNode,
    RecoveryStart,
    StartRecoveriesInput,
    StartRecoveriesResult,
    SweepInput,
    SweepResult,
)
from workflows.incident_types import incident_workflow_id
from workflows.recovery import ErrorRecoveryWorkflow
from workflows.recovery_types import CancelRequest

RECORD = os.environ.get("SWITCHYARD_RECORD_HISTORIES") == "1"
PRIMARY = "stripe_primary_us_east"


class FakeRecoveryStarter:
    """Stands in for monitoring.start_recoveries and remembers what it was asked."""

    def __init__(self) -> None:
        self.calls: list[StartRecoveriesInput] = []

    @activity.defn(name=START_RECOVERIES)
    async def start_recoveries(self, data: StartRecoveriesInput) -> StartRecoveriesResult:
        self.calls.append(data)
        return StartRecoveriesResult(
            recoveries=[
                RecoveryStart(
                    node_id=n.node_id,
                    workflow_id=f"recovery:{n.service}:monitor_{n.node_id}",
                    outcome="started",
                )
                for n in data.nodes
            ]
        )


@asynccontextmanager
async def sweep_worker(
    client: Client, sessions: sessionmaker[Session], settings: Settings, starter: object
) -> AsyncIterator[str]:
    """A worker with the real sweep activity and the fake starter; yields its task queue."""
    queue = f"sweep-{uuid.uuid4().hex[:8]}"
    real = MonitoringActivities(sessions, settings)
    with ThreadPoolExecutor(max_workers=4) as executor:
        async with Worker(
            client,
            task_queue=queue,
            workflows=[HealthSweepWorkflow],
            activities=[real.sweep_health, starter.start_recoveries],  # type: ignore[attr-defined]
            activity_executor=executor,
        ):
            yield queue


async def _sweep(client: Client, queue: str, name: str | None = None) -> SweepResult:
    handle = await client.start_workflow(
        HealthSweepWorkflow.run,
        SweepInput(),
        id=f"health-sweep-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
    )
    result = await handle.result()
    if RECORD and name:
        await save_history(handle, name)
    return result


def _fail_primary(sessions: sessionmaker[Session], settings: Settings, seconds_ago: float) -> None:
    """100 outcomes of the stripe primary, 30 % failing: its breaker opens."""
    at = utcnow() - timedelta(seconds=seconds_ago)
    reports = [OutcomeReport(PRIMARY, i % 10 >= 3, 150, at) for i in range(100)]
    with transaction(sessions) as session:
        record_outcomes(session, reports, at, monitoring_config(settings))


async def test_quiet_store_rescores_and_starts_nothing(
    time_env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
) -> None:
    starter = FakeRecoveryStarter()
    settings = make_settings()
    async with sweep_worker(time_env.client, sessions, settings, starter) as queue:
        result = await _sweep(time_env.client, queue, "health_sweep_quiet")
    with sessions() as session:
        nodes = session.scalar(select(func.count()).select_from(ProviderNodeRow))
    assert result.nodes == nodes and result.changed == 0
    assert result.degraded == [] and result.transitions == [] and result.recoveries == []
    assert starter.calls == []


async def test_sweep_half_opens_the_breaker_and_starts_a_recovery(
    time_env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    _fail_primary(sessions, settings, seconds_ago=40)  # 30 s break: over by now
    starter = FakeRecoveryStarter()
    async with sweep_worker(time_env.client, sessions, settings, starter) as queue:
        result = await _sweep(time_env.client, queue, "health_sweep_degraded")

    assert [(t.node_id, t.previous_state, t.state) for t in result.transitions] == [
        (PRIMARY, "OPEN", "HALF_OPEN")
    ]
    # Half-open, but the failures are still in its window: below the error-rate SLO.
    (degraded,) = result.degraded
    assert (degraded.node_id, degraded.service, degraded.error_type) == (
        PRIMARY,
        "stripe",
        "provider_outage",
    )
    assert [c.nodes for c in starter.calls] == [result.degraded]
    assert starter.calls[0].request_key.startswith("health-sweep-")
    assert [r.workflow_id for r in result.recoveries] == [f"recovery:stripe:monitor_{PRIMARY}"]
    with sessions() as session:
        health = session.get(NodeHealthRow, PRIMARY)
        assert health is not None and health.breaker_state == "HALF_OPEN"
        kinds = session.scalars(select(Event.event_type).order_by(Event.id)).all()
        assert list(kinds) == ["breaker_opened", "breaker_half_opened"]


async def test_a_second_sweep_changes_nothing_more(
    time_env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    _fail_primary(sessions, settings, seconds_ago=40)
    async with sweep_worker(time_env.client, sessions, settings, FakeRecoveryStarter()) as queue:
        first = await _sweep(time_env.client, queue)
        second = await _sweep(time_env.client, queue)
    assert first.transitions and not second.transitions
    with sessions() as session:
        events = session.scalars(select(Event.event_type)).all()
        assert list(events).count("breaker_half_opened") == 1


async def test_forced_open_nodes_are_left_to_the_operator(
    time_env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    _fail_primary(sessions, settings, seconds_ago=40)
    with transaction(sessions) as session:  # as an unresolved recovery leaves it
        session.execute(
            update(NodeHealthRow)
            .where(NodeHealthRow.node_id == PRIMARY)
            .values(breaker_state="OPEN", breaker_forced="OPEN")
        )
    starter = FakeRecoveryStarter()
    async with sweep_worker(time_env.client, sessions, settings, starter) as queue:
        result = await _sweep(time_env.client, queue)
    assert result.transitions == [] and result.degraded == [] and starter.calls == []
    with sessions() as session:
        health = session.get(NodeHealthRow, PRIMARY)
        assert health is not None and health.breaker_state == "OPEN"


async def test_the_monitor_does_not_hold_out_a_services_last_node(
    time_env: WorkflowEnvironment, clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    # A recovery already holds the secondary out; the primary degrading too must not start a
    # second hold (the premium node is emergency-only): that would turn degradation into an
    # outage. A maps node in the same sweep still gets its recovery.
    with transaction(sessions) as session:
        session.add(
            RoutingOverrideRow(
                workflow_id="recovery:stripe:earlier",
                service="stripe",
                excluded_nodes=["stripe_secondary_us_west"],
            )
        )
    settings = Settings(temporal_task_queue=f"sweep-guard-{uuid.uuid4().hex[:8]}")
    monitor = MonitoringActivities(sessions, settings, time_env.client)
    degraded = [
        DegradedNode(
            node_id=node_id,
            service=service,
            error_type="provider_outage",
            severity="high",
            detail="failure rate 40%",
        )
        for node_id, service in (("stripe_primary_us_east", "stripe"), ("mapbox_primary", "maps"))
    ]
    async with recovery_worker(time_env.client, sessions, settings.temporal_task_queue):
        result = await monitor.start_recoveries(
            StartRecoveriesInput(nodes=degraded, request_key="sweep-1")
        )
        with sessions() as session:
            services = set(session.scalars(select(RoutingOverrideRow.service)))
        assert services == {"stripe", "maps"}  # the earlier stripe hold and the new maps one
        # A workflow left running with no worker would stop the shared time-skipping server
        # from skipping time for the tests that follow: the recovery ends (joining its
        # incident first, as the monitor correlated its error into one), then the incident.
        recovery = time_env.client.get_workflow_handle(result.recoveries[1].workflow_id)
        ended = await recovery.execute_update(
            ErrorRecoveryWorkflow.cancel, CancelRequest(reason="test over")
        )
        assert ended.incident_id is not None and ended.incident_id.startswith("incident_")
        await time_env.client.get_workflow_handle(
            incident_workflow_id(ended.incident_id)
        ).terminate()

    stripe, maps = result.recoveries
    assert (stripe.node_id, stripe.outcome) == ("stripe_primary_us_east", "would_strand")
    assert "would leave stripe no node" in stripe.detail
    assert (maps.node_id, maps.outcome) == ("mapbox_primary", "started")
