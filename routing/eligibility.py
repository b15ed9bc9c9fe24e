"""Which nodes of a service may serve a request, and why the others may not."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from datetime import datetime

from routing.breaker import BreakerReason
from routing.budget import server_remaining, tighter
from routing.rules import Constrained, constrain
from routing.strategies import Figures
from routing.types import (
    NO_CONSTRAINTS,
    BreakerState,
    Exclusion,
    ExclusionReason,
    NodeHealth,
    ProviderNode,
    RoutingOverride,
    RoutingRequest,
    RoutingSnapshot,
)

# Buckets of the staged-restore hash: the restored share moves in steps of 0.01 %.
RESTORE_BUCKETS = 10_000


class UnknownService(KeyError):
    """Raised when a request names a service that is not in the catalog."""

    def __init__(self, service: str) -> None:
        self.service = service
        super().__init__(service)

    def __str__(self) -> str:
        return f"unknown service {self.service!r}"


def service_nodes(snapshot: RoutingSnapshot, service: str) -> tuple[ProviderNode, ...]:
    """The catalog nodes of a service in catalog order; UnknownService when absent."""
    nodes = snapshot.nodes.get(service)
    if nodes is None:
        raise UnknownService(service)
    return nodes


def _bucket(scope: str, request_id: str) -> float:
    """The request's stable position in [0, 1) within `scope`, in steps of 1/RESTORE_BUCKETS."""
    # crc32 rather than hash(): str hashes are salted per process, and every API replica,
    # worker and replayed workflow must put the same request in the same bucket.
    digest = zlib.crc32(f"{scope}:{request_id}".encode())
    return (digest % RESTORE_BUCKETS) / RESTORE_BUCKETS


def restore_bucket(service: str, request_id: str) -> float:
    """The request's stable position in [0, 1) for staged restores of this service."""
    return _bucket(service, request_id)


def admission_bucket(node_id: str, request_id: str) -> float:
    """The request's stable position in [0, 1) for a node's admitted share (admission.py).

    Per node, so that two rate-limited nodes of a service do not turn away the same requests.
    """
    return _bucket(node_id, request_id)


# Distinct (service, operation, constraints) a snapshot remembers; more are computed each time.
CONSTRAINED_MEMO = 4096


def constrain_request(request: RoutingRequest, snapshot: RoutingSnapshot) -> Constrained:
    """The service's nodes that the request's hard constraints allow (routing/rules.py).

    UnknownService when the service is not in the catalog. An empty operation is the service
    as a whole (a recovery's plan): no operation or catalog default applies to it.
    """
    key = (request.service, request.operation, request.constraints)
    memo = snapshot.constrained
    found: Constrained | None = memo.get(key)
    if found is None:
        found = _constrain(request, snapshot)
        if len(memo) < CONSTRAINED_MEMO:
            memo[key] = found
    return found


def _constrain(request: RoutingRequest, snapshot: RoutingSnapshot) -> Constrained:
    nodes = service_nodes(snapshot, request.service)
    operation = request.operation
    rules = snapshot.rules.get(request.service)
    defaults = rules.for_operation(operation) if rules is not None and operation else None
    return constrain(
        nodes,
        operation,
        defaults or NO_CONSTRAINTS,
        request.constraints,
        service=request.service,
        restricted=request.service in snapshot.restricted,
    )


def override_for(request: RoutingRequest, snapshot: RoutingSnapshot) -> RoutingOverride | None:
    """The service's recovery override when it governs this request, else None.

    An override with ``restore_fraction`` f hands the share f of requests (those whose
    restore bucket is below f) back to the route as if there were no override; f >= 1
    means the override no longer applies to anyone.
    """
    override = snapshot.overrides.get(request.service)
    if override is None:
        return None
    fraction = override.restore_fraction
    if fraction >= 1.0:
        return None
    if fraction > 0.0 and restore_bucket(request.service, request.request_id) < fraction:
        return None
    return override


