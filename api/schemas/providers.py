"""Response and request models of the providers endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from api.schemas.common import ResponseModel, WireModel


class CatalogFigures(ResponseModel):
    """The node's catalog (baseline) figures and SLOs."""

    success_rate: float
    cost_per_request: float
    latency_ms: float
    health_score: float
    latency_slo_ms: float
    error_rate_slo: float


class LiveHealth(ResponseModel):
    """Figures from the node's recent outcomes, blended with the catalog's."""

    health_score: float
    success_rate: float
    latency_p50_ms: float
    latency_p95_ms: float
    observations: int
    # Share of first attempts routing offers the node while it refuses calls for rate
    # limiting (1: all of them; docs/ROUTING.md, "A rate-limited node's admitted share").
    admitted_share: float = 1.0
    # Calls per second the node was seen to take while refusing (None: not known); each API
    # replica sends it at most that many per second (docs/ROUTING.md, "Rate capacity").
    rate_capacity: float | None = None
    updated_at: datetime | None = None


class BreakerView(ResponseModel):
    """The node's circuit breaker."""

    state: str
    forced: str | None = None
    trips: int
    reason: str | None = None
    changed_at: datetime | None = None
    open_until: datetime | None = None
    seconds_to_half_open: float | None = None


class Forecast(ResponseModel):
    """The predictor's figures over the window as of now (docs/MONITORING.md)."""

    failure_probability: float
    error_breach_probability: float
    latency_breach_probability: float
    expected_error_rate: float | None = None
    latency_trend_ms_per_minute: float | None = None
    forecast_p95_ms: float | None = None
    horizon_seconds: float  # how far ahead: the configured horizon, at most the window's span
    samples: int


class PredictionView(ResponseModel):
    """What routing uses (failureProbability) and, on the detail endpoint, the live forecast."""

    failure_probability: float
    threshold: float
    forecast: Forecast | None = None


class BudgetView(ResponseModel):
    """The node's service budget: the current period and what it spent today (UTC)."""

    service_name: str
    period: str
    limit: float
    spent_in_period: float
    remaining: float
    spent_today: float


class ProviderView(ResponseModel):
    """One provider node: catalog, live health, breaker, prediction and budget."""

    node_id: str
    service_name: str
    provider_name: str
    region: str
    enabled: bool
    emergency_only: bool
    # Routing rules (docs/ROUTING.md): what requests may require, the operations it serves
    # (None: all) and its share of volume among equally good nodes.
    tags: list[str] = []
    operations: list[str] | None = None
    weight: float = 1.0
    catalog: CatalogFigures
    health: LiveHealth
    breaker: BreakerView
    prediction: PredictionView
    budget: BudgetView | None = None


class ProviderList(ResponseModel):
    """Every provider node, in catalog order, and the services' default constraints."""

    providers: list[ProviderView]
    # service -> operation -> {allowedRegions, excludedRegions, requiredTags, excludedNodes}:
    # the catalog's hard constraints, which a client deciding without Switchyard must keep.
    constraints: dict[str, dict[str, dict[str, list[str]]]] = {}
    catalog_revision: int = 0


Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


class BreakerCommand(WireModel):
    """Body of POST providers/{nodeId}/breaker: hold OPEN or CLOSED, or back to AUTO."""

    state: Literal["OPEN", "CLOSED", "AUTO"]
    reason: Reason = Field(description="Why; recorded in the breaker event.")
