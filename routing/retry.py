"""A caller's retry: the node for the next attempt of a request whose attempts failed.

The caller names the nodes its request already failed on (`failed_providers`). A node's
failure is evidence against it — the rarer its failures, the more one of them says that
something changed — so the retry goes elsewhere when another node is healthy. Going
elsewhere is not worth any price, though: a node that is itself failing its SLOs (or whose
breaker is probing it after trips) is a worse bet than a healthy node that failed once. In
order, first match wins:

1. an untried node that is healthy;
2. a tried node that is healthy;
3. an untried node, including a held node whose figures are recent (its hold yields);
4. any node, and only then any node a recovery holds out (as `decide` lets a hold yield).

Before the tiers: while a recovery's redundancy plan holds the request, its standby takes
the retry when it is untried, healthy and eligible (routing/redundancy.py).

Tier 3 is reached when no node is healthy: the request failed on nodes that are themselves
failing. A held node whose figures are recent is the better bet than going back to a
failing node: a node under a staged restore (it passed its recovery's health checks and
serves a share of live traffic), or a node whose figures are healthy on at least
`RECENT_EVIDENCE` outcomes (it has been serving, typically because the hold yielded to it
while the rest of the service was excluded). A node held out at 0 % with few or unhealthy
outcomes has no recent figures to go by, so it waits for tier 4.

Healthy, on the snapshot's figures: the breaker is not half-open, the success rate is within
the error-rate SLO, the latency within the latency SLO, an SLO breach is not predicted more
likely than not, and no recovery holds the node out (while one restores it in stages the node
sees few calls and its figures lag a relapse: a first attempt in the restored share may use
it, a retry, the caller's last try, waits for tier 3). The success rate is the blended one
(the catalog counts as 20 calls), so one chance failure among a few calls does not make a
node unhealthy, several do; the health score is not used, because it moves by tens of points
on one failure when a node has had few calls. Within a tier the request's strategy picks, as
for a first attempt. A node whose breaker is open only for rate limiting takes retries: a
rate limit refuses volume, and a retry is one call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from routing.decide import decide
from routing.eligibility import override_for, service_nodes
from routing.redundancy import standby_node
from routing.strategies import effective_health
from routing.types import (
    BreakerState,
    Exclusion,
    ExclusionReason,
    NodeHealth,
    NoEligibleNode,
    ProviderNode,
    RoutingDecision,
    RoutingOverride,
    RoutingRequest,
    RoutingSnapshot,
)

# A node predicted to breach an SLO with at least this probability: more likely than not.
LIKELY = 0.5
# Outcomes a held node's healthy figures must rest on to vouch for it in tier 3: the
# breaker's and the SLO detector's minimum (docs/MONITORING.md).
RECENT_EVIDENCE = 20


def unhealthy_because(node: ProviderNode, live: NodeHealth) -> str | None:
    """Why the node's figures make it a poor retry target, or None when they do not.

    An open breaker is eligibility's business (it excludes the node, unless the breaker is
    open only for rate limiting, which leaves the node a sound target for one call).
    """
    if live.breaker_state is BreakerState.HALF_OPEN:
        return "breaker half-open"
    if live.headroom_spent:
        # A call over a per-second limit is certain to be refused (routing/headroom.py).
        return "its rate capacity is spent for this second"
    slo = 100.0 - node.error_rate_slo
    if live.success_rate < slo:
        return f"success rate {live.success_rate:g}% below the SLO {slo:g}%"
    if live.latency_ms > node.latency_slo_ms:
        return f"latency {live.latency_ms:g} ms above the SLO {node.latency_slo_ms:g} ms"
    if live.failure_probability >= LIKELY:
        return f"an SLO breach predicted (p={live.failure_probability:g})"
    return None


def _on_probation(override: RoutingOverride) -> str:
    """Why a node a recovery holds out is no retry target while a healthy node is."""
    fraction = override.restore_fraction
    if fraction > 0.0:
        return f"a recovery is restoring it ({fraction:.0%} of traffic so far)"
    return "a recovery holds it out"


def decide_retry(
    request: RoutingRequest,
    snapshot: RoutingSnapshot,
    now: datetime,
    *,
    hold_yields: bool = True,
    clock: Callable[[], float] | None = None,
) -> RoutingDecision:
    """The node for a retry of ``request``, which failed on ``request.failed_providers``.

    Raises UnknownService and NoEligibleNode as `decide` does (the latter only when no node
    of the service is eligible at all); ``hold_yields`` and ``clock`` as for `decide`.
    """
    tried = request.failed_providers
    unhealthy: dict[str, str] = {}
    held_healthy: set[str] = set()  # held nodes whose own figures are healthy
    override = snapshot.overrides.get(request.service)
    for node in service_nodes(snapshot, request.service):
        why = unhealthy_because(node, effective_health(node, snapshot.health))
        if why is None and override is not None and node.node_id in override.excluded_nodes:
            why = _on_probation(override)
            held_healthy.add(node.node_id)
        if why is not None:
            unhealthy[node.node_id] = why
    avoided = frozenset(unhealthy)
    first = _to_standby(request, snapshot, now, tried, avoided)
    if first is not None:
        return first
    tiers: tuple[frozenset[str], ...] = (tried | avoided, avoided, tried, frozenset())
    eased = _eased(snapshot, request.service, override, held_healthy) if hold_yields else snapshot
    error: NoEligibleNode | None = None
    for number, avoid in enumerate(tiers, start=1):
        try:
            decision = decide(
                replace(request, failed_providers=avoid),
                eased if number == 3 else snapshot,
                now,
                rate_limited_eligible=True,
                # A hold yields in the last tier (in tier 3 only for its recent nodes).
                hold_yields=hold_yields and number == len(tiers),
                clock=clock,
            )
        except NoEligibleNode as exc:
            error = exc
            continue
        return replace(decision, exclusions=_explained(decision.exclusions, tried, unhealthy))
    assert error is not None
    raise error


def _to_standby(
    request: RoutingRequest,
    snapshot: RoutingSnapshot,
    now: datetime,
    tried: frozenset[str],
    avoided: frozenset[str],
) -> RoutingDecision | None:
    """The retry on the standby of the redundancy plan holding the request, when it has one
    that is untried, healthy and eligible (routing/redundancy.py); else None."""
    override = override_for(request, snapshot)
    standby = standby_node(snapshot, override)
    if override is None or standby is None:
        return None
    if standby.node_id in tried or standby.node_id in avoided:
        return None
    # Held nodes stay excluded by the hold (and say so); the rest wait for the standby.
    others = (
        frozenset(n.node_id for n in service_nodes(snapshot, request.service))
        - override.excluded_nodes
        - {standby.node_id}
    )
    try:
        decision = decide(
            replace(request, failed_providers=tried | others),
            snapshot,
            now,
            rate_limited_eligible=True,
            hold_yields=False,
        )
    except NoEligibleNode:
        return None
    why = f"the recovery's redundancy plan sends retries to its standby {standby.node_id} first"
    exclusions = _renamed(decision.exclusions, tried, ExclusionReason.STANDBY_FIRST, lambda _: why)
    return replace(decision, exclusions=exclusions)


def _eased(
    snapshot: RoutingSnapshot,
    service: str,
    override: RoutingOverride | None,
    held_healthy: set[str],
) -> RoutingSnapshot:
    """The snapshot with the hold lifted from the held nodes whose figures are recent.

    A staged restore's nodes all are; a node held out at 0 % is when its figures are healthy
    (it is in ``held_healthy``) on at least RECENT_EVIDENCE outcomes.
    """
    if override is None or not override.excluded_nodes:
        return snapshot
    if override.restore_fraction > 0.0:
        recent = override.excluded_nodes
    else:
        recent = frozenset(
            node_id
            for node_id in held_healthy
            if (live := snapshot.health.get(node_id)) is not None
            and live.observations >= RECENT_EVIDENCE
        )
    if not recent:
        return snapshot
    # The override stays (its strategy still applies), without those nodes.
    eased = replace(override, excluded_nodes=override.excluded_nodes - recent)
    return replace(snapshot, overrides={**snapshot.overrides, service: eased})


def _explained(
    exclusions: tuple[Exclusion, ...], tried: frozenset[str], unhealthy: dict[str, str]
) -> tuple[Exclusion, ...]:
    """Exclusions with the nodes held back only for their health named as such."""
    return _renamed(
        exclusions,
        tried,
        ExclusionReason.UNHEALTHY_FOR_RETRY,
        lambda node_id: f"a retry avoids it: {unhealthy[node_id]}",
    )


def _renamed(
    exclusions: tuple[Exclusion, ...],
    tried: frozenset[str],
    reason: ExclusionReason,
    detail: Callable[[str], str],
) -> tuple[Exclusion, ...]:
    """The exclusions with the nodes a retry passed to `decide` as failed providers, though
    the caller did not try them, given their real ``reason`` and ``detail``."""
    return tuple(
        Exclusion(e.node_id, reason, detail(e.node_id))
        if e.reason is ExclusionReason.FAILED_PROVIDER and e.node_id not in tried
        else e
        for e in exclusions
    )