def filter_nodes(
    request: RoutingRequest,
    nodes: Sequence[ProviderNode],
    health: Mapping[str, NodeHealth],
    override: RoutingOverride | None,
    emergency_active: bool,
    remaining: float | None,
    *,
    rate_limited_eligible: bool = False,
    shares_apply: bool = True,
) -> tuple[list[ProviderNode], list[Figures], list[Exclusion]]:
    """Eligible nodes with their effective figures, and exclusions (first reason per node).

    The figures are (health, success rate, latency, failure probability) as the strategies
    score them; gathering them here saves the hot path a second health lookup per node.
    ``rate_limited_eligible`` admits a node whose breaker is open only because the provider
    refused calls for rate limiting, and a request outside a rate-limited node's admitted
    share (a caller's retry: one call, which a rate limit that refuses volume still takes);
    ``shares_apply=False`` ignores admitted shares alone (`decide` when they leave nothing).

    routing/screen.py states which nodes pass again, split into what depends on the snapshot
    alone and what on the request: a new test here goes there too.
    """
    eligible: list[ProviderNode] = []
    figures: list[Figures] = []
    exclusions: list[Exclusion] = []
    failed = request.failed_providers
    excluded = override.excluded_nodes if override is not None else frozenset()
    limit = request.cost_per_request_limit
    shares = shares_apply and not rate_limited_eligible
    for node in nodes:
        node_id = node.node_id
        cost = node.cost_per_request
        if not node.enabled:
            exclusions.append(
                Exclusion(node_id, ExclusionReason.DISABLED, "node is disabled in the catalog")
            )
            continue
        if node_id in failed:
            exclusions.append(
                Exclusion(
                    node_id,
                    ExclusionReason.FAILED_PROVIDER,
                    "reported as failed by the caller (failedProviders)",
                )
            )
            continue
        if node_id in excluded and override is not None:
            exclusions.append(
                Exclusion(
                    node_id,
                    ExclusionReason.EXCLUDED_BY_RECOVERY,
                    f"held out of rotation by recovery {override.workflow_id}",
                )
            )
            continue
        live = health.get(node_id)
        if (
            live is not None
            and live.breaker_state == BreakerState.OPEN
            and not (rate_limited_eligible and live.breaker_reason == BreakerReason.RATE_LIMITED)
        ):
            exclusions.append(
                Exclusion(node_id, ExclusionReason.BREAKER_OPEN, "circuit breaker is open")
            )
            continue
        if (
            live is not None
            and live.admitted_share < 1.0
            and shares
            and admission_bucket(node_id, request.request_id) >= live.admitted_share
        ):
            exclusions.append(
                Exclusion(
                    node_id,
                    ExclusionReason.RATE_LIMIT_SHARE,
                    f"its rate capacity ({live.rate_capacity:g} calls per second) is spent "
                    "for this second"
                    if live.headroom_spent
                    else f"refusing calls for rate limiting: offered {live.admitted_share:.0%} "
                    "of requests",
                )
            )
            continue
        if node.emergency_only and not emergency_active:
            exclusions.append(
                Exclusion(
                    node_id,
                    ExclusionReason.EMERGENCY_ONLY,
                    f"emergency-only node and no emergency is active for {node.service}",
                )
            )
            continue
        if limit is not None and cost > limit:
            exclusions.append(
                Exclusion(
                    node_id,
                    ExclusionReason.COST_ABOVE_LIMIT,
                    f"cost {cost:g} above costPerRequestLimit {limit:g}",
                )
            )
            continue
        if remaining is not None and cost > remaining:
            exclusions.append(
                Exclusion(
                    node_id,
                    ExclusionReason.BUDGET_EXHAUSTED,
                    f"cost {cost:g} above remaining budget {remaining:g}",
                )
            )
            continue
        eligible.append(node)
        if live is None:
            figures.append((node.health_score, node.success_rate, node.latency_ms, 0.0, 0))
        else:
            figures.append(
                (
                    live.health_score,
                    live.success_rate,
                    live.latency_ms,
                    live.failure_probability,
                    live.observations,
                )
            )
    return eligible, figures, exclusions


def eligible_nodes(
    request: RoutingRequest,
    snapshot: RoutingSnapshot,
    now: datetime,
    *,
    apply_override: bool = True,
) -> tuple[tuple[ProviderNode, ...], tuple[Exclusion, ...], bool]:
    """Eligible nodes in catalog order, the exclusions, and whether an override was in effect.

    ``apply_override=False`` ignores the service's recovery override, for a recovery that
    plans its own route. Rate-limited nodes' admitted shares do not apply.
    """
    service = request.service
    constrained = constrain_request(request, snapshot)
    nodes = constrained.nodes
    emergency = snapshot.emergencies.get(service)
    active = emergency is not None and emergency.active_at(now)
    override = override_for(request, snapshot) if apply_override else None
    server = server_remaining(snapshot.budgets.get(service), emergency, active)
    remaining = tighter(request.remaining_budget, server)
    # Admitted shares are left out: a rate-limited node still serves its share of the
    # service, which is what recoveries and the strand guard ask about.
    eligible, _, exclusions = filter_nodes(
        request, nodes, snapshot.health, override, active, remaining, shares_apply=False
    )
    return tuple(eligible), constrained.exclusions + tuple(exclusions), override is not None
