"""Idempotent start-up registration of what the workflows need on the Temporal server:
the search attributes they set and the schedule that runs the health sweep."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
)
from temporalio.service import RPCError, RPCStatusCode

from switchyard.settings import Settings
from workflows.health_sweep import HealthSweepWorkflow
from workflows.health_sweep_types import SWEEP_SCHEDULE_ID, SWEEP_WORKFLOW_ID, SweepInput
from workflows.search import SEARCH_ATTRIBUTES

log = logging.getLogger("switchyard.worker")
KEYWORD = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
# A sweep run that finds no worker gives up after this; with overlap SKIP, a stuck run
# would otherwise hold back every later one.
SWEEP_RUN_TIMEOUT = timedelta(minutes=5)


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Add the typed search attributes the workflows set, when the namespace lacks them."""
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        existing = set(listed.custom_attributes)
    except RPCError as exc:
        # The time-skipping test server can add attributes but not list them.
        if exc.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        existing = set()
    for key in SEARCH_ATTRIBUTES:
        if key.name in existing:
            continue
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=namespace, search_attributes={key.name: KEYWORD}
                )
            )
            log.info("registered search attribute %s", key.name)
        except RPCError as exc:
            if exc.status != RPCStatusCode.ALREADY_EXISTS:
                raise


def health_sweep_schedule(settings: Settings) -> Schedule:
    """The schedule that runs HealthSweepWorkflow every `health_sweep_interval_seconds`."""
    every = timedelta(seconds=settings.health_sweep_interval_seconds)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            HealthSweepWorkflow.run,
            SweepInput(),
            id=SWEEP_WORKFLOW_ID,
            task_queue=settings.temporal_task_queue,
            execution_timeout=SWEEP_RUN_TIMEOUT,
            static_summary="Health sweep: re-score nodes, half-open breakers, predict, recover",
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        # A sweep is only useful now: never two at once, never a backlog after downtime.
        policy=SchedulePolicy(
            overlap=ScheduleOverlapPolicy.SKIP,
            catchup_window=max(timedelta(seconds=10), 2 * every),
        ),
    )


async def ensure_health_sweep(
    client: Client, settings: Settings, schedule_id: str = SWEEP_SCHEDULE_ID
) -> str:
    """Create the sweep schedule, or update it when its interval or queue changed.

    Returns "created", "updated" or "unchanged". Safe to call from every worker at start-up;
    a schedule an operator paused stays paused.
    """
    wanted = health_sweep_schedule(settings)
    try:
        await client.create_schedule(schedule_id, wanted)
        log.info("created schedule %s", schedule_id)
        return "created"
    except ScheduleAlreadyRunningError:
        pass
    handle = client.get_schedule_handle(schedule_id)
    current = (await handle.describe()).schedule
    if _same_schedule(current, wanted):
        return "unchanged"
    keep_state = replace(wanted, state=current.state)
    await handle.update(lambda _: ScheduleUpdate(schedule=keep_state))
    log.info("updated schedule %s", schedule_id)
    return "updated"


def _same_schedule(current: Schedule, wanted: Schedule) -> bool:
    action, goal = current.action, wanted.action
    if not isinstance(action, ScheduleActionStartWorkflow):
        return False
    assert isinstance(goal, ScheduleActionStartWorkflow)
    return (
        [i.every for i in current.spec.intervals] == [i.every for i in wanted.spec.intervals]
        and action.workflow == goal.workflow
        and action.task_queue == goal.task_queue
        and action.execution_timeout == goal.execution_timeout
    )
