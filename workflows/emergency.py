"""EmergencyOverrideWorkflow: one service's emergency budget override, ended by a durable timer.

activate (store row, routing decision, event) -> hold until the deadline, a cancel, or the cap
is spent (spend polled at an interval) -> deactivate. The deadline lives in workflow state and
in the store; remaining time is always computed from workflow.now(), so a worker that comes
back after the deadline ends the emergency in its first workflow task.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows.emergency_types import (
        MAX_TOTAL_MINUTES,
        ActivateInput,
        Activation,
        CancelRequest,
        DeactivateInput,
        EmergencyOverrideInput,
        EmergencyPhase,
        EmergencyStatus,
        EmergencySteps,
        EndReason,
        ExtendInput,
        ExtendRequest,
        ExtendResult,
        OverrideState,
        SpendInput,
        SpendReading,
    )
    from workflows.search import PHASE, SERVICE_NAME

STEP_TIMEOUT = timedelta(seconds=30)
# Activation and extension give up after a few attempts: a caller is waiting on the update.
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=5,
)
# Ending must happen whatever it takes: retried until the store accepts it.
END_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
# A failed spend poll is skipped rather than retried at length, so it never delays the deadline.
POLL_TIMEOUT = timedelta(seconds=10)
POLL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=2)

CLOSED_PHASES = frozenset({EmergencyPhase.ended, EmergencyPhase.failed})


@workflow.defn
class EmergencyOverrideWorkflow:
    """Holds one service's emergency override until its deadline, a cancel or a spent cap."""

    @workflow.init
    def __init__(self, params: EmergencyOverrideInput) -> None:
        self._params = params
        carried = params.carried
        self._state = (
            carried.model_copy(deep=True)
            if carried is not None
            else OverrideState(total_minutes=params.duration_minutes)
        )
        self._cancel: CancelRequest | None = None
        self._failure: ApplicationError | None = None
        self._revision = 0  # bumped by each extension so the hold loop re-reads the deadline
        self._polls = 0  # spend polls in this run
        self._lock = asyncio.Lock()  # one deadline change or ending at a time

    @workflow.run
    async def run(self, params: EmergencyOverrideInput) -> EmergencyStatus:
        """Activate, hold, deactivate; return the final status."""
        self._set_phase(self._state.phase)
        if self._state.activation is None:
            await self._activate()
        reason = await self._hold()
        await self._deactivate(reason)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._status()

    # ---- updates and query ----

    @workflow.update
    async def activation(self) -> Activation:
        """Wait until the override is active and return what was decided."""
        await workflow.wait_condition(
            lambda: self._state.activation is not None or self._failure is not None
        )
        if self._state.activation is None:
            raise self._activation_failure()
        return self._state.activation

    @activation.validator
    def _validate_activation(self) -> None:
        if self._state.phase is EmergencyPhase.failed:
            raise self._activation_failure()

    @workflow.update
    async def extend(self, request: ExtendRequest) -> ExtendResult:
        """Move the deadline `minutes` later, in the store first, then in the timer."""
        async with self._lock:
            # The emergency may have ended while this update waited for the lock.
            self._check_extension(request)
            activation = self._active()
            previous = self._deadline()
            deadline = previous + timedelta(minutes=request.minutes)
            number = self._state.extensions + 1
            total = self._state.total_minutes + request.minutes
            self._state.extension_attempts += 1
            try:
                result = await workflow.execute_activity_method(
                    EmergencySteps.extend,
                    ExtendInput(
                        step_key=self._step(f"extend-{self._state.extension_attempts}"),
                        coordination_id=activation.coordination_id,
                        previous_deadline=previous,
                        deadline=deadline,
                        minutes=request.minutes,
                        total_minutes=total,
                        extensions=number,
                        reason=request.reason,
                        requested_by=request.requested_by,
                    ),
                    start_to_close_timeout=STEP_TIMEOUT,
                    retry_policy=STEP_RETRY,
                )
            except ActivityError as err:
                raise ApplicationError(
                    f"the extension was not recorded: {_cause_message(err)}",
                    type="ExtensionFailed",
                    non_retryable=True,
                ) from err
            self._state.deadline = deadline
            self._state.total_minutes = total
            self._state.extensions = number
            self._revision += 1
            return result

    @extend.validator
    def _validate_extend(self, request: ExtendRequest) -> None:
        self._check_extension(request)

    @workflow.update
    async def cancel(self, request: CancelRequest) -> EmergencyStatus:
        """End the emergency now; answers once it has ended in the store."""
        if self._cancel is None:
            self._cancel = request
        await workflow.wait_condition(lambda: self._state.phase in CLOSED_PHASES)
        return self._status()

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        if not request.reason.strip():
            raise ApplicationError("reason must not be empty", type="InvalidRequest")
        phase = self._state.phase
        if phase not in (EmergencyPhase.activating, EmergencyPhase.active):
            raise ApplicationError(f"the emergency is already {phase}", type="EmergencyEnded")

    @workflow.query
    def status(self) -> EmergencyStatus:
        """Phase, deadline, remaining time, spend and selected node, as of the last task."""
        return self._status()

    # ---- steps ----

    async def _activate(self) -> None:
        params = self._params
        started = workflow.now()
        deadline = started + timedelta(minutes=params.duration_minutes)
        try:
            activation = await workflow.execute_activity_method(
                EmergencySteps.activate,
                ActivateInput(
                    step_key=self._step("activate"),
                    service=params.service,
                    operation=params.operation,
                    coordination_id=params.coordination_id,
                    emergency_reason=params.emergency_reason,
                    business_justification=params.business_justification,
                    max_budget_override=params.max_budget_override,
                    duration_minutes=params.duration_minutes,
                    started_at=started,
                    deadline=deadline,
                    requested_by=params.requested_by,
                ),
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=STEP_RETRY,
            )
        except ActivityError as err:
            cause = err.cause
            self._failure = (
                cause
                if isinstance(cause, ApplicationError)
                else ApplicationError(_cause_message(err), type="ActivationFailed")
            )
            self._state.end_detail = self._failure.message
            self._set_phase(EmergencyPhase.failed)
            await workflow.wait_condition(workflow.all_handlers_finished)
            raise self._activation_failure() from err
        self._state.activation = activation
        self._state.deadline = activation.deadline
        self._set_phase(EmergencyPhase.active)

    async def _hold(self) -> EndReason:
        """Wait for the end; an extension that lands during the ending keeps it going."""
        while True:
            reason = await self._wait_for_end()
            async with self._lock:
                if reason is EndReason.expired and workflow.now() < self._deadline():
                    continue
                self._set_phase(EmergencyPhase.ending)
                return reason

    async def _wait_for_end(self) -> EndReason:
        interval = self._params.poll_interval_seconds
        while True:
            if self._cancel is not None:
                return EndReason.cancelled
            remaining = (self._deadline() - workflow.now()).total_seconds()
            if remaining <= 0:
                return EndReason.expired
            revision = self._revision
            deadline_next = remaining <= interval
            try:
                await workflow.wait_condition(
                    functools.partial(self._cancelled_or_extended, revision),
                    timeout=timedelta(seconds=min(remaining, interval)),
                    timeout_summary="deadline" if deadline_next else "spend poll",
                )
                continue  # cancelled or extended: look again
            except TimeoutError:
                pass
            if deadline_next:
                continue
            reading = await self._read_spend()
            if reading is not None:
                self._state.spent = reading.spent
                if reading.cap_spent():
                    return EndReason.cap_spent
            self._polls += 1
            if self._polls >= self._params.polls_per_run or (
                workflow.info().is_continue_as_new_suggested()
            ):
                await self._continue_as_new()

    async def _read_spend(self) -> SpendReading | None:
        try:
            reading = await workflow.execute_activity_method(
                EmergencySteps.read_spend,
                SpendInput(coordination_id=self._params.coordination_id),
                start_to_close_timeout=POLL_TIMEOUT,
                retry_policy=POLL_RETRY,
            )
        except ActivityError as err:
            workflow.logger.warning("spend poll failed, next one in an interval: %s", err)
            return None
        return reading

    async def _continue_as_new(self) -> None:
        # Updates in flight would be lost by continue-as-new; a cancel ends the emergency instead.
        await workflow.wait_condition(
            lambda: workflow.all_handlers_finished() or self._cancel is not None
        )
        if self._cancel is not None:
            return
        workflow.continue_as_new(self._params.model_copy(update={"carried": self._state}))

    async def _deactivate(self, reason: EndReason) -> None:
        cancel = self._cancel if reason is EndReason.cancelled else None
        result = await workflow.execute_activity_method(
            EmergencySteps.deactivate,
            DeactivateInput(
                step_key=self._step("deactivate"),
                coordination_id=self._params.coordination_id,
                end_reason=reason,
                ended_at=workflow.now(),
                detail=cancel.reason if cancel is not None else "",
                requested_by=cancel.requested_by if cancel is not None else "",
            ),
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=END_RETRY,
        )
        self._state.spent = result.spent
        self._state.end_reason = result.end_reason
        self._state.end_detail = cancel.reason if cancel is not None else ""
        self._state.ended_at = result.ended_at
        self._set_phase(EmergencyPhase.ended)

    # ---- helpers ----

    def _check_extension(self, request: ExtendRequest) -> None:
        if request.minutes <= 0:
            raise ApplicationError("minutes must be positive", type="InvalidRequest")
        if not request.reason.strip():
            raise ApplicationError("reason must not be empty", type="InvalidRequest")
        phase = self._state.phase
        if phase is EmergencyPhase.activating:
            raise ApplicationError("the emergency is not active yet", type="EmergencyNotActive")
        if phase is not EmergencyPhase.active or self._cancel is not None:
            raise ApplicationError(f"the emergency is already {phase}", type="EmergencyEnded")
        deadline = self._deadline()
        if workflow.now() >= deadline:
            raise ApplicationError("the emergency has expired", type="EmergencyEnded")
        started = self._active().started_at
        total = (deadline + timedelta(minutes=request.minutes) - started).total_seconds() / 60
        if total > MAX_TOTAL_MINUTES:
            raise ApplicationError(
                f"the total duration would be {total:g} minutes; the limit is "
                f"{MAX_TOTAL_MINUTES} minutes (24 h)",
                type="DurationLimit",
            )

    def _cancelled_or_extended(self, revision: int) -> bool:
        return self._cancel is not None or self._revision != revision

    def _activation_failure(self) -> ApplicationError:
        failure = self._failure
        if failure is None:
            return ApplicationError("the emergency was not activated", type="ActivationFailed")
        return ApplicationError(
            failure.message,
            *failure.details,
            type=failure.type or "ActivationFailed",
            non_retryable=True,
        )

    def _active(self) -> Activation:
        activation = self._state.activation
        if activation is None:
            raise ApplicationError("the emergency is not active yet", type="EmergencyNotActive")
        return activation

    def _deadline(self) -> datetime:
        deadline = self._state.deadline
        if deadline is None:
            raise ApplicationError("the emergency is not active yet", type="EmergencyNotActive")
        return deadline

    def _step(self, name: str) -> str:
        # The workflow id is reused by every emergency of the service; the coordination id
        # makes ledger keys unique per emergency.
        return f"{self._params.coordination_id}:{name}"

    def _set_phase(self, phase: EmergencyPhase) -> None:
        self._state.phase = phase
        workflow.upsert_search_attributes(
            [SERVICE_NAME.value_set(self._params.service), PHASE.value_set(phase.value)]
        )

    def _status(self) -> EmergencyStatus:
        state = self._state
        activation = state.activation
        remaining = 0.0
        if state.deadline is not None and state.phase is EmergencyPhase.active:
            remaining = max(0.0, (state.deadline - workflow.now()).total_seconds())
        return EmergencyStatus(
            workflow_id=workflow.info().workflow_id,
            service=self._params.service,
            coordination_id=self._params.coordination_id,
            phase=state.phase,
            started_at=activation.started_at if activation is not None else None,
            deadline=state.deadline,
            remaining_seconds=remaining,
            duration_minutes=state.total_minutes,
            extensions=state.extensions,
            max_budget_override=self._params.max_budget_override,
            spent=state.spent,
            selected_node=activation.selected_node if activation is not None else None,
            end_reason=state.end_reason,
            end_detail=state.end_detail,
            ended_at=state.ended_at,
        )


def _cause_message(err: ActivityError) -> str:
    cause = err.cause
    return str(cause) if cause is not None else str(err)
