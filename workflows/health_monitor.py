"""HealthMonitorWorkflow: the health sweep as one long-running workflow.

One execution with a fixed id (`switchyard-health-monitor`) sweeps every
`interval_seconds` (workflows/health_sweep.sweep_once: re-score, half-open, predict, start
recoveries) on a durable timer, and continues as new after `ticks_per_run` sweeps so its
history stays small. The Temporal UI lists about one monitor run an hour instead of a
workflow per sweep, so the recoveries, emergencies and incidents operators look for are not
buried; each sweep still shows in the run's history with its result, the run's current
details say what the last sweep did, and the `status` query answers the same.

A sweep that fails after its retries is counted and logged, and the next tick tries again:
the monitor itself never fails on a bad sweep. Signals: `configure` (a worker started with
a new interval; sent by every worker's start-up), `pause` and `resume` (an operator's pause
survives continue-as-new and worker restarts).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from workflows.health_sweep import sweep_once
    from workflows.health_sweep_types import (
        MonitorConfig,
        MonitorInput,
        MonitorState,
        MonitorStatus,
        PauseRequest,
        StartOutcome,
    )


@workflow.defn
class HealthMonitorWorkflow:
    """Sweeps on a timer for as long as it runs; continues as new every `ticks_per_run`."""

    @workflow.init
    def __init__(self, data: MonitorInput) -> None:
        self._input = data
        self._config = data.config
        carried = data.carried
        self._state = (
            carried.model_copy(update={"runs": carried.runs + 1}, deep=True)
            if carried is not None
            else MonitorState()
        )
        self._ticks = 0  # sweeps in this run

    @workflow.run
    async def run(self, data: MonitorInput) -> None:
        """Sweep, wait an interval, sweep again; a continued run waits before its first."""
        wait_first = data.carried is not None
        while True:
            if wait_first:
                await workflow.sleep(
                    timedelta(seconds=self._config.interval_seconds), summary="next sweep"
                )
            wait_first = True
            if self._state.paused:
                await workflow.wait_condition(lambda: not self._state.paused)
            await self._sweep()
            if self._ticks >= self._input.ticks_per_run or (
                workflow.info().is_continue_as_new_suggested()
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    MonitorInput(
                        config=self._config,
                        ticks_per_run=self._input.ticks_per_run,
                        carried=self._state,
                    )
                )

    async def _sweep(self) -> None:
        self._ticks += 1
        info = workflow.info()
        # Unique per sweep (a recovery dedupes its reports by it), the same on replay.
        key = f"{info.workflow_id}/{info.run_id}/{self._ticks}"
        state = self._state
        state.last_sweep_at = at = workflow.now().isoformat()
        try:
            result = await sweep_once(self._config.start_recoveries, key)
        except ActivityError as err:
            state.failed_sweeps += 1
            state.last_error = str(err.cause or err)
            workflow.logger.warning("sweep failed, the next tick tries again: %s", err)
            workflow.set_current_details(f"last sweep {at} failed: {state.last_error}")
            return
        state.last_sweep, state.last_error = result, ""
        state.sweeps += 1
        state.transitions += len(result.transitions)
        started = sum(1 for r in result.recoveries if r.outcome is StartOutcome.started)
        state.recoveries_started += started
        workflow.set_current_details(
            f"last sweep {at}: {result.nodes} nodes, {len(result.transitions)} breakers moved, "
            f"{len(result.degraded)} degraded, {started} recoveries started"
        )

    @workflow.signal
    def configure(self, config: MonitorConfig) -> None:
        """Take a new interval or dry-run setting, from the next wait on."""
        self._config = config

    @workflow.signal
    def pause(self, request: PauseRequest) -> None:
        """No sweep until `resume` (a sweep already under way finishes)."""
        self._state.paused = True
        self._state.pause_reason = request.reason

    @workflow.signal
    def resume(self) -> None:
        """Sweep again from the next tick."""
        self._state.paused = False
        self._state.pause_reason = ""

    @workflow.query
    def status(self) -> MonitorStatus:
        """The configuration, the counters across runs and the last sweep."""
        return MonitorStatus(config=self._config, state=self._state, ticks_this_run=self._ticks)
