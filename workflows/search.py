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

# The Temporal UI's (and `temporal workflow list --query`'s) filter for what operators open
# it for: recoveries, emergencies and incidents, without the health monitor's runs.
OPERATOR_WORKFLOW_TYPES = ("ErrorRecoveryWorkflow", "EmergencyOverrideWorkflow", "IncidentWorkflow")
OPERATOR_WORKFLOWS_QUERY = "WorkflowType IN ({})".format(
    ", ".join(f"'{name}'" for name in OPERATOR_WORKFLOW_TYPES)
)
