"""Typed search attributes the recovery, emergency and incident workflows keep current."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

SERVICE_NAME = SearchAttributeKey.for_keyword("ServiceName")
SEVERITY = SearchAttributeKey.for_keyword("Severity")
RECOVERY_STRATEGY = SearchAttributeKey.for_keyword("RecoveryStrategy")
PHASE = SearchAttributeKey.for_keyword("Phase")
# On an incident and on each of its member recoveries: `IncidentId = "inc_..."` lists them.
INCIDENT_ID = SearchAttributeKey.for_keyword("IncidentId")

SEARCH_ATTRIBUTES = (SERVICE_NAME, SEVERITY, RECOVERY_STRATEGY, PHASE, INCIDENT_ID)
