"""IncidentWorkflow: the error streams of one cause, as one durable incident.

The recovery path adds each stream's recovery as a member (update-with-start, from the API
or the monitor, after the recovery took the error: the incident never delays a recovery).
The incident keeps its members, the services hit directly and through cascades, what is at
risk in total, and a timeline; it records itself in the store (where correlation, the API and
the routing snapshots read it) and polls its members' recoveries on a timer. It ends when
every member recovery has ended, or when an operator resolves it, and continues-as-new when
its history grows long.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from routing.recovery import worst_severity
    from workflows.incident_types import (
        IncidentInput,
        IncidentMember,
        IncidentPhase,
        IncidentState,
        IncidentStatus,
        IncidentSteps,
        JoinResult,
        MemberPhasesInput,
        RecordIncidentInput,
        ResolveIncident,
        TimelineEntry,
        worst_impact,
    )
    from workflows.search import INCIDENT_ID, PHASE, SERVICE_NAME

ACTIVITY_TIMEOUT = timedelta(seconds=15)
ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
)


@workflow.defn
class IncidentWorkflow:
    """One incident: its member recoveries, its impact, and when it is over."""

    @workflow.init
    def __init__(self, data: IncidentInput) -> None:
        self._input = data
        self._state = (
            data.carried.model_copy(deep=True)
            if data.carried is not None
            else IncidentState(incident_id=data.incident_id, opened_at=workflow.now())
        )
        self._resolve: ResolveIncident | None = None
        self._lock = asyncio.Lock()  # one change of the state (and its record) at a time
        self._joined = 0  # members joined in this run
        self._records = 0  # record steps in this run
        self._end_recorded = False  # the store has the incident's end

    @workflow.run
    async def run(self, data: IncidentInput) -> IncidentStatus:
        """Watch the members until every recovery ended or an operator resolved it."""
        poll = timedelta(seconds=data.poll_seconds)
        while self._state.phase is not IncidentPhase.resolved:
            await self._wait(lambda: self._resolve is not None, poll)
            if self._resolve is not None:
                reason = f"resolved by {self._resolve.operator or 'an operator'}: "
                await self._end(reason + self._resolve.reason)
                break
            await self._poll_members()
            members = self._state.members
            if members and all(m.ended for m in members):
                await self._end("every member recovery has ended")
                break
            if self._long():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._input.model_copy(update={"carried": self._state}))
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._status()

    # ---- updates and query ----

    @workflow.update
    async def add_member(self, member: IncidentMember) -> JoinResult:
        """Join a stream's recovery to the incident (a repeated report updates its member)."""
        async with self._lock:
            members = self._state.members
            found = next(
                (m for m in members if m.recovery_workflow_id == member.recovery_workflow_id),
                None,
            )
            if found is None:
                members.append(member)
                self._joined += 1
                detail = f"{member.service} stream {member.stream_id} ({member.rule})"
                self._note("member_joined", detail)
            else:
                _merge(found, member)
                self._note("member_reported", f"{member.service} stream {member.stream_id}")
            self._derive_phase()
            first = len(members) == 1 and found is None
            await self._record("incident_opened" if first else "incident_updated")
            return JoinResult(
                incident_id=self._state.incident_id,
                joined_existing=len(members) > 1,
                member_count=len(members),
                revenue_at_risk=self._state.revenue_at_risk(),
                phase=self._state.phase,
            )

    @add_member.validator
    def _validate_member(self, member: IncidentMember) -> None:
        if self._state.phase is IncidentPhase.resolved or self._resolve is not None:
            raise ValueError("this incident has ended; the error opens a new one")

    @workflow.update
    async def resolve(self, request: ResolveIncident) -> IncidentStatus:
        """Operator: the incident is over; end it now (its recoveries go on by themselves)."""
        self._resolve = request
        # Answered once the store has the end: the caller reads it right after.
        await workflow.wait_condition(lambda: self._end_recorded)
        return self._status()

    @resolve.validator
    def _validate_resolve(self, request: ResolveIncident) -> None:
        if self._state.phase is IncidentPhase.resolved or self._resolve is not None:
            raise ValueError("this incident has already ended")

    @workflow.query
    def status(self) -> IncidentStatus:
        """Members, services, impact, phase and timeline."""
        return self._status()

    # ---- steps ----

    async def _poll_members(self) -> None:
        running = [m for m in self._state.members if not m.ended]
        if not running:
            return
        phases = await workflow.execute_activity_method(
            IncidentSteps.member_phases,
            MemberPhasesInput(stream_ids=[m.stream_id for m in running]),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        async with self._lock:
            moved = False
            for member in running:
                status = phases.statuses.get(member.stream_id)
                if status is not None and status != member.stream_status:
                    member.stream_status = status
                    self._note(
                        "member_moved", f"{member.service} stream {member.stream_id}: {status}"
                    )
                    moved = True
            if moved:
                self._derive_phase()
                await self._record("incident_updated")

    async def _end(self, reason: str) -> None:
        async with self._lock:
            self._state.phase = IncidentPhase.resolved
            self._state.ended_at = workflow.now()
            self._state.end_reason = reason
            self._note("resolved", reason)
            await self._record("incident_resolved", reason)
            self._end_recorded = True

    async def _record(self, event: str, detail: str = "") -> None:
        self._records += 1
        info = workflow.info()
        recorded = await workflow.execute_activity_method(
            IncidentSteps.record_incident,
            RecordIncidentInput(
                key=f"{info.workflow_id}/{info.run_id}/record/{self._records}",
                status=self._status(),
                event=event,
                detail=detail,
            ),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        self._state.blast_radius = recorded.blast_radius
        self._set_search_attributes()

    # ---- helpers ----

    def _derive_phase(self) -> None:
        running = [m for m in self._state.members if not m.ended]
        if any(m.stream_status == "escalated" for m in running):
            self._state.phase = IncidentPhase.escalated
        elif self._state.phase is not IncidentPhase.resolved:
            self._state.phase = IncidentPhase.recovering

    def _long(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested() or self._joined >= self._input.max_members_per_run
        )

    async def _wait(self, condition: Callable[[], bool], limit: timedelta) -> None:
        with contextlib.suppress(TimeoutError):  # the timeout is the poll interval
            await workflow.wait_condition(condition, timeout=limit)

    def _note(self, step: str, detail: str = "") -> None:
        self._state.timeline.append(TimelineEntry(at=workflow.now(), step=step, detail=detail))

    def _set_search_attributes(self) -> None:
        updates = [
            INCIDENT_ID.value_set(self._state.incident_id),
            PHASE.value_set(self._state.phase.value),
        ]
        services = self._state.services()
        if services:
            updates.append(SERVICE_NAME.value_set(services[0]))
        workflow.upsert_search_attributes(updates)

    def _status(self) -> IncidentStatus:
        state = self._state
        return IncidentStatus(
            incident_id=state.incident_id,
            phase=state.phase,
            opened_at=state.opened_at,
            last_error_at=state.last_error_at(),
            ended_at=state.ended_at,
            end_reason=state.end_reason,
            members=list(state.members),
            services=state.services(),
            cascading=state.cascading(),
            blast_radius=list(state.blast_radius),
            failed_nodes=state.failed_nodes(),
            revenue_at_risk=state.revenue_at_risk(),
            severity=state.severity(),
            customer_impact=state.customer_impact(),
            expected_resolution_at=state.expected_resolution_at(),
            timeline=list(state.timeline),
        )


def _merge(member: IncidentMember, report: IncidentMember) -> None:
    """A repeated report of a member's stream: its figures are the worst reported, once."""
    member.severity = worst_severity(member.severity, report.severity)
    member.revenue_at_risk = max(member.revenue_at_risk, report.revenue_at_risk)
    member.customer_impact = worst_impact(member.customer_impact, report.customer_impact)
    member.failed_providers = sorted(set(member.failed_providers) | set(report.failed_providers))
    member.cascading_services = sorted(
        set(member.cascading_services) | set(report.cascading_services)
    )
    if report.expected_resolution_at is not None:
        member.expected_resolution_at = report.expected_resolution_at
    if member.ended:  # the stream failed again: its recovery runs again
        member.stream_status = report.stream_status
