"""One sweep of the monitor, and HealthSweepWorkflow: that sweep as a workflow of its own.

re-score every node in the store (windows age out toward catalog figures, OPEN breakers
half-open after their break, predictions refresh) -> start an ErrorRecoveryWorkflow for each
degraded node that has none running. Both steps are activities: the store and the Temporal
client live in the worker, and the history shows what each sweep found and started.

HealthMonitorWorkflow (workflows/health_monitor.py) runs `sweep_once` on a timer; the
HealthSweepWorkflow here runs it once and ends, for a sweep on demand (and for the runs an
earlier version's schedule left behind).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.health_sweep_types import (
        StartRecoveriesInput,
        SweepHealthInput,
        SweepInput,
        SweepResult,
        SweepSteps,
    )

# A sweep is one of many: a few quick retries, then the next sweep takes over.
SWEEP_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=3,
)
SWEEP_TIMEOUT = timedelta(seconds=30)
# Starting a recovery waits for its first route (update-with-start): allow for that.
START_TIMEOUT = timedelta(seconds=60)


async def sweep_once(start_recoveries: bool, request_key: str) -> SweepResult:
    """Re-score every node, then start recoveries for the degraded ones (workflow code).

    `request_key` must be unique per sweep: a recovery dedupes reports by it.
    """
    health = await workflow.execute_activity_method(
        SweepSteps.sweep_health,
        SweepHealthInput(),
        start_to_close_timeout=SWEEP_TIMEOUT,
        retry_policy=SWEEP_RETRY,
    )
    result = SweepResult(
        nodes=health.nodes,
        changed=health.changed,
        transitions=health.transitions,
        degraded=health.degraded,
    )
    if not health.degraded or not start_recoveries:
        return result
    started = await workflow.execute_activity_method(
        SweepSteps.start_recoveries,
        StartRecoveriesInput(nodes=health.degraded, request_key=request_key),
        start_to_close_timeout=START_TIMEOUT,
        retry_policy=SWEEP_RETRY,
    )
    result.recoveries = started.recoveries
    return result


@workflow.defn
class HealthSweepWorkflow:
    """Re-scores nodes and starts recoveries for degraded ones, once."""

    @workflow.run
    async def run(self, data: SweepInput) -> SweepResult:
        """Sweep once and return what was found and started."""
        return await sweep_once(data.start_recoveries, workflow.info().workflow_id)
