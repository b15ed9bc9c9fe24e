"""Business context: which requests the caller's business stakes escalate to CRITICAL.

A request is escalated, exactly as if it had been sent with priority CRITICAL (the strategy
selection's critical-traffic rule, an incident's reservation for the most important traffic),
when its ``businessContext`` says any of:

- ``revenueImpact`` at or above the server's threshold (settings: ``escalation_revenue_impact``);
- ``timeSensitivity: urgent``;
- ``operationalPriority: high`` or ``critical``.

The fields that called for it are kept on the request (``escalated_by``) and reported with the
decision, also when the request was CRITICAL already.
"""

from __future__ import annotations

from dataclasses import replace

from routing.types import (
    BusinessContext,
    OperationalPriority,
    Priority,
    RoutingRequest,
    TimeSensitivity,
)

# revenueImpact from which a request counts as critical, unless the server configures another.
DEFAULT_ESCALATION_REVENUE = 10_000.0
ESCALATING_PRIORITIES = frozenset({OperationalPriority.high, OperationalPriority.critical})


def escalation_reasons(context: BusinessContext, revenue_threshold: float) -> tuple[str, ...]:
    """The businessContext fields (wire names) that call for escalation, in field order."""
    reasons: list[str] = []
    if context.revenue_impact is not None and context.revenue_impact >= revenue_threshold:
        reasons.append("businessContext.revenueImpact")
    if context.operational_priority in ESCALATING_PRIORITIES:
        reasons.append("businessContext.operationalPriority")
    if context.time_sensitivity is TimeSensitivity.urgent:
        reasons.append("businessContext.timeSensitivity")
    return tuple(reasons)


def escalate(request: RoutingRequest, revenue_threshold: float) -> RoutingRequest:
    """The request as routing treats it: CRITICAL when its business context calls for it."""
    reasons = escalation_reasons(request.business, revenue_threshold)
    if not reasons:
        return request
    return replace(request, priority=Priority.CRITICAL, escalated_by=reasons)
