"""The local decision: where a request goes when Switchyard does not answer.

Rules, in order (clients/python/README.md, "When Switchyard is down"):

1. The candidates are the service's nodes in the catalog copy (only those with a handler,
   for `call()`). Without a copy of the service, the handlers' order decides.
2. Never a node that breaks a hard constraint: one that does not serve the operation, or that
   the catalog's default constraints for the operation or the request's own constraints
   (`allowed_regions`, `excluded_regions`, `required_tags`, `excluded_nodes`) rule out.
   Never a disabled node, never a node whose breaker is OPEN (an OPEN breaker whose break is
   over counts as HALF_OPEN, as on the server), never an emergency-only node unless the copy
   knows of an emergency of the service that is still on; never a node above the request's
   `cost_per_request_limit` or `remaining_budget`.
3. Nodes this call already failed on only when no other node is left (as the server's retry).
4. A node admitting a share of first attempts below 1 (it refuses calls for its rate limit)
   takes the requests whose bucket is below its share, unless that leaves nothing.
5. Best first: nodes this client saw fail 5 times in a row since the copy last, then HALF_OPEN
   breakers, then by Switchyard's own figures: health score, success rate, lower cost,
   catalog order.
"""

from __future__ import annotations

import secrets
import threading
import zlib
from collections.abc import Sequence
from typing import Any

from switchyard_client.catalog import CatalogCopy, NodeFigures
from switchyard_client.context import RoutingRequest
from switchyard_client.decision import Decision
from switchyard_client.errors import SwitchyardError, SwitchyardUnavailable

# Switchyard's own defaults (BREAKER_CONSECUTIVE_FAILURES, BREAKER_BASE_BREAK_SECONDS): a node
# that failed this client so many times in a row is put last for so long, then tried again.
LOCAL_FAILURES = 5
LOCAL_BREAK_SECONDS = 30.0


class LocalEvidence:
    """Consecutive failures this client saw per node since its catalog copy was taken."""

    def __init__(self) -> None:
        self._streaks: dict[str, tuple[int, float]] = {}  # node -> (failures in a row, last)
        self._lock = threading.Lock()

    def observe(self, node_id: str, success: bool, now: float) -> None:
        """Count one call's outcome (a refusal is neither: the provider did no work)."""
        with self._lock:
            if success:
                self._streaks.pop(node_id, None)
            else:
                failures, _ = self._streaks.get(node_id, (0, now))
                self._streaks[node_id] = (failures + 1, now)

    def forget(self) -> None:
        """A new copy arrived: Switchyard's figures include what we saw."""
        with self._lock:
            self._streaks.clear()

    def failing(self, node_id: str, now: float) -> bool:
        """Whether the node failed LOCAL_FAILURES times in a row within the last break."""
        failures, last = self._streaks.get(node_id, (0, 0.0))
        return failures >= LOCAL_FAILURES and now - last < LOCAL_BREAK_SECONDS


def decide_locally(
    copy: CatalogCopy | None,
    request: RoutingRequest,
    handlers: Sequence[str] | None,
    evidence: LocalEvidence,
    now: float,
    why: str,
) -> Decision:
    """The node for `request` by the local rules; `why` says why Switchyard was not asked."""
    nodes = copy.services.get(request.service) if copy is not None else None
    if not nodes:
        return _by_handler_order(request, handlers, why)
    candidates = [n for n in nodes if handlers is None or n.node_id in handlers]
    if not candidates:
        raise SwitchyardError(
            "no_handler",
            f"no handler names a node of {request.service!r} "
            f"(its nodes: {', '.join(n.node_id for n in nodes)})",
        )
    assert copy is not None
    eligible: list[NodeFigures] = []
    excluded: list[dict[str, str]] = []
    for node in candidates:
        reason = _exclusion(node, copy, request, now)
        if reason is None:
            eligible.append(node)
        else:
            excluded.append({"nodeId": node.node_id, "reason": reason})
    if not eligible:
        reasons = ", ".join(f"{e['nodeId']}: {e['reason']}" for e in excluded)
        raise SwitchyardError(
            "no_eligible_node",
            f"no node of {request.service!r} can take this request locally ({reasons})",
            details={"serviceName": request.service, "excludedNodes": excluded},
        )
    failed = set(request.failed_providers)
    untried = [n for n in eligible if n.node_id not in failed] or eligible
    if not failed and any(n.admitted_share < 1.0 for n in untried):
        bucket_id = request.request_id or secrets.token_hex(8)
        untried = [n for n in untried if _admitted(n, bucket_id)] or untried
    best = min(untried, key=lambda n: _rank(n, evidence, now))
    return _decision(request, best, copy, now, why, excluded)


