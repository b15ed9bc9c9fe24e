"""Cross-stream correlation, the consumer graph and cascade protection (routing/incidents.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from routing_builders import NOW

from routing import ProviderNode
from routing.incidents import (
    ConsumerGraph,
    ConsumerGraphError,
    ErrorSignal,
    OpenIncident,
    Protection,
    ProtectionConfig,
    RetryWindow,
    blast_radius,
    correlate,
    protection_refusal,
)
from routing.types import BudgetPeriod, BudgetState, Priority, RoutingRequest

GRAPH = ConsumerGraph.of(
    {
        "route_optimization": ["samsara", "maps"],
        "driver_notifications": ["twilio", "route_optimization"],
    },
    ["samsara", "maps", "twilio", "stripe"],
)
NODES = {
    n.node_id: n
    for n in (
        ProviderNode("samsara_primary", "samsara", "S", "us-east", 99.5, 0.05, 200, 93),
        ProviderNode("samsara_backup", "samsara", "S2", "us-west", 98.8, 0.05, 250, 88),
        ProviderNode("samsara_east_2", "samsara", "S3", "us-east", 98.0, 0.06, 300, 85),
        ProviderNode("mapbox_primary", "maps", "M", "us-east-1", 99.6, 0.005, 120, 94),
        ProviderNode("stripe_primary", "stripe", "P", "us-east-1", 99.8, 0.029, 150, 95),
    )
}
SAMSARA = OpenIncident(
    "inc_1",
    opened_at=NOW,
    last_error_at=NOW,
    failed_nodes=frozenset({"samsara_primary"}),
    services=frozenset({"samsara"}),
    cascading=frozenset({"route_optimization", "driver_notifications"}),
)


def signal(service: str, *failed: str, minutes: float = 1, **extra: object) -> ErrorSignal:
    return ErrorSignal(
        service,
        frozenset(failed),
        frozenset(),
        NOW + timedelta(minutes=minutes),
        **extra,  # type: ignore[arg-type]
    )


def test_the_seeds_maps_error_joins_the_samsara_incident_through_its_consumers() -> None:
    # route_optimization cascades from samsara and uses maps: maps is in the blast radius.
    assert "maps" in blast_radius(SAMSARA, GRAPH)
    joined = correlate(signal("maps", "mapbox_primary"), [SAMSARA], GRAPH, NODES)
    assert (joined.incident_id, joined.rule) == ("inc_1", "cascade")


def test_each_rule_and_a_new_incident() -> None:
    same = correlate(signal("samsara", "samsara_primary"), [SAMSARA], GRAPH, NODES)
    region = correlate(signal("samsara", "samsara_east_2"), [SAMSARA], GRAPH, NODES)
    other = correlate(signal("stripe", "stripe_primary"), [SAMSARA], GRAPH, NODES)
    named = correlate(signal("stripe", "stripe_primary", incident_id="inc_9"), [], GRAPH, NODES)
    assert (same.rule, region.rule, other.rule, named.rule) == (
        "same_node",
        "same_provider_region",
        "new",
        "explicit",
    )
    assert other.incident_id is None and named.incident_id == "inc_9"
    # The other samsara region is a different place: not the same provider region.
    backup = correlate(signal("samsara", "samsara_backup"), [SAMSARA], GRAPH, NODES)
    assert backup.rule == "cascade"  # ... but samsara itself was hit directly


def test_the_window_and_the_oldest_incident_decide() -> None:
    late = correlate(signal("maps", "mapbox_primary", minutes=45), [SAMSARA], GRAPH, NODES)
    assert late.rule == "new"
    younger = OpenIncident(
        "inc_0",
        NOW + timedelta(minutes=1),
        NOW + timedelta(minutes=1),
        SAMSARA.failed_nodes,
        SAMSARA.services,
        SAMSARA.cascading,
    )
    first = correlate(
        signal("samsara", "samsara_primary", minutes=2), [younger, SAMSARA], GRAPH, NODES
    )
    assert first.incident_id == "inc_1"  # the oldest open incident wins, whatever the order


def test_a_member_stream_stays_in_its_incident_whatever_the_window() -> None:
    member = OpenIncident(
        "inc_2",
        NOW,
        NOW,
        frozenset({"stripe_primary"}),
        frozenset({"stripe"}),
        frozenset(),
        streams=frozenset({"stream_stripe"}),
    )
    again = correlate(
        signal("stripe", minutes=90, stream_id="stream_stripe"), [SAMSARA, member], GRAPH, NODES
    )
    assert (again.incident_id, again.rule) == ("inc_2", "same_stream")
    stranger = correlate(signal("stripe", minutes=90, stream_id="other"), [member], GRAPH, NODES)
    assert stranger.rule == "new"


def test_a_consumer_graph_with_a_cycle_or_a_stranger_is_refused() -> None:
    with pytest.raises(ConsumerGraphError, match="cycle: a -> b -> a"):
        ConsumerGraph.of({"a": ["b"], "b": ["a"]}, ["stripe"])
    with pytest.raises(ConsumerGraphError, match=r"consumers\.a\.uses: nope"):
        ConsumerGraph.of({"a": ["nope"]}, ["stripe"])
    assert GRAPH.providers_used_by("driver_notifications") == {"twilio", "samsara", "maps"}
    assert GRAPH.consumers_of("maps") == {"route_optimization", "driver_notifications"}


BUDGET = BudgetState("maps", BudgetPeriod.daily, 500.0, 100.0)


def request(priority: Priority = Priority.NORMAL, *failed: str) -> RoutingRequest:
    return RoutingRequest("maps", "route", priority=priority, failed_providers=frozenset(failed))


def test_retries_are_budgeted_per_request_and_per_service() -> None:
    config = ProtectionConfig(retries_per_request=2, retry_ratio=0.2, min_retries=3)
    window = RetryWindow(config.retry_window_seconds)
    for t in range(10):
        window.count(t, retry=False)
    assert protection_refusal(request(Priority.HIGH, "a", "b"), BUDGET, window, 10, config) is None
    refused = protection_refusal(request(Priority.HIGH, "a", "b", "c"), BUDGET, window, 10, config)
    assert refused is not None and refused[0] is Protection.retry_budget_exhausted
    for t in range(3):  # min_retries: 3 (0.2 x 10 first attempts is 2)
        window.count(10 + t, retry=True)
    refused = protection_refusal(request(Priority.CRITICAL, "a"), BUDGET, window, 13, config)
    assert refused is not None and "3 retries" in refused[1]
    # The window moves on: old attempts stop counting.
    assert protection_refusal(request(Priority.CRITICAL, "a"), BUDGET, window, 200, config) is None


def test_the_last_of_the_budget_is_kept_for_critical_and_high_traffic() -> None:
    config = ProtectionConfig(reserved_share=0.3)
    window = RetryWindow(config.retry_window_seconds)
    low = BudgetState("maps", BudgetPeriod.daily, 500.0, 360.0)  # 140 left, under 150
    refused = protection_refusal(request(Priority.NORMAL), low, window, 0, config)
    assert refused is not None and refused[0] is Protection.shed_for_incident
    assert protection_refusal(request(Priority.HIGH), low, window, 0, config) is None
    assert protection_refusal(request(Priority.NORMAL), BUDGET, window, 0, config) is None
    assert protection_refusal(request(Priority.NORMAL), None, window, 0, config) is None
