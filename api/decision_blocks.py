"""The blocks of a decision's answer that explain what its request's fields did: the
forecast a predictive decision weighed, the budget that bound it and a redundancy plan's
hedge (docs/ROUTING.md)."""

from __future__ import annotations

from api.schemas.coordination import BudgetBoundOut, HedgeOut, NodeForecast, PredictiveAnalytics
from routing.outcome import MONEY_DECIMALS
from routing.types import BudgetBound, RoutingDecision


def predictive_block(decision: RoutingDecision) -> PredictiveAnalytics | None:
    """The forecast block of a requirePredictiveAnalytics decision; None for others."""
    forecast = decision.forecast
    if forecast is None:
        return None
    return PredictiveAnalytics(
        effect=forecast.effect,
        exclusion_threshold=forecast.threshold,
        node_without_forecast=forecast.without_forecast,
        forecasts=[
            NodeForecast(node_id=node_id, failure_probability=p)
            for node_id, p in forecast.probabilities
        ],
    )


def hedge_block(decision: RoutingDecision) -> HedgeOut | None:
    """The hedge a redundancy plan attaches to the decision, when it does."""
    hedge = decision.hedge
    if hedge is None:
        return None
    return HedgeOut(
        node_id=hedge.node.node_id,
        provider_name=hedge.node.provider_name,
        region=hedge.node.region,
        delay_ms=hedge.delay_ms,
        share=hedge.share,
        cost_per_request=hedge.node.cost_per_request,
    )


def budget_bound_block(bound: BudgetBound | None) -> BudgetBoundOut | None:
    """Which budget bound the decision, when one did."""
    if bound is None:
        return None
    return BudgetBoundOut(
        bound=bound.bound,
        period=bound.period.value if bound.period is not None else None,
        remaining=round(bound.remaining, MONEY_DECIMALS),
        caller_remaining=_money(bound.caller_remaining),
        server_remaining=_money(bound.server_remaining),
    )


def _money(value: float | None) -> float | None:
    return None if value is None else round(value, MONEY_DECIMALS)
