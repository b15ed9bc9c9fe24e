"""Routing rules: hard constraints on which nodes may serve a request, and volume weights.

Constraints come from two places and apply in this order, each narrowing the set left by the
one before (docs/ROUTING.md, "Routing rules"):

1. the node's `operations` (a node that lists them serves only those);
2. the service's default constraints for the request's operation (the catalog);
3. the request's own `routingContext.constraints`.

Within 2 and 3: `excludedNodes`, `allowedRegions`, `excludedRegions`, `requiredTags`. A
constraint is hard: a node that breaks it is never chosen, not when a recovery's hold yields,
not for a retry, not in an emergency. When the constraints leave no node, the decision names
the constraint that emptied the set.

Weights split volume among nodes the request's strategy rates within WEIGHT_TOLERANCE of the
best one: each of those gets `weight / sum of their weights` of the requests, by a stable hash
of the request id. With equal weights (the default) the best node is chosen as before.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from routing.types import Constraints, Exclusion, ExclusionReason, ProviderNode

# Nodes within this share of the best node's figure count as equal choices for weights.
WEIGHT_TOLERANCE = 0.01
_WEIGHT_BUCKETS = 10_000


@dataclass(frozen=True, slots=True)
class Constrained:
    """The nodes the constraints leave, the others with why, and what emptied the set."""

    nodes: tuple[ProviderNode, ...]
    exclusions: tuple[Exclusion, ...] = ()
    emptied_by: str | None = None  # e.g. "routingContext.constraints.allowedRegions"


def serves(node: ProviderNode, operation: str) -> bool:
    """True when the node serves the operation: a node listing no operations serves all, and
    every node serves the service as a whole (the empty operation, a recovery's plan)."""
    return node.operations is None or not operation or operation in node.operations


def constrain(
    nodes: Sequence[ProviderNode],
    operation: str,
    defaults: Constraints,
    requested: Constraints,
    *,
    service: str = "",
) -> Constrained:
    """The nodes that satisfy the operation, the service's defaults and the request's
    constraints, in that order (module docstring)."""
    if not requested and not defaults and all(n.operations is None for n in nodes):
        return Constrained(tuple(nodes))
    kept = list(nodes)
    exclusions: list[Exclusion] = []
    emptied_by: str | None = None

    def narrow(keep: list[ProviderNode], dropped: list[Exclusion], name: str) -> None:
        nonlocal kept, emptied_by
        if dropped and not keep and emptied_by is None:
            emptied_by = name
        kept = keep
        exclusions.extend(dropped)

    served = [n for n in kept if serves(n, operation)]
    narrow(
        served,
        [
            Exclusion(
                n.node_id,
                ExclusionReason.OPERATION_NOT_SERVED,
                f"serves {', '.join(sorted(n.operations or ()))}, not {operation!r}",
            )
            for n in kept
            if not serves(n, operation)
        ],
        "operation",
    )
    for source, constraints in (
        (f"catalog: {service}.constraints.{operation}", defaults),
        ("routingContext.constraints", requested),
    ):
        if constraints:
            for name, keep, dropped in _checks(kept, constraints, source):
                narrow(keep, dropped, f"{source}.{name}")
    return Constrained(tuple(kept), tuple(exclusions), emptied_by)


def _checks(
    nodes: list[ProviderNode], constraints: Constraints, source: str
) -> list[tuple[str, list[ProviderNode], list[Exclusion]]]:
    """Each constraint set in `constraints`, applied in turn: (field, kept, dropped)."""
    steps: list[tuple[str, list[ProviderNode], list[Exclusion]]] = []
    current = nodes

    def step(name: str, broken: list[tuple[ProviderNode, ExclusionReason, str]]) -> None:
        nonlocal current
        dropped = {node.node_id for node, _, _ in broken}
        current = [n for n in current if n.node_id not in dropped]
        exclusions = [Exclusion(n.node_id, reason, detail) for n, reason, detail in broken]
        steps.append((name, current, exclusions))

    if constraints.excluded_nodes:
        step(
            "excludedNodes",
            [
                (n, ExclusionReason.NODE_EXCLUDED, f"excluded by {source}.excludedNodes")
                for n in current
                if n.node_id in constraints.excluded_nodes
            ],
        )
    if constraints.allowed_regions:
        step(
            "allowedRegions",
            [
                (
                    n,
                    ExclusionReason.REGION_NOT_ALLOWED,
                    f"region {n.region} not in {source}.allowedRegions",
                )
                for n in current
                if n.region not in constraints.allowed_regions
            ],
        )
    if constraints.excluded_regions:
        step(
            "excludedRegions",
            [
                (
                    n,
                    ExclusionReason.REGION_EXCLUDED,
                    f"region {n.region} in {source}.excludedRegions",
                )
                for n in current
                if n.region in constraints.excluded_regions
            ],
        )
    if constraints.required_tags:
        step(
            "requiredTags",
            [
                (
                    n,
                    ExclusionReason.TAG_MISSING,
                    f"lacks tag {', '.join(sorted(constraints.required_tags - n.tags))} "
                    f"({source}.requiredTags)",
                )
                for n in current
                if not constraints.required_tags <= n.tags
            ],
        )
    return steps


def weighted_pick(
    candidates: Sequence[int], weights: Sequence[float], scope: str, request_id: str
) -> int:
    """One of `candidates` (indexes) with probability proportional to its weight, stable for
    the request id; the first when no candidate has weight."""
    total = sum(weights[i] for i in candidates)
    if total <= 0.0:
        return candidates[0]
    digest = zlib.crc32(f"{scope}:weight:{request_id}".encode())
    point = (digest % _WEIGHT_BUCKETS) / _WEIGHT_BUCKETS * total
    for index in candidates:
        point -= weights[index]
        if point < 0.0:
            return index
    return candidates[-1]
