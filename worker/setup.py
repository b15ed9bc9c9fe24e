"""Idempotent start-up registration of what the workflows need on the Temporal server:
the search attributes they set and the health monitor workflow (which replaced the
schedule earlier versions ran the sweep on)."""

from __future__ import annotations

import logging

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from switchyard.settings import Settings
from workflows.health_monitor import HealthMonitorWorkflow
from workflows.health_sweep_types import (
    MONITOR_WORKFLOW_ID,
    SWEEP_SCHEDULE_ID,
    MonitorConfig,
    MonitorInput,
)
from workflows.search import SEARCH_ATTRIBUTES

log = logging.getLogger("switchyard.worker")
KEYWORD = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD


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


def monitor_config(settings: Settings) -> MonitorConfig:
    """The monitor's configuration from the settings."""
    return MonitorConfig(interval_seconds=settings.health_sweep_interval_seconds)


async def ensure_health_monitor(
    client: Client, settings: Settings, workflow_id: str = MONITOR_WORKFLOW_ID
) -> str:
    """Start the health monitor, or hand the running one the current settings.

    Signal-with-start on the monitor's fixed id: a running monitor (started by this or another
    worker, or before a restart) gets a `configure` signal, which changes nothing when the
    settings did not change; when none runs, one starts with the settings. Safe to call from
    every worker at start-up. Returns the run id of the monitor now running.
    """
    handle = await client.start_workflow(
        HealthMonitorWorkflow.run,
        MonitorInput(config=monitor_config(settings)),
        id=workflow_id,
        task_queue=settings.temporal_task_queue,
        start_signal="configure",
        start_signal_args=[monitor_config(settings)],
        static_summary="Health monitor: re-score nodes, half-open breakers, predict, recover",
    )
    log.info("health monitor %s running (run %s)", workflow_id, handle.result_run_id)
    return handle.result_run_id or ""


async def retire_sweep_schedule(client: Client, schedule_id: str = SWEEP_SCHEDULE_ID) -> bool:
    """Delete the schedule an earlier version ran the sweep on; True when there was one.

    Its runs still under way finish on their own (HealthSweepWorkflow stays registered).
    """
    try:
        await client.get_schedule_handle(schedule_id).delete()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        return False
    log.info("deleted schedule %s: the health monitor workflow sweeps now", schedule_id)
    return True
