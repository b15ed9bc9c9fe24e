"""HealthSweepWorkflow: one short run of the monitor, started by a Temporal Schedule.

re-score every node in the store (windows age out toward catalog figures, OPEN breakers
half-open after their break, predictions refresh) -> start an ErrorRecoveryWorkflow for each
degraded node that has none running. Both steps are activities: the store and the Temporal
client live in the worker, and each run's history shows what it found and started.
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

# A run is one of many: a few quick retries, then the next scheduled run takes over.
SWEEP_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=3,
)
SWEEP_TIMEOUT = timedelta(seconds=30)
# Starting a recovery waits for its first route (update-with-start): allow for that.
START_TIMEOUT = timedelta(seconds=60)


@workflow.defn
class HealthSweepWorkflow:
    """Re-scores nodes and starts recoveries for degraded ones; each run is short."""

    @workflow.run
    async def run(self, data: SweepInput) -> SweepResult:
        """Sweep once and return what was found and started."""
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
        if not health.degraded or not data.start_recoveries:
            return result
        started = await workflow.execute_activity_method(
            SweepSteps.start_recoveries,
            StartRecoveriesInput(nodes=health.degraded, request_key=workflow.info().workflow_id),
            start_to_close_timeout=START_TIMEOUT,
            retry_policy=SWEEP_RETRY,
        )
        result.recoveries = started.recoveries
        return result
