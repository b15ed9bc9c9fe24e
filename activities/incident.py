"""Activities of incidents: IncidentWorkflow's row in the store (store/incidents.py) and its
events, and the recovery's step that joins its stream to an incident (update-with-start
through the worker's Temporal client)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.client import Client

from store.base import utcnow
from store.events import publish
from store.incidents import stream_statuses, write_incident
from store.ledger import apply_once
from switchyard.settings import Settings
from temporal_client.incidents import IncidentEnded, join_incident, new_incident_id
from workflows.incident_types import (
    JOIN_INCIDENT,
    MEMBER_PHASES,
    RECORD_INCIDENT,
    IncidentPhase,
    IncidentSteps,
    JoinedIncident,
    JoinIncidentInput,
    MemberPhases,
    MemberPhasesInput,
    RecordedIncident,
    RecordIncidentInput,
    incident_workflow_id,
)


class IncidentActivities(IncidentSteps):
    """Store effects of incidents; built once per worker with the session factory."""

    def __init__(
        self, sessions: sessionmaker[Session], settings: Settings, client: Client | None = None
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.client = client

    def all(self) -> list[Callable[..., Any]]:
        """Every activity of this class, for the worker."""
        return [self.record_incident, self.member_phases, self.join_incident]

    @activity.defn(name=RECORD_INCIDENT)
    def record_incident(self, data: RecordIncidentInput) -> RecordedIncident:
        """Upsert the incident's row (members, impact, blast radius) and publish the event."""
        status = data.status

        def effect(session: Session) -> dict[str, Any]:
            radius = write_incident(
                session=session,
                incident_id=status.incident_id,
                workflow_id=incident_workflow_id(status.incident_id),
                phase=status.phase.value,
                ended=status.phase is IncidentPhase.resolved,
                opened_at=status.opened_at,
                last_error_at=status.last_error_at,
                ended_at=status.ended_at,
                end_reason=status.end_reason,
                severity=status.severity.value,
                customer_impact=status.customer_impact,
                revenue_at_risk=status.revenue_at_risk,
                expected_resolution_at=status.expected_resolution_at,
                failed_nodes=status.failed_nodes,
                services=status.services,
                cascading=status.cascading,
                members=[m.model_dump(mode="json") for m in status.members],
                now=utcnow(),
            )
            publish(
                session,
                data.event,
                {
                    "incidentId": status.incident_id,
                    "workflowId": incident_workflow_id(status.incident_id),
                    "phase": status.phase.value,
                    "members": len(status.members),
                    "services": status.services,
                    "cascadingServices": status.cascading,
                    "blastRadius": radius,
                    "revenueAtRisk": status.revenue_at_risk,
                    "severity": status.severity.value,
                    "customerImpact": status.customer_impact,
                    "detail": data.detail,
                },
                workflow_id=incident_workflow_id(status.incident_id),
            )
            return RecordedIncident(blast_radius=radius).model_dump()

        return RecordedIncident.model_validate(apply_once(self.sessions, data.key, effect))

    @activity.defn(name=MEMBER_PHASES)
    def member_phases(self, data: MemberPhasesInput) -> MemberPhases:
        """The current status of the members' error streams (a read: no ledger row)."""
        with self.sessions() as session:
            return MemberPhases(statuses=stream_statuses(session, data.stream_ids))

    @activity.defn(name=JOIN_INCIDENT)
    async def join_incident(self, data: JoinIncidentInput) -> JoinedIncident:
        """Add the recovery to its incident, starting the incident if it does not run yet.

        Idempotent: the incident merges a repeated member. When the incident ended between
        the correlation and this step, the member opens a new incident, named from the old
        one and the recovery so that a retry opens the same one.
        """
        if self.client is None:
            raise RuntimeError("IncidentActivities.join_incident needs the worker's client")
        member = data.member
        try:
            joined = await join_incident(self.client, self.settings, data.incident_id, member)
            return JoinedIncident(incident_id=data.incident_id, member_count=joined.member_count)
        except IncidentEnded:
            key = f"{data.incident_id}/{member.recovery_workflow_id}"
            replacement = new_incident_id(member.joined_at, key)
            alone = member.model_copy(update={"rule": "new"})
            joined = await join_incident(self.client, self.settings, replacement, alone)
            return JoinedIncident(incident_id=replacement, member_count=joined.member_count)
