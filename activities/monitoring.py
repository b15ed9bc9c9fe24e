"""The monitor's worker side: the activities of the health sweep.

`sweep_health` re-scores every node in one transaction (store/health.py), and ends the
incidents claimed by a correlation that no recovery joined (store/incidents.py).
`start_recoveries` uses the worker's Temporal client to start an ErrorRecoveryWorkflow per
degraded node with update-with-start (USE_EXISTING), as backend-agent-error does, its error
correlated into an incident first (the recovery joins it). It is an activity rather than a
child workflow because a recovery needs its first error delivered as an update (a workflow
cannot send updates), must outlive the sweep run, and may already be running from an
earlier sweep or an agent's report.

Both are idempotent without a ledger row: the sweep recomputes from the store and a retry
finds the transitions already made (they are guarded by the breaker state it reads under
lock); a retried start finds the recovery running, and its report carries a request key the
recovery dedupes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from routing.incidents import Correlation, ErrorSignal
from routing.recovery import strands_service
from routing.types import RoutingSnapshot
from store.base import utcnow
from store.db import transaction
from store.health import monitoring_config, sweep
from store.incidents import claim_incident, end_stale_claims, release_claim
from store.snapshot import load_snapshot
from switchyard.settings import Settings
from temporal_client.incidents import new_incident_id
from temporal_client.recoveries import recovery_workflow_id, start_or_join_recovery
from workflows.health_sweep_types import (
    START_RECOVERIES,
    SWEEP_HEALTH,
    BreakerChange,
    DegradedNode,
    RecoveryStart,
    StartOutcome,
    StartRecoveriesInput,
    StartRecoveriesResult,
    SweepHealthInput,
    SweepHealthResult,
    SweepSteps,
    monitor_stream_id,
)
from workflows.incident_types import incident_workflow_id
from workflows.recovery_types import ErrorReport, RecoverySource

log = logging.getLogger("switchyard.monitor")


class MonitoringActivities(SweepSteps):
    """Health sweep activities; built once per worker with the store and the Temporal client."""

    def __init__(
        self, sessions: sessionmaker[Session], settings: Settings, client: Client | None = None
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.client = client
        self.config = monitoring_config(settings)

    def all(self) -> list[Callable[..., Any]]:
        """Every activity of this class, for the worker."""
        return [self.sweep_health, self.start_recoveries]

    @activity.defn(name=SWEEP_HEALTH)
    def sweep_health(self, data: SweepHealthInput) -> SweepHealthResult:
        """Re-score every node, half-open breakers whose break is over, list degraded nodes."""
        now = utcnow()
        with transaction(self.sessions) as session:
            update = sweep(session, now, self.config)
            # Incidents claimed by a correlation whose recovery never joined: ended.
            end_stale_claims(session, now)
        return SweepHealthResult(
            nodes=len(update.nodes),
            changed=update.changed,
            transitions=[
                BreakerChange(
                    node_id=t.node_id,
                    service=t.service,
                    previous_state=t.before.value,
                    state=t.after.value,
                    reason=t.reason,
                )
                for t in update.transitions
            ],
            degraded=[
                DegradedNode(
                    node_id=d.node_id,
                    service=d.service,
                    error_type=d.error_type,
                    severity=d.severity,
                    detail=d.detail,
                )
                for d in update.degraded
            ],
        )

    @activity.defn(name=START_RECOVERIES)
    async def start_recoveries(self, data: StartRecoveriesInput) -> StartRecoveriesResult:
        """Start a recovery for each degraded node that has none running.

        Services go in parallel; a service's nodes one after the other, each guarded against
        holding out the service's last nodes (routing.recovery.strands_service).
        """
        if self.client is None:
            raise ApplicationError("the worker gave this activity no Temporal client")
        client = self.client
        by_service: dict[str, list[DegradedNode]] = {}
        for node in data.nodes:
            by_service.setdefault(node.service, []).append(node)
        started = await asyncio.gather(
            *(
                self._start_service(client, service, nodes, data.request_key)
                for service, nodes in by_service.items()
            )
        )
        results = {start.node_id: start for starts in started for start in starts}
        return StartRecoveriesResult(recoveries=[results[node.node_id] for node in data.nodes])

    async def _start_service(
        self, client: Client, service: str, nodes: list[DegradedNode], request_key: str
    ) -> list[RecoveryStart]:
        snapshot = await asyncio.to_thread(self._snapshot, service)
        held: set[str] = set()  # nodes this sweep already holds out
        results = []
        for node in nodes:

            def strands(node_id: str) -> bool:
                failed = frozenset(held | {node_id})
                return strands_service(service, failed, snapshot, utcnow())

            result = await self._start(client, node, request_key, strands)
            if result.outcome in (StartOutcome.started, StartOutcome.joined):
                held.add(node.node_id)
            results.append(result)
        return results

    def _correlate(
        self, node: DegradedNode, stream_id: str, now: datetime, key: str
    ) -> Correlation:
        """The open incident the degraded node's error joins, claimed (store/incidents.py);
        a new one is named from the request key, so a retried step names the same."""
        signal = ErrorSignal(
            node.service, frozenset({node.node_id}), frozenset(), now, None, stream_id
        )
        window = timedelta(minutes=self.settings.incident_correlation_minutes)
        new_id = new_incident_id(now, key)
        with transaction(self.sessions) as session:
            return claim_incident(session, signal, new_id, incident_workflow_id(new_id), window)

    def _release(self, correlated: Correlation) -> None:
        if correlated.rule == "new" and correlated.incident_id is not None:
            with transaction(self.sessions) as session:
                release_claim(session, correlated.incident_id)

    def _snapshot(self, service: str) -> RoutingSnapshot:
        with self.sessions() as session:
            return load_snapshot(session, utcnow(), service=service)

    async def _start(
        self,
        client: Client,
        node: DegradedNode,
        request_key: str,
        strands: Callable[[str], bool],
    ) -> RecoveryStart:
        stream_id = monitor_stream_id(node.node_id)
        workflow_id = recovery_workflow_id(node.service, stream_id)
        try:
            described = await client.get_workflow_handle(workflow_id).describe()
            if described.status == WorkflowExecutionStatus.RUNNING:
                return RecoveryStart(
                    node_id=node.node_id,
                    workflow_id=workflow_id,
                    outcome=StartOutcome.already_running,
                )
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
        if strands(node.node_id):
            log.warning("monitor recovery for %s not started: no node would be left", node.node_id)
            return RecoveryStart(
                node_id=node.node_id,
                workflow_id=workflow_id,
                outcome=StartOutcome.would_strand,
                detail=f"holding {node.node_id} out would leave {node.service} no node",
            )
        key = f"{request_key}/{node.node_id}"
        now = utcnow()
        correlated = await asyncio.to_thread(self._correlate, node, stream_id, now, key)
        incident_id = correlated.incident_id
        report = ErrorReport(
            error_type=node.error_type,
            severity=node.severity,
            operation="health_monitoring",
            error_message=f"{node.node_id}: {node.detail}",
            failed_providers=[node.node_id],
            request_key=key,
            incident_id=incident_id,
            incident_rule=correlated.rule,
        )
        try:
            result = await start_or_join_recovery(
                client,
                self.settings,
                service=node.service,
                stream_id=stream_id,
                report=report,
                source=RecoverySource.monitor,
                summary=(
                    f"Recovery of {node.service}: monitor found {node.node_id} degraded "
                    f"({node.error_type}: {node.detail})"
                ),
            )
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            no_route = isinstance(cause, ApplicationError) and cause.type == "NoEligibleNode"
            log.warning("monitor recovery for %s refused: %s", node.node_id, cause or exc)
            await asyncio.to_thread(self._release, correlated)
            return RecoveryStart(
                node_id=node.node_id,
                workflow_id=workflow_id,
                outcome=StartOutcome.no_route if no_route else StartOutcome.refused,
                detail=str(cause or exc),
            )
        log.info("monitor started recovery %s for %s", workflow_id, node.node_id)
        return RecoveryStart(
            node_id=node.node_id,
            workflow_id=workflow_id,
            outcome=StartOutcome.joined if result.joined_existing else StartOutcome.started,
            selected_node=result.plan.selected.node_id,
            detail=node.detail,
        )
