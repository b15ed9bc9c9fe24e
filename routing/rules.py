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


# Where each check sits in the order of application (module docstring): the operation,
# then the four constraints of the service's defaults, then the four of the request's.
_FIELDS = ("excludedNodes", "allowedRegions", "excludedRegions", "requiredTags")


def constrain(
    nodes: Sequence[ProviderNode],
    operation: str,
    defaults: Constraints,
    requested: Constraints,
    *,
    service: str = "",
    restricted: bool = True,
) -> Constrained:
    """The nodes that satisfy the operation, the service's defaults and the request's
    constraints, in that order (module docstring). `restricted=False` says no node of the
    service lists its operations (RoutingSnapshot.restricted), which spares the check."""
    layers = [
        (source, constraints)
        for source, constraints in (
            (f"catalog: {service}.constraints.{operation}", defaults),
            ("routingContext.constraints", requested),
        )
        if constraints
    ]
    check_operation = restricted and bool(operation)
    if not layers and not check_operation:
        return Constrained(tuple(nodes))
    kept: list[ProviderNode] = []
    exclusions: list[Exclusion] = []
    last_stage, emptied_by = -1, None
    for node in nodes:
        broken = _first_broken(node, operation, check_operation, layers)
        if broken is None:
            kept.append(node)
            continue
        stage, name, exclusion = broken
        exclusions.append(exclusion)
        # The constraints narrow in order: the set is emptied by the last one to drop a node.
        if stage > last_stage:
            last_stage, emptied_by = stage, name
    return Constrained(tuple(kept), tuple(exclusions), None if kept else emptied_by)


def _first_broken(
    node: ProviderNode,
    operation: str,
    check_operation: bool,
    layers: list[tuple[str, Constraints]],
) -> tuple[int, str, Exclusion] | None:
    """(stage, constraint name, exclusion) of the first constraint the node breaks."""
    if check_operation and not serves(node, operation):
        served = ", ".join(sorted(node.operations or ()))
        return (
            0,
            "operation",
            Exclusion(
                node.node_id,
                ExclusionReason.OPERATION_NOT_SERVED,
                f"serves {served}, not {operation!r}",
            ),
        )
    for index, (source, c) in enumerate(layers):
        stage = 1 + 4 * index
        if node.node_id in c.excluded_nodes:
            reason, detail = ExclusionReason.NODE_EXCLUDED, f"excluded by {source}.excludedNodes"
        elif c.allowed_regions and node.region not in c.allowed_regions:
            stage += 1
            reason = ExclusionReason.REGION_NOT_ALLOWED
            detail = f"region {node.region} not in {source}.allowedRegions"
        elif node.region in c.excluded_regions:
            stage += 2
            reason = ExclusionReason.REGION_EXCLUDED
            detail = f"region {node.region} in {source}.excludedRegions"
        elif c.required_tags and not c.required_tags <= node.tags:
            stage += 3
            missing = ", ".join(sorted(c.required_tags - node.tags))
            reason, detail = (
                ExclusionReason.TAG_MISSING,
                f"lacks tag {missing} ({source}.requiredTags)",
            )
        else:
            continue
        name = f"{source}.{_FIELDS[(stage - 1) % 4]}"
        return stage, name, Exclusion(node.node_id, reason, detail)
    return None


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
