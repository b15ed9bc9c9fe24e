"""Response models of coordination-analytics and performance-metrics, as in the contract."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import PlainSerializer

from api.schemas.common import ResponseModel


def _iso_millis(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# "2025-08-16T10:45:00.000Z", the contract's timestamp shape.
Timestamp = Annotated[datetime, PlainSerializer(_iso_millis, return_type=str)]


class Timeframe(StrEnum):
    """How far back performance-metrics looks."""

    hour = "1h"
    day = "24h"
    week = "7d"
    month = "30d"

    @property
    def window(self) -> timedelta:
        """The length of the timeframe."""
        return _WINDOWS[self.value]


class AnalyticsTimeframe(StrEnum):
    """How far back coordination-analytics looks; `all` covers every recorded coordination."""

    hour = "1h"
    day = "24h"
    week = "7d"
    month = "30d"
    all_time = "all"

    @property
    def window(self) -> timedelta | None:
        """The length of the timeframe; None for all time."""
        return _WINDOWS.get(self.value)


_WINDOWS = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}


COST_DEFINITION = (
    "costReduction = (reference - actual) / reference x 100, where actual is the estimated cost "
    "of the successful coordinations divided by their number, and reference what the same "
    "coordinations would have cost on each service's primary node (its first enabled, "
    "regular node in catalog order); negative when the decisions cost more"
)
RESOLUTION_DEFINITION = (
    "resolutionTimeImprovement = (declared - actual) / declared x 100, where actual is the "
    "mean duration in minutes of the resolved recoveries and declared the mean "
    "timeToResolution their first error reports gave; negative when they took longer"
)


class BeforeVsAfter(ResponseModel):
    """What the decisions cost against the primary nodes, and how fast recoveries resolved
    against what callers declared; percentages are null without data."""

    successful_calls: int
    cost_per_successful_call: float | None
    reference_cost_per_successful_call: float | None
    cost_reduction: float | None
    cost_definition: str = COST_DEFINITION
    resolved_recoveries: int
    average_resolution_time: float | None
    declared_resolution_time: float | None
    resolution_time_improvement: float | None
    resolution_definition: str = RESOLUTION_DEFINITION


class ServiceBreakdown(ResponseModel):
    """One service's share of coordination-analytics."""

    coordinations: int
    success_rate: float
    avg_cost_savings: float
    backend_integration_rate: float
    # Sum of businessContext.revenueImpact over the successful coordinations (docs/ANALYTICS.md).
    revenue_protected: float = 0.0


class CoordinationAnalytics(ResponseModel):
    """The data block of coordination-analytics."""

    total_services: int
    total_coordinations: int
    successful_coordinations: int
    average_coordination_time: float
    total_cost_savings: float
    backend_integration_rate: float
    total_revenue_protected: float
    service_breakdown: dict[str, ServiceBreakdown]
    emergency_activations: int
    last_update: Timestamp
    timeframe: AnalyticsTimeframe
    before_vs_after: BeforeVsAfter | None = None


class ServicePerformance(ResponseModel):
    """performanceMetrics of one service over the timeframe."""

    average_coordination_time: float
    success_rate: float
    backend_integration_rate: float
    cost_optimization: float


class BusinessImpact(ResponseModel):
    """businessImpact of one service over the timeframe."""

    total_cost_savings: float
    coordinations_handled: int
    emergency_mode_activations: int
    average_resolution_time: float
    revenue_protected: float = 0.0


class SystemHealth(ResponseModel):
    """systemHealth of one service right now."""

    active_coordinations: int
    backend_connections: int
    provider_health: dict[str, float]
    last_update: Timestamp


class PerformanceReport(ResponseModel):
    """The data block of performance-metrics/{service}."""

    service_name: str
    timeframe: Timeframe
    performance_metrics: ServicePerformance
    business_impact: BusinessImpact
    system_health: SystemHealth
    before_vs_after: BeforeVsAfter | None = None
