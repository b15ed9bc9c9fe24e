"""GET coordination-analytics and performance-metrics/{service}: the dashboard's figures."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from api.deps import Reader, SessionDep
from api.errors import ApiError
from api.schemas.analytics import (
    AnalyticsTimeframe,
    BeforeVsAfter,
    BusinessImpact,
    CoordinationAnalytics,
    PerformanceReport,
    ServiceBreakdown,
    ServicePerformance,
    SystemHealth,
    Timeframe,
)
from api.schemas.common import Envelope, ErrorEnvelope
from routing.outcome import MONEY_DECIMALS, PERCENT_DECIMALS
from store.analytics import (
    BeforeAfter,
    CoordinationTotals,
    before_after,
    catalog_services,
    coordination_totals,
    emergencies_started,
    provider_health,
    service_exists,
    service_state,
)
from store.base import utcnow

router = APIRouter(tags=["analytics"])

# Milliseconds, percentages and minutes get 2 decimals; money keeps routing's 6 so that
# sub-cent savings (SMS, email) do not round away.
MS_DECIMALS = 2
MINUTE_DECIMALS = 2

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorEnvelope},
    403: {"model": ErrorEnvelope},
    422: {"model": ErrorEnvelope},
}


def _start(now: datetime, timeframe: Timeframe | AnalyticsTimeframe) -> datetime | None:
    window = timeframe.window
    return None if window is None else now - window


def _ratio(part: float, whole: int) -> float | None:
    return part / whole if whole else None


def _reduction(reference: float | None, actual: float | None) -> float | None:
    """(reference - actual) / reference in percent; None without a positive reference."""
    if reference is None or actual is None or reference <= 0:
        return None
    return round((reference - actual) / reference * 100.0, PERCENT_DECIMALS)


def _rounded(value: float | None, decimals: int) -> float | None:
    return None if value is None else round(value, decimals)


def before_vs_after(sums: BeforeAfter) -> BeforeVsAfter:
    """The before-vs-after figures of some sums (definitions in the model and ANALYTICS.md)."""
    actual = _ratio(sums.cost, sums.successful)
    reference = _ratio(sums.reference_cost, sums.successful)
    took = _ratio(sums.resolution_minutes, sums.resolved)
    declared = _ratio(sums.declared_minutes, sums.resolved)
    return BeforeVsAfter(
        successful_calls=sums.successful,
        cost_per_successful_call=_rounded(actual, MONEY_DECIMALS),
        reference_cost_per_successful_call=_rounded(reference, MONEY_DECIMALS),
        cost_reduction=_reduction(reference, actual),
        resolved_recoveries=sums.resolved,
        average_resolution_time=_rounded(took, MINUTE_DECIMALS),
        declared_resolution_time=_rounded(declared, MINUTE_DECIMALS),
        resolution_time_improvement=_reduction(declared, took),
    )


def _breakdown(totals: CoordinationTotals) -> ServiceBreakdown:
    return ServiceBreakdown(
        coordinations=totals.coordinations,
        success_rate=round(totals.success_rate, PERCENT_DECIMALS),
        avg_cost_savings=round(totals.average_cost_savings, MONEY_DECIMALS),
        backend_integration_rate=round(totals.backend_integration_rate, PERCENT_DECIMALS),
        revenue_protected=round(totals.revenue_protected, MONEY_DECIMALS),
    )


@router.get(
    "/coordination-analytics",
    response_model=Envelope[CoordinationAnalytics],
    response_model_by_alias=True,
    responses=_ERRORS,
)
def get_coordination_analytics(
    session: SessionDep,
    _: Reader,
    timeframe: Annotated[
        AnalyticsTimeframe, Query(description="How far back to look; `all` for all time.")
    ] = AnalyticsTimeframe.day,
) -> Envelope[CoordinationAnalytics]:
    """Coordination counts, success, timing, savings and emergencies over all services."""
    now = utcnow()
    since = _start(now, timeframe)
    per_service = coordination_totals(session=session, since=since)
    # Every catalog service appears (zeros when idle), then any recorded service that has
    # since left the catalog, so the dashboard's keys do not come and go with traffic.
    names = catalog_services(session=session)
    names += sorted(set(per_service) - set(names))
    totals = sum(per_service.values(), CoordinationTotals())
    compared = sum(before_after(session=session, since=since).values(), BeforeAfter())
    return Envelope(
        data=CoordinationAnalytics(
            total_services=len(names),
            total_coordinations=totals.coordinations,
            successful_coordinations=totals.successful,
            average_coordination_time=round(totals.average_coordination_ms, MS_DECIMALS),
            total_cost_savings=round(totals.cost_savings, MONEY_DECIMALS),
            backend_integration_rate=round(totals.backend_integration_rate, PERCENT_DECIMALS),
            total_revenue_protected=round(totals.revenue_protected, MONEY_DECIMALS),
            service_breakdown={
                name: _breakdown(per_service.get(name, CoordinationTotals())) for name in names
            },
            emergency_activations=emergencies_started(session=session, since=since),
            last_update=now,
            timeframe=timeframe,
            before_vs_after=before_vs_after(compared),
        )
    )


@router.get(
    "/performance-metrics/{service}",
    response_model=Envelope[PerformanceReport],
    response_model_by_alias=True,
    responses={**_ERRORS, 404: {"model": ErrorEnvelope}},
)
def get_performance_metrics(
    session: SessionDep,
    _: Reader,
    service: Annotated[str, Path(max_length=64, description="A catalog service name.")],
    timeframe: Annotated[Timeframe, Query(description="How far back to look.")] = Timeframe.day,
) -> Envelope[PerformanceReport]:
    """One service's performance, business impact and live health over the timeframe."""
    if not service_exists(session=session, service=service):
        known = catalog_services(session=session)
        raise ApiError(
            404,
            "not_found",
            f"unknown service {service!r}",
            {"serviceName": service, "knownServices": known},
        )
    now = utcnow()
    since = _start(now, timeframe)
    totals = coordination_totals(session=session, since=since, service=service).get(
        service, CoordinationTotals()
    )
    state = service_state(session=session, service=service, since=since, now=now)
    health = provider_health(
        session=session, service=service, emergency_active=state.active_emergencies > 0
    )
    return Envelope(
        data=PerformanceReport(
            service_name=service,
            timeframe=timeframe,
            performance_metrics=ServicePerformance(
                average_coordination_time=round(totals.average_coordination_ms, MS_DECIMALS),
                success_rate=round(totals.success_rate, PERCENT_DECIMALS),
                backend_integration_rate=round(totals.backend_integration_rate, PERCENT_DECIMALS),
                cost_optimization=round(totals.average_cost_savings, MONEY_DECIMALS),
            ),
            business_impact=BusinessImpact(
                total_cost_savings=round(totals.cost_savings, MONEY_DECIMALS),
                coordinations_handled=totals.coordinations,
                emergency_mode_activations=state.emergencies_started,
                average_resolution_time=round(state.average_resolution_minutes, MINUTE_DECIMALS),
                revenue_protected=round(totals.revenue_protected, MONEY_DECIMALS),
            ),
            system_health=SystemHealth(
                active_coordinations=state.active_coordinations,
                backend_connections=state.backend_connections,
                provider_health={
                    node: round(score, PERCENT_DECIMALS) for node, score in health.items()
                },
                last_update=now,
            ),
            before_vs_after=before_vs_after(
                before_after(session=session, since=since, service=service).get(
                    service, BeforeAfter()
                )
            ),
        )
    )
