"""The recovery path's side of incidents: correlate a reported error before its recovery
takes it. The report then carries the incident to the recovery, which joins it in the
background, durably (workflows/recovery.py; docs/INCIDENTS.md)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from api.errors import field_error
from api.runtime import ApiRuntime
from api.schemas.recovery import BackendAgentErrorRequest
from routing.incidents import ErrorSignal
from store.db import transaction
from store.incidents import claim_incident, is_open, release_claim
from temporal_client.incidents import new_incident_id
from workflows.incident_types import incident_workflow_id


@dataclass(frozen=True, slots=True)
class Correlated:
    """The incident an error belongs to, the rule that said so, and whether it is new."""

    incident_id: str
    rule: str
    new: bool


async def correlate_report(
    runtime: ApiRuntime, body: BackendAgentErrorRequest, now: datetime
) -> Correlated:
    """Which incident the error joins: the caller's (422 unless it is open), an open one by
    the correlation rules, or a new one."""
    minutes = runtime.settings.incident_correlation_minutes
    signal = ErrorSignal(
        service=body.service_name,
        failed_nodes=frozenset(body.error_details.failed_providers),
        cascading=frozenset(body.error_details.cascading_services),
        at=now,
        incident_id=body.incident_id,
        stream_id=body.stream_id,
    )

    def correlate() -> Correlated:
        new_id = new_incident_id(now)
        with transaction(runtime.sessions) as session:
            if body.incident_id is not None and not is_open(session, body.incident_id):
                raise field_error(
                    "incidentId", f"no open incident {body.incident_id!r}: it ended or never was"
                )
            found = claim_incident(
                session,
                signal,
                new_id,
                incident_workflow_id(new_id),
                timedelta(minutes=minutes),
            )
        assert found.incident_id is not None
        return Correlated(found.incident_id, found.rule, found.rule == "new")

    return await asyncio.to_thread(correlate)


async def release(runtime: ApiRuntime, correlated: Correlated) -> None:
    """The error's recovery was refused: a new incident's claim goes (nothing joined it)."""
    if correlated.new:

        def drop() -> None:
            with transaction(runtime.sessions) as session:
                release_claim(session, correlated.incident_id)

        await asyncio.to_thread(drop)
