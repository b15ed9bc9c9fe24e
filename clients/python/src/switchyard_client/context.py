"""Routing context in Python names, sent in execute-coordination's camelCase blocks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

# Python name -> (the blocks it sits in, its wire name), as api/schemas/coordination.py has it.
_ROUTING = ("routingContext",)
FIELDS: dict[str, tuple[tuple[str, ...], str]] = {
    "request_id": (("routingContext", "requestMetadata"), "requestId"),
    "priority": (("routingContext", "requestMetadata"), "priority"),
    "business_criticality": (("routingContext", "requestMetadata"), "businessCriticality"),
    "remaining_budget": (("routingContext", "budgetConstraints"), "remainingBudget"),
    "cost_per_request_limit": (("routingContext", "budgetConstraints"), "costPerRequestLimit"),
    "budget_period": (("routingContext", "budgetConstraints"), "budgetPeriod"),
    "current_latency": (("routingContext", "performanceContext"), "currentLatency"),
    "target_latency": (("routingContext", "performanceContext"), "targetLatency"),
    "current_throughput": (("routingContext", "performanceContext"), "currentThroughput"),
    "target_throughput": (("routingContext", "performanceContext"), "targetThroughput"),
    "preferred_strategy": (_ROUTING, "preferredStrategy"),
    # Hard constraints: never broken, by Switchyard or by a local decision.
    "allowed_regions": (("routingContext", "constraints"), "allowedRegions"),
    "excluded_regions": (("routingContext", "constraints"), "excludedRegions"),
    "required_tags": (("routingContext", "constraints"), "requiredTags"),
    "excluded_nodes": (("routingContext", "constraints"), "excludedNodes"),
    "failed_providers": (_ROUTING, "failedProviders"),
    "error_stream_id": (("backendAgentContext",), "errorStreamId"),
    "monitoring_session_id": (("backendAgentContext",), "monitoringSessionId"),
    "revenue_impact": (("businessContext",), "revenueImpact"),
    "customer_impact": (("businessContext",), "customerImpact"),
    "operational_priority": (("businessContext",), "operationalPriority"),
    "time_sensitivity": (("businessContext",), "timeSensitivity"),
    "require_backend_agent_sync": (("coordinationRequirements",), "requireBackendAgentSync"),
    "require_real_time_monitoring": (("coordinationRequirements",), "requireRealTimeMonitoring"),
    "require_predictive_analytics": (("coordinationRequirements",), "requirePredictiveAnalytics"),
    "require_emergency_override": (("coordinationRequirements",), "requireEmergencyOverride"),
}
# The server accepts at most this many failedProviders.
MAX_FAILED_PROVIDERS = 20


@dataclass(frozen=True)
class Constraints:
    """A request's hard constraints (an empty set constrains nothing)."""

    allowed_regions: frozenset[str] = frozenset()
    excluded_regions: frozenset[str] = frozenset()
    required_tags: frozenset[str] = frozenset()
    excluded_nodes: frozenset[str] = frozenset()

    @classmethod
    def of(cls, context: Mapping[str, object]) -> Constraints:
        """The constraints the routing context names."""

        def names(key: str) -> frozenset[str]:
            value = context.get(key) or ()
            if isinstance(value, str):
                raise TypeError(f"{key} takes a list, not a string")
            return frozenset(_strings(value))

        return cls(
            names("allowed_regions"),
            names("excluded_regions"),
            names("required_tags"),
            names("excluded_nodes"),
        )


@dataclass(frozen=True)
class RoutingRequest:
    """One decision to make: the wire body, and what a local decision needs of it."""

    service: str
    operation: str
    body: dict[str, Any]
    failed_providers: tuple[str, ...]
    request_id: str | None
    cost_per_request_limit: float | None
    remaining_budget: float | None
    constraints: Constraints = field(default_factory=lambda: Constraints())


def check_context(context: Mapping[str, object]) -> None:
    """TypeError naming an unknown routing-context name (before anything is sent)."""
    for name in context:
        if name not in FIELDS:
            known = ", ".join(sorted(FIELDS))
            raise TypeError(f"unknown routing context {name!r}; known: {known}")


def routing_request(
    service: str,
    operation: str,
    context: Mapping[str, object],
    failed: Iterable[str] = (),
) -> RoutingRequest:
    """The request for `service`/`operation`; `failed` adds nodes this call already failed on."""
    check_context(context)
    given = context.get("failed_providers") or ()
    if isinstance(given, str):
        raise TypeError("failed_providers takes a list of node ids, not a string")
    failed_providers = tuple(dict.fromkeys([*_strings(given), *failed]))[-MAX_FAILED_PROVIDERS:]
    body: dict[str, Any] = {"serviceName": service, "operation": operation}
    for name, value in context.items():
        if value is None or name == "failed_providers":
            continue
        blocks, wire = FIELDS[name]
        block = body
        for key in blocks:
            block = block.setdefault(key, {})
        if isinstance(value, Enum):
            value = value.value
        elif isinstance(value, set | frozenset | tuple):
            value = list(value)
        block[wire] = value
    if failed_providers:
        body.setdefault("routingContext", {})["failedProviders"] = list(failed_providers)
    return RoutingRequest(
        service=service,
        operation=operation,
        body=body,
        failed_providers=failed_providers,
        request_id=_optional_str(context.get("request_id")),
        cost_per_request_limit=_optional_float(context.get("cost_per_request_limit")),
        remaining_budget=_optional_float(context.get("remaining_budget")),
        constraints=Constraints.of(context),
    )


def _strings(values: object) -> list[str]:
    if not isinstance(values, Iterable):
        raise TypeError("expected a list of names")
    return [str(value) for value in values]


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def _optional_float(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)
