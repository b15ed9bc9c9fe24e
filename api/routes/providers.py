"""Provider nodes: catalog figures, live health, breaker, prediction, budget; forced breakers.

Reads come from the store, not the API's snapshot, so every replica answers with the state
the last committed outcome batch or sweep left.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from fastapi import APIRouter
from sqlalchemy.orm import Session

from api.deps import Commander, Reader, RuntimeDep
from api.errors import ApiError
from api.schemas.common import Envelope, ErrorEnvelope
from api.schemas.providers import (
    BreakerCommand,
    BreakerView,
    BudgetView,
    CatalogFigures,
    Forecast,
    LiveHealth,
    PredictionView,
    ProviderList,
    ProviderView,
)
from routing.breaker import seconds_to_half_open
from routing.budget import period_start
from routing.health import MonitoringConfig, Observation, recent
from routing.prediction import Sample, predict
from routing.types import BreakerState, BudgetPeriod, BudgetState
from store.analytics import spent_since
from store.base import utcnow
from store.catalog_revisions import revision_number
from store.db import transaction
from store.health import (
    breaker_status,
    load_windows,
    monitoring_config,
    node_rows,
    set_breaker,
)
from store.models import NodeHealthRow, ProviderNodeRow, ProviderService
from store.snapshot import load_budgets

router = APIRouter(tags=["monitoring"])
ERRORS = {code: {"model": ErrorEnvelope} for code in (401, 403, 404, 422)}


def _views(
    session: Session,
    rows: Sequence[tuple[ProviderNodeRow, NodeHealthRow, ProviderService]],
    now: datetime,
    config: MonitoringConfig,
    forecast: bool = False,
) -> list[ProviderView]:
    budgets = load_budgets(session, sorted({s for _, _, s in rows}, key=lambda s: s.position), now)
    spent = spent_since(session=session, start=period_start(BudgetPeriod.daily, now))
    windows = (
        load_windows(session, [n.node_id for n, _, _ in rows], now, config.health)
        if forecast
        else {}
    )
    views = []
    for node, health, service in rows:
        status = breaker_status(health)
        views.append(
            ProviderView(
                node_id=node.node_id,
                service_name=node.service,
                provider_name=node.provider_name,
                region=node.region,
                enabled=node.enabled,
                emergency_only=node.emergency_only,
                tags=list(node.tags),
                operations=list(node.operations) if node.operations is not None else None,
                weight=node.weight,
                catalog=CatalogFigures(
                    success_rate=node.success_rate,
                    cost_per_request=node.cost_per_request,
                    latency_ms=node.latency_ms,
                    health_score=node.health_score,
                    latency_slo_ms=node.latency_slo_ms,
                    error_rate_slo=node.error_rate_slo,
                ),
                health=LiveHealth(
                    health_score=health.health_score,
                    success_rate=health.success_rate,
                    latency_p50_ms=health.latency_p50_ms,
                    latency_p95_ms=health.latency_p95_ms,
                    observations=health.observations,
                    admitted_share=health.admitted_share,
                    rate_capacity=health.rate_capacity,
                    updated_at=health.updated_at,
                ),
                breaker=BreakerView(
                    state=health.breaker_state,
                    forced=health.breaker_forced,
                    trips=health.breaker_trips,
                    reason=health.breaker_reason,
                    changed_at=health.breaker_changed_at,
                    open_until=health.breaker_open_until,
                    seconds_to_half_open=_rounded(seconds_to_half_open(status, now)),
                ),
                prediction=PredictionView(
                    failure_probability=health.failure_probability,
                    threshold=config.prediction.threshold,
                    forecast=_forecast(node, windows[node.node_id], now, config)
                    if forecast
                    else None,
                ),
                budget=_budget(budgets.get(service.name), spent.get(service.name, 0.0)),
            )
        )
    return views


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _budget(budget: BudgetState | None, spent_today: float) -> BudgetView | None:
    if budget is None:
        return None
    return BudgetView(
        service_name=budget.service,
        period=budget.period.value,
        limit=budget.limit,
        spent_in_period=round(budget.spent, 6),
        remaining=round(budget.remaining, 6),
        spent_today=round(spent_today, 6),
    )


def _forecast(
    row: ProviderNodeRow, window: list[Observation], now: datetime, config: MonitoringConfig
) -> Forecast:
    samples = [
        Sample((now - o.observed_at).total_seconds(), o.success, o.latency_ms)
        for o in recent(window, now, config.health)
    ]
    prediction = predict(
        samples,
        prior_success_rate=row.success_rate,
        error_rate_slo=row.error_rate_slo,
        latency_slo_ms=row.latency_slo_ms,
        config=config.prediction,
    )
    slope = prediction.latency_slope_ms_per_s
    return Forecast(
        failure_probability=prediction.failure_probability,
        error_breach_probability=prediction.error_breach_probability,
        latency_breach_probability=prediction.latency_breach_probability,
        expected_error_rate=prediction.expected_error_rate,
        latency_trend_ms_per_minute=None if slope is None else round(slope * 60.0, 2),
        forecast_p95_ms=prediction.forecast_p95_ms,
        horizon_seconds=prediction.horizon_seconds,
        samples=prediction.samples,
    )


def _one(session: Session, node_id: str, config: MonitoringConfig) -> ProviderView:
    rows = node_rows(session=session, node_id=node_id)
    if not rows:
        raise ApiError(404, "not_found", f"no provider node {node_id!r}")
    return _views(session, rows, utcnow(), config, forecast=True)[0]


@router.get(
    "/providers",
    response_model=Envelope[ProviderList],
    responses=ERRORS,  # type: ignore[arg-type]
)
def list_providers(runtime: RuntimeDep, _: Reader) -> Envelope[ProviderList]:
    """Every node with its catalog figures, live health, breaker, prediction and budget."""
    config = monitoring_config(runtime.settings)
    with runtime.sessions() as session:
        rows = node_rows(session=session)
        views = _views(session, rows, utcnow(), config)
        revision = revision_number(session)
    constraints = {
        service.name: service.constraints for _, _, service in rows if service.constraints
    }
    return Envelope(
        data=ProviderList(providers=views, constraints=constraints, catalog_revision=revision)
    )


@router.get(
    "/providers/{node_id}",
    response_model=Envelope[ProviderView],
    responses=ERRORS,  # type: ignore[arg-type]
)
def get_provider(node_id: str, runtime: RuntimeDep, _: Reader) -> Envelope[ProviderView]:
    """One node, with the predictor's live forecast over its window."""
    with runtime.sessions() as session:
        return Envelope(data=_one(session, node_id, monitoring_config(runtime.settings)))


@router.post(
    "/providers/{node_id}/breaker",
    response_model=Envelope[ProviderView],
    responses=ERRORS,  # type: ignore[arg-type]
)
def post_breaker(
    node_id: str, body: BreakerCommand, runtime: RuntimeDep, principal: Commander
) -> Envelope[ProviderView]:
    """Hold the node's breaker OPEN or CLOSED until AUTO hands it back to the rules."""
    state = None if body.state == "AUTO" else BreakerState(body.state)
    with transaction(runtime.sessions) as session:
        status = set_breaker(
            session, node_id, state, reason=body.reason, principal=principal.subject, now=utcnow()
        )
    if status is None:
        raise ApiError(404, "not_found", f"no provider node {node_id!r}")
    # Route with the new breaker at once in this replica; the others reload on NOTIFY/poll.
    runtime.snapshot.refresh()
    with runtime.sessions() as session:
        view = _one(session, node_id, monitoring_config(runtime.settings))
    message = "Breaker returned to automatic control" if state is None else f"Breaker held {state}"
    return Envelope(message=message, data=view)
