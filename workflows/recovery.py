"""ErrorRecoveryWorkflow: one durable recovery per error stream.

register stream -> choose strategy and route -> apply override -> monitor the failed providers
(timers + health checks) -> staged restore -> resolved; escalation when timeToResolution passes;
unresolved after the monitoring maximum, with the failed providers held out of routing.

An error correlated into a cross-stream incident (its report names the incident) makes the
recovery join it: an activity beside the recovery, never in its way, settled before the
recovery ends, so a member is never lost even if a worker dies mid-join (docs/INCIDENTS.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from routing.recovery import Severity, worst_severity
    from workflows.incident_types import (
        IncidentMember,
        IncidentSteps,
        JoinedIncident,
        JoinIncidentInput,
    )
    from workflows.recovery_types import (
        TERMINAL_PHASES,
        ApplyOverrideInput,
        CancelRequest,
        ErrorReport,
        FinishInput,
        HandleErrorInput,
        HealthCheckInput,
        HealthCheckResult,
        RecoveryEventInput,
        RecoveryInput,
        RecoveryPhase,
        RecoveryStatus,
        RecoverySteps,
        ReportResult,
        ResolveRequest,
        RoutePlan,
        TimelineStep,
    )
    from workflows.search import INCIDENT_ID, PHASE, RECOVERY_STRATEGY, SERVICE_NAME, SEVERITY

ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
)
ACTIVITY_TIMEOUT = timedelta(seconds=15)
# Joining an incident is retried this long (Temporal down, a worker restarting), then given up.
JOIN_GIVE_UP = timedelta(minutes=10)


@workflow.defn
class ErrorRecoveryWorkflow:
    """Recovers one error stream of one service and always leaves routing clean."""

    @workflow.init
    def __init__(self, data: RecoveryInput) -> None:
        self._input = data
        self._phase = RecoveryPhase.waiting
        self._plan: RoutePlan | None = None
        self._failed: set[str] = set()
        self._cascading: set[str] = set()
        self._severity: Severity | None = None
        self._incident_id: str | None = None
        self._joins: list[asyncio.Task[JoinedIncident]] = []  # incident joins under way
        self._joined: dict[str, dict[str, object]] = {}  # incident -> what it was last told
        self._errors = 0
        self._results: dict[str, ReportResult] = {}
        self._restore_fraction = 0.0
        self._escalated = False
        self._escalate_at: datetime | None = None
        self._declared_minutes: float | None = None  # the first report's timeToResolution
        self._unknown_plans: list[str] = []  # recovery plan ids reported that name no plan
        self._last_error_at: datetime | None = None
        self._resolve: ResolveRequest | None = None
        self._cancel: CancelRequest | None = None
        self._steps = 0
        self._timeline: list[TimelineStep] = []
        self._ended_at: datetime | None = None
        self._lock = asyncio.Lock()
        # Here, not in run: with update-with-start the first error's handler runs before run.
        self._started_at: datetime = workflow.now()
        self._note("started", f"source={data.source}")

    # ---- run ----

    @workflow.run
    async def run(self, data: RecoveryInput) -> RecoveryStatus:
        """Drive the recovery to an end and return the final status."""
        config = data.config
        self._set_search_attributes()
        deadline = self._started_at + timedelta(minutes=config.max_monitoring_minutes)
        got_error = await self._wait(
            lambda: self._plan is not None or self._stopping(), deadline - workflow.now()
        )
        outcome = RecoveryPhase.unresolved
        reason = "no error with a route was reported"
        if got_error and not self._stopping():
            outcome, reason = await self._monitor(deadline)
        if self._cancel is not None:
            outcome, reason = RecoveryPhase.cancelled, self._cancel.reason
        elif self._resolve is not None:
            outcome, reason = (
                RecoveryPhase.resolved,
                f"resolved by operator: {self._resolve.reason}",
            )
        await self._finish(outcome, reason)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._status()

    async def _monitor(self, deadline: datetime) -> tuple[RecoveryPhase, str]:
        """Health-check the failed providers until they are back and traffic is restored."""
        config = self._input.config
        interval = timedelta(seconds=config.check_interval_seconds)
        healthy_streak = 0
        while not self._stopping():
            now = workflow.now()
            if now >= deadline:
                return RecoveryPhase.unresolved, "monitoring maximum reached"
            await self._maybe_escalate()
            errors_before = self._errors
            await self._wait_for_errors(errors_before, min(interval, deadline - now))
            if self._stopping():
                break
            if self._errors != errors_before:
                healthy_streak = 0
                continue
            check = await self._check_failed()
            healthy_streak = healthy_streak + 1 if check.all_healthy else 0
            if healthy_streak < config.healthy_checks_to_restore or not self._window_passed():
                continue
            if await self._staged_restore():
                return RecoveryPhase.resolved, "providers healthy; traffic restored in stages"
            healthy_streak = 0
        return RecoveryPhase.cancelled, ""

    async def _staged_restore(self) -> bool:
        """Give traffic back stage by stage; False (and fully re-routed) if errors return."""
        assert self._plan is not None
        hold = timedelta(seconds=self._stage_hold())
        for fraction in self._plan.restore_stages or [1.0]:
            if fraction < 1.0:
                async with self._lock:  # report_error re-routes under the same lock
                    errors_before = self._errors
                    await self._apply(fraction, event="recovery_stage_restored")
                self._phase = RecoveryPhase.restoring
                self._set_search_attributes()
                self._note("stage_restored", f"{fraction:.0%} of traffic back on the providers")
                await self._wait_for_errors(errors_before, hold)
                if self._stopping():
                    return False
                check = await self._check_failed()
                if self._errors != errors_before or not check.all_healthy:
                    await self._abort_restore(fraction, check)
                    return False
        self._restore_fraction = 1.0
        self._note("stage_restored", "100% of traffic back on the providers")
        return True

    async def _abort_restore(self, fraction: float, check: HealthCheckResult) -> None:
        why = "new errors" if check.all_healthy else "providers unhealthy again"
        async with self._lock:
            await self._apply(0.0, event="recovery_restore_aborted")
        self._phase = RecoveryPhase.escalated if self._escalated else RecoveryPhase.rerouted
        self._set_search_attributes()
        self._note("restore_aborted", f"at {fraction:.0%}: {why}")

    async def _maybe_escalate(self) -> None:
        if self._escalated or self._escalate_at is None or workflow.now() < self._escalate_at:
            return
        self._escalated = True
        self._phase = RecoveryPhase.escalated
        self._set_search_attributes()
        self._note("escalated", "timeToResolution passed; still monitoring")
        await self._event(
            "recovery_escalated", stream_status="escalated", payload={"errorCount": self._errors}
        )

    # ---- updates and queries ----

    @workflow.update
    async def report_error(self, report: ErrorReport) -> ReportResult:
        """Join an error to this recovery: exclude its failed providers, re-select the route."""
        async with self._lock:
            if report.request_key and report.request_key in self._results:
                return self._results[report.request_key]
            self._errors += 1
            number = self._errors
            self._last_error_at = workflow.now()
            self._failed |= set(report.failed_providers)
            self._cascading |= set(report.cascading_services)
            self._severity = worst_severity(self._severity, report.severity)
            if report.incident_id is not None:
                self._incident_id = report.incident_id
            if self._escalate_at is None:
                self._declared_minutes = report.time_to_resolution_minutes
                self._escalate_at = workflow.now() + timedelta(
                    minutes=report.time_to_resolution_minutes
                )
            self._note("error_reported", f"#{number} {report.error_type} ({report.severity})")
            coordination_id = (
                f"backend_error_coordination_{int(workflow.now().timestamp())}_"
                f"{workflow.uuid4().hex[:6]}"
            )
            # A local activity: one transaction, no task-queue round trips on the failover path.
            handled = await workflow.execute_local_activity_method(
                RecoverySteps.handle_error,
                HandleErrorInput(
                    key=self._key("error", number),
                    workflow_id=self._id,
                    service=self._service,
                    stream_id=self._input.stream_id,
                    report=report,
                    error_number=number,
                    failed_providers=sorted(self._failed),
                    severity=self._severity or report.severity,
                    coordination_id=coordination_id,
                    pinned_plan_id=self._plan.recovery_plan_id if self._plan else None,
                ),
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            )
            if handled.plan is None:
                self._note("no_route", handled.no_route or "")
                raise ApplicationError(
                    handled.no_route or "no eligible node",
                    *handled.exclusions,
                    type="NoEligibleNode",
                    non_retryable=True,
                )
            plan = handled.plan
            self._plan = plan
            if plan.handled_severity is not None:  # raised when the caller's retries are spent
                self._severity = worst_severity(self._severity, Severity(plan.handled_severity))
            unknown = plan.requested_plan_id if plan.plan_status == "unknown" else None
            if unknown is not None and unknown not in self._unknown_plans:
                self._unknown_plans.append(unknown)
                self._note("unknown_recovery_plan", f"{unknown}: no such plan for the service")
            self._restore_fraction = 0.0
            if self._phase in (RecoveryPhase.waiting, RecoveryPhase.restoring):
                self._phase = RecoveryPhase.escalated if self._escalated else RecoveryPhase.rerouted
            self._set_search_attributes()
            self._note(
                "route_applied", f"{plan.selected.node_id} via {plan.strategy} ({plan.action})"
            )
            result = ReportResult(
                workflow_id=self._id,
                coordination_id=handled.coordination_id or coordination_id,
                error_count=number,
                joined_existing=number > 1,
                plan=plan,
                phase=self._phase,
            )
            if report.request_key:
                self._results[report.request_key] = result
            if report.incident_id is not None:
                self._join_incident(report, plan)
            return result

    @report_error.validator
    def _validate_report(self, report: ErrorReport) -> None:
        if self._phase in TERMINAL_PHASES or self._stopping():
            raise ValueError("this recovery has ended; a new error starts a new recovery")

    @workflow.update
    async def resolve(self, request: ResolveRequest) -> RecoveryStatus:
        """Operator: the problem is fixed; restore routing now and end as resolved."""
        self._resolve = request
        self._note("resolve_requested", request.reason)
        await workflow.wait_condition(lambda: self._phase in TERMINAL_PHASES)
        return self._status()

    @resolve.validator
    def _validate_resolve(self, request: ResolveRequest) -> None:
        self._refuse_if_ended()

    @workflow.update
    async def cancel(self, request: CancelRequest) -> RecoveryStatus:
        """Operator: stop this recovery and remove its override."""
        self._cancel = request
        self._note("cancel_requested", request.reason)
        await workflow.wait_condition(lambda: self._phase in TERMINAL_PHASES)
        return self._status()

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        self._refuse_if_ended()

    @workflow.query
    def status(self) -> RecoveryStatus:
        """Phase, timeline, route, failed providers, error count and strategy."""
        return self._status()

    # ---- helpers ----

    @property
    def _id(self) -> str:
        return workflow.info().workflow_id

    @property
    def _service(self) -> str:
        return self._input.service

    def _stopping(self) -> bool:
        return self._cancel is not None or self._resolve is not None

    def _refuse_if_ended(self) -> None:
        if self._phase in TERMINAL_PHASES or self._stopping():
            raise ValueError("this recovery has already ended or is ending")

    def _key(self, step: str, number: int | None = None) -> str:
        """Ledger key: workflow id + run id + step, so a later run of the same id starts fresh."""
        if number is None:
            self._steps += 1
            number = self._steps
        return f"{self._id}/{workflow.info().run_id}/{step}/{number}"

    def _stage_hold(self) -> float:
        assert self._plan is not None
        configured = self._input.config.stage_hold_seconds
        return configured if configured is not None else self._plan.stage_hold_seconds

    def _window_passed(self) -> bool:
        assert self._plan is not None and self._last_error_at is not None
        configured = self._input.config.monitoring_seconds
        window = configured if configured is not None else self._plan.monitoring_seconds
        return workflow.now() - self._last_error_at >= timedelta(seconds=window)

    async def _wait_for_errors(self, seen: int, limit: timedelta) -> None:
        """Sleep up to `limit`, waking early on a new error or a stop request."""
        await self._wait(lambda: self._stopping() or self._errors != seen, limit)

    async def _wait(self, condition: Callable[[], bool], limit: timedelta) -> bool:
        """wait_condition with a time limit; True when the condition became true."""
        if limit <= timedelta(0):
            return condition()
        try:
            await workflow.wait_condition(condition, timeout=limit)
            return True
        except TimeoutError:
            return False

    async def _apply(
        self,
        fraction: float,
        *,
        event: str = "recovery_route_applied",
        coordination_id: str | None = None,
        operation: str = "",
    ) -> None:
        assert self._plan is not None
        self._restore_fraction = fraction
        await workflow.execute_activity_method(
            RecoverySteps.apply_override,
            ApplyOverrideInput(
                key=self._key("override"),
                workflow_id=self._id,
                service=self._service,
                stream_id=self._input.stream_id,
                plan=self._plan,
                restore_fraction=fraction,
                coordination_id=coordination_id,
                operation=operation,
                event=event,
            ),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )

    async def _check_failed(self) -> HealthCheckResult:
        return await workflow.execute_activity_method(
            RecoverySteps.check_health,
            HealthCheckInput(node_ids=sorted(self._failed)),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )

    async def _event(
        self,
        event_type: str,
        *,
        stream_status: str | None = None,
        payload: dict[str, object] | None = None,
    ) -> None:
        await workflow.execute_activity_method(
            RecoverySteps.publish_recovery_event,
            RecoveryEventInput(
                key=self._key("event"),
                workflow_id=self._id,
                service=self._service,
                stream_id=self._input.stream_id,
                event_type=event_type,
                stream_status=stream_status,
                payload=payload or {},
            ),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )

    def _join_incident(self, report: ErrorReport, plan: RoutePlan) -> None:
        """Join the stream to the report's incident in the background (add_member merges a
        repeated join of the same recovery)."""
        assert report.incident_id is not None
        now = workflow.now()
        member = IncidentMember(
            recovery_workflow_id=self._id,
            stream_id=self._input.stream_id,
            service=self._service,
            error_type=report.error_type,
            severity=report.severity,
            failed_providers=sorted(set(report.failed_providers)),
            cascading_services=sorted(set(report.cascading_services)),
            revenue_at_risk=report.revenue_at_risk,
            customer_impact=report.customer_impact,
            rule=report.incident_rule,
            joined_at=now,
            expected_resolution_at=now + timedelta(minutes=plan.estimated_resolution_minutes),
        )
        told = member.model_dump(exclude={"joined_at", "expected_resolution_at", "rule"})
        if self._joined.get(report.incident_id) == told:
            return  # the same figures again: the incident knows them
        self._joined[report.incident_id] = told
        self._joins.append(
            workflow.start_activity_method(
                IncidentSteps.join_incident,
                JoinIncidentInput(incident_id=report.incident_id, member=member),
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                schedule_to_close_timeout=JOIN_GIVE_UP,
                retry_policy=ACTIVITY_RETRY,
            )
        )

    async def _settle_joins(self) -> None:
        """Wait for the incident joins under way: the incident must know its member before
        the member ends. The incident actually joined becomes the recovery's."""
        joins, self._joins = self._joins, []
        for join in joins:
            try:
                joined = await join
            except ActivityError as exc:  # given up: the recovery itself is not at stake
                self._note("incident_join_failed", str(exc.cause or exc))
                continue
            if joined.incident_id != self._incident_id:
                self._incident_id = joined.incident_id
                self._note("incident_changed", f"joined {joined.incident_id}")

    async def _finish(self, outcome: RecoveryPhase, reason: str) -> None:
        await self._settle_joins()
        hold = sorted(self._failed) if outcome is RecoveryPhase.unresolved else []
        await workflow.execute_activity_method(
            RecoverySteps.finish_recovery,
            FinishInput(
                key=self._key("finish"),
                workflow_id=self._id,
                service=self._service,
                stream_id=self._input.stream_id,
                outcome=outcome,
                reason=reason,
                hold_open_nodes=hold,
                run_key=f"{self._id}/{workflow.info().run_id}",
                strategy=self._plan.strategy if self._plan else None,
                started_at=self._started_at,
                ended_at=workflow.now(),
                declared_minutes=self._declared_minutes,
                recovery_plan_id=self._plan.recovery_plan_id if self._plan else None,
            ),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        self._phase = outcome
        self._ended_at = workflow.now()
        self._set_search_attributes()
        self._note(outcome.value, reason)

    def _note(self, step: str, detail: str = "") -> None:
        self._timeline.append(TimelineStep(at=workflow.now(), step=step, detail=detail))

    def _set_search_attributes(self) -> None:
        updates = [
            SERVICE_NAME.value_set(self._service),
            PHASE.value_set(self._phase.value),
        ]
        if self._severity:
            updates.append(SEVERITY.value_set(self._severity.value))
        if self._plan:
            updates.append(RECOVERY_STRATEGY.value_set(self._plan.strategy))
        if self._incident_id is not None:
            updates.append(INCIDENT_ID.value_set(self._incident_id))
        workflow.upsert_search_attributes(updates)

    def _status(self) -> RecoveryStatus:
        return RecoveryStatus(
            workflow_id=self._id,
            service=self._service,
            stream_id=self._input.stream_id,
            source=self._input.source,
            phase=self._phase,
            severity=self._severity,
            strategy=self._plan.strategy if self._plan else None,
            action=self._plan.action if self._plan else None,
            selected_node=self._plan.selected.node_id if self._plan else None,
            failed_providers=sorted(self._failed),
            cascading_services=sorted(self._cascading),
            error_count=self._errors,
            restore_fraction=self._restore_fraction,
            escalated=self._escalated,
            started_at=self._started_at,
            ended_at=self._ended_at,
            timeline=list(self._timeline),
            incident_id=self._incident_id,
            recovery_plan_id=self._plan.recovery_plan_id if self._plan else None,
            unknown_plan_ids=list(self._unknown_plans),
        )
