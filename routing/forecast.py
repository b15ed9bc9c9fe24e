"""requirePredictiveAnalytics: a decision that weighs each node's failure forecast.

The forecast of a node is its predicted probability p of breaching an SLO within the
prediction horizon (routing/prediction.py). A request that requires predictive analytics gets
two things from it, whatever its strategy:

1. Screening: a node whose forecast is at or above PREDICTED_FAILURE_EXCLUSION is excluded
   (reason ``predicted_failure``) while at least one eligible node is below it.
2. Weighing: every figure a strategy ranks by becomes its expected value when a breach costs
   the call, with the survival q = 1 - p: health x q, success rate x q, latency / q and cost
   per request / q (a call that fails is paid and made again). HEALTH_BASED, COST_OPTIMIZED
   and LATENCY_OPTIMIZED rank by these; AVAILABILITY_FOCUSED and HYBRID_OPTIMIZATION, which
   weigh p on their own, rank by them too.

A node has a forecast when its live figures rest on at least FORECAST_MIN_OBSERVATIONS
outcomes (fewer: the predictor gives none). The decision reports the forecast it used and its
effect: "changed" (the choice differs from the strategy's on the plain figures), "confirmed"
(the same choice, with a forecast for at least one eligible node) or "unavailable".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from routing.prediction import PredictionConfig
from routing.strategies import Figures
from routing.types import Exclusion, ExclusionReason, ForecastUse, NodeHealth, ProviderNode

# A forecast at or above this excludes a node for requirePredictiveAnalytics: a breach more
# likely than not (the retry rule's LIKELY, routing/retry.py).
PREDICTED_FAILURE_EXCLUSION = 0.5
FORECAST_MIN_OBSERVATIONS = PredictionConfig().min_samples
# Survival floor: a node predicted to fail for certain still has finite expected figures.
MIN_SURVIVAL = 0.01


def screen(
    nodes: Sequence[ProviderNode], figures: Sequence[Figures]
) -> tuple[list[ProviderNode], list[Figures], list[Exclusion]]:
    """The nodes below PREDICTED_FAILURE_EXCLUSION and exclusions for the rest; all nodes
    when none is below it (the forecast then only weighs)."""
    kept = [i for i, f in enumerate(figures) if f[3] < PREDICTED_FAILURE_EXCLUSION]
    if not kept or len(kept) == len(nodes):
        return list(nodes), list(figures), []
    exclusions = [
        Exclusion(
            node.node_id,
            ExclusionReason.PREDICTED_FAILURE,
            f"predicted SLO breach p={f[3]:g} at or above {PREDICTED_FAILURE_EXCLUSION:g} "
            "(requirePredictiveAnalytics)",
        )
        for i, (node, f) in enumerate(zip(nodes, figures, strict=True))
        if i not in kept
    ]
    return [nodes[i] for i in kept], [figures[i] for i in kept], exclusions


def survival(figures: Figures) -> float:
    """1 - the predicted failure probability, never below MIN_SURVIVAL."""
    return max(1.0 - figures[3], MIN_SURVIVAL)


def weighed(
    nodes: Sequence[ProviderNode], figures: Sequence[Figures]
) -> tuple[list[ProviderNode], list[Figures]]:
    """The nodes and figures as the strategies see them with the forecast weighed in."""
    out_nodes, out_figures = [], []
    for node, f in zip(nodes, figures, strict=True):
        q = survival(f)
        out_nodes.append(replace(node, cost_per_request=node.cost_per_request / q))
        out_figures.append((f[0] * q, f[1] * q, f[2] / q, f[3], f[4]))
    return out_nodes, out_figures


def has_forecast(node: ProviderNode, health: Mapping[str, NodeHealth]) -> bool:
    """True when the node has a forecast: a predicted probability, or live figures resting on
    enough outcomes for the predictor to give one (which may be 0)."""
    live = health.get(node.node_id)
    return live is not None and (
        live.failure_probability > 0.0 or live.observations >= FORECAST_MIN_OBSERVATIONS
    )


def forecast_use(
    chosen: ProviderNode,
    plain: ProviderNode,
    nodes: Sequence[ProviderNode],
    figures: Sequence[Figures],
    health: Mapping[str, NodeHealth],
) -> ForecastUse:
    """What the forecast did: the eligible nodes' forecasts and the effect on the choice."""
    if chosen.node_id != plain.node_id:
        effect = "changed"
    elif any(has_forecast(node, health) for node in nodes):
        effect = "confirmed"
    else:
        effect = "unavailable"
    return ForecastUse(
        effect=effect,
        threshold=PREDICTED_FAILURE_EXCLUSION,
        probabilities=tuple((node.node_id, f[3]) for node, f in zip(nodes, figures, strict=True)),
        without_forecast=plain.node_id,
    )
