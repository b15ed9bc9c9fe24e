"""Typed search attributes the recovery and emergency workflows keep current."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

SERVICE_NAME = SearchAttributeKey.for_keyword("ServiceName")
SEVERITY = SearchAttributeKey.for_keyword("Severity")
RECOVERY_STRATEGY = SearchAttributeKey.for_keyword("RecoveryStrategy")
PHASE = SearchAttributeKey.for_keyword("Phase")

SEARCH_ATTRIBUTES = (SERVICE_NAME, SEVERITY, RECOVERY_STRATEGY, PHASE)