def _exclusion(
    node: NodeFigures, copy: CatalogCopy, request: RoutingRequest, now: float
) -> str | None:
    broken = _broken_constraint(node, copy, request)
    if broken is not None:
        return broken
    if not node.enabled:
        return "disabled"
    if node.breaker_at(now) == "OPEN":
        return "breaker_open"
    if node.emergency_only and not copy.emergency_active(request.service, now):
        return "emergency_only"
    limit = request.cost_per_request_limit
    if limit is not None and node.cost > limit:
        return "cost_above_limit"
    remaining = request.remaining_budget
    if remaining is not None and node.cost > remaining:
        return "budget_exhausted"
    return None


def _broken_constraint(node: NodeFigures, copy: CatalogCopy, request: RoutingRequest) -> str | None:
    """The hard constraint the node breaks, as Switchyard's exclusion reason; None if none."""
    if node.operations is not None and request.operation not in node.operations:
        return "operation_not_served"
    defaults = copy.constraints.get(request.service, {}).get(request.operation, {})
    for excluded, allowed, banned, tags in (
        (
            frozenset(defaults.get("excludedNodes", ())),
            frozenset(defaults.get("allowedRegions", ())),
            frozenset(defaults.get("excludedRegions", ())),
            frozenset(defaults.get("requiredTags", ())),
        ),
        (
            request.constraints.excluded_nodes,
            request.constraints.allowed_regions,
            request.constraints.excluded_regions,
            request.constraints.required_tags,
        ),
    ):
        if node.node_id in excluded:
            return "node_excluded"
        if allowed and node.region not in allowed:
            return "region_not_allowed"
        if node.region in banned:
            return "region_excluded"
        if not tags <= node.tags:
            return "tag_missing"
    return None


def _admitted(node: NodeFigures, request_id: str) -> bool:
    if node.admitted_share >= 1.0:
        return True
    # Switchyard's admission bucket (docs/ROUTING.md): crc32 is stable across processes.
    bucket = zlib.crc32(f"{node.node_id}:{request_id}".encode()) % 10000 / 10000
    return bucket < node.admitted_share


def _rank(node: NodeFigures, evidence: LocalEvidence, now: float) -> tuple[Any, ...]:
    return (
        evidence.failing(node.node_id, now),
        node.breaker_at(now) == "HALF_OPEN",
        -node.health_score,
        -node.success_rate,
        node.cost,
        node.position,
    )


def _decision(
    request: RoutingRequest,
    node: NodeFigures,
    copy: CatalogCopy,
    now: float,
    why: str,
    excluded: list[dict[str, str]],
) -> Decision:
    reason = (
        f"Selected {node.provider_name} locally by health score {node.health_score:g} "
        f"(catalog copy of {now - copy.taken_at:.1f} s ago): {why}"
    )
    return Decision(
        service=request.service,
        operation=request.operation,
        node_id=node.node_id,
        provider_name=node.provider_name,
        strategy="HEALTH_BASED",
        coordination_id=None,
        decided_locally=True,
        reason=reason,
        estimated_cost=node.cost,
        raw={
            "decidedLocally": True,
            "why": why,
            "catalogAgeSeconds": round(now - copy.taken_at, 3),
            "excludedNodes": excluded,
        },
    )


def _by_handler_order(
    request: RoutingRequest, handlers: Sequence[str] | None, why: str
) -> Decision:
    if not handlers:
        raise SwitchyardUnavailable(
            "switchyard_unavailable",
            f"Switchyard did not answer ({why}) and the client has no catalog copy of "
            f"{request.service!r} to decide from",
        )
    failed = set(request.failed_providers)
    node_id = next((h for h in handlers if h not in failed), handlers[0])
    return Decision(
        service=request.service,
        operation=request.operation,
        node_id=node_id,
        provider_name=node_id,
        strategy="HANDLER_ORDER",
        coordination_id=None,
        decided_locally=True,
        reason=f"Selected {node_id} locally in the handlers' order (no catalog copy): {why}",
        raw={"decidedLocally": True, "why": why, "catalogAgeSeconds": None},
    )
