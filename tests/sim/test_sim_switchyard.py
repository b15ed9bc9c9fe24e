"""Switchyard in the simulator: breakers, recoveries, staged restores, emergencies, prices."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from routing.health import Degradation, MonitoringConfig
from routing.recovery import RecoveryAction, Severity, choose_recovery, plan_recovery
from routing.types import BreakerState, RoutingSnapshot
from sim.engine import Engine, RunRecord
from sim.monitor import Monitor, fresh_state, without_prediction
from sim.recovery import Effect, Phase, RecoveryRun
from sim.runner import ABLATIONS, POLICIES, scenario_catalog
from sim.scenario import Scenario, load_scenario
from sim.switchyard import SwitchyardPolicy, at
from sim.world import World, load_catalog
from workflows.recovery_types import RecoveryConfig

PRIMARY = "stripe_primary_us_east"
SECONDARY = "stripe_secondary_us_west"
PREMIUM = "stripe_premium_emergency"


def run(scenario: Scenario, policy: str = "switchyard", seed: int = 1) -> tuple[RunRecord, object]:
    world = World(scenario, scenario_catalog(scenario), seed)
    nodes = world.nodes()
    chosen = POLICIES[policy](world, nodes)
    return Engine(world, chosen, nodes).run(), chosen


def first_nodes(record: RunRecord, start: float, end: float) -> Counter[str | None]:
    return Counter(
        node for t, node in zip(record.arrivals, record.first_node, strict=True) if start <= t < end
    )


def test_a_dead_primary_trips_its_breaker_and_a_recovery_holds_it_out() -> None:
    scenario = load_scenario("stripe_full_outage").truncated(420)

    record, policy = run(scenario)

    assert isinstance(policy, SwitchyardPolicy)
    before = first_nodes(record, 240, 300)
    during = first_nodes(record, 305, 420)
    assert before.most_common(1)[0][0] == PRIMARY
    assert during[PRIMARY] <= 10  # a few calls until the breaker opens, then none
    assert sum(record.success[i] for i, t in enumerate(record.arrivals) if t >= 300) > 0
    recovery = policy.recoveries[f"recovery:stripe:monitor_{PRIMARY}"]
    assert recovery.plan is not None and recovery.plan.selected.node_id == SECONDARY
    assert recovery.plan.excluded_nodes == frozenset({PRIMARY})
    assert recovery.started <= 300 + 10 + 1  # the next sweep
    state = policy.monitor.states[PRIMARY]
    assert state.status.trips >= 1


def test_traffic_comes_back_through_the_staged_restore() -> None:
    scenario = load_scenario("stripe_full_outage")

    record, policy = run(scenario)

    assert isinstance(policy, SwitchyardPolicy)
    recovery = policy.recoveries[f"recovery:stripe:monitor_{PRIMARY}"]
    assert recovery.phase is Phase.resolved and recovery.ended_at is not None
    assert recovery.ended_at > 900
    after = first_nodes(record, recovery.ended_at + 10, 1800)
    assert after.most_common(1)[0][0] == PRIMARY


def recovery_plan() -> RecoveryRun:
    catalog = load_catalog("stripe")
    snapshot = RoutingSnapshot(nodes={"stripe": catalog.nodes})
    choice = choose_recovery("provider_outage", Severity.high, 0.0, "")
    now = datetime(2025, 8, 16, 10, tzinfo=UTC)
    plan = plan_recovery(choice, "stripe", frozenset({PRIMARY}), snapshot, now)
    assert plan.action is RecoveryAction.failover_to_backup
    return RecoveryRun(
        "recovery:stripe:monitor_x", frozenset({PRIMARY}), plan, 0.0, RecoveryConfig()
    )


def step_until_effect(run: RecoveryRun, t: float, healthy: bool) -> tuple[float, Effect]:
    while True:
        if run.due(t):
            effect = run.advance(t, healthy)
            if effect is not None:
                return t, effect
        t += 1.0


def test_recovery_restores_in_stages_after_two_healthy_checks_and_the_window() -> None:
    run = recovery_plan()

    t1, first = step_until_effect(run, 0.0, healthy=True)
    t2, second = step_until_effect(run, t1 + 1, healthy=True)
    t3, third = step_until_effect(run, t2 + 1, healthy=True)

    # Checks every 30 s; the plan's 120 s monitoring window; 60 s per stage.
    assert (t1, first) == (120.0, Effect(restore_fraction=0.1))
    assert (t2, second) == (180.0, Effect(restore_fraction=0.5))
    assert (t3, third) == (240.0, Effect(finished=True))
    assert run.phase is Phase.resolved and not run.running


def test_an_unhealthy_check_during_the_restore_puts_the_route_back() -> None:
    run = recovery_plan()
    t1, _ = step_until_effect(run, 0.0, healthy=True)

    t2, aborted = step_until_effect(run, t1 + 1, healthy=False)

    assert aborted == Effect(restore_fraction=0.0)
    assert run.phase is Phase.rerouted and run.next_at == t2 + 30.0


def test_a_recovery_without_a_route_ends_unresolved_and_holds_its_nodes_open() -> None:
    config = RecoveryConfig(max_monitoring_minutes=1.0)
    run = RecoveryRun("r", frozenset({PRIMARY}), None, 0.0, config)

    assert not run.due(59.0)
    assert run.advance(60.0, healthy=True) == Effect(finished=True, hold_open=frozenset({PRIMARY}))
    assert run.phase is Phase.unresolved


def test_the_emergency_admits_the_premium_node_while_it_lasts() -> None:
    scenario = load_scenario("stripe_regional_outage")

    record, policy = run(scenario)

    assert isinstance(policy, SwitchyardPolicy)
    before = first_nodes(record, 0, 600)
    waiting = first_nodes(record, 605, 660)
    emergency = first_nodes(record, 662, 1250)
    after = first_nodes(record, 1300, 1800)
    assert PREMIUM not in before and PREMIUM not in waiting
    assert emergency.most_common(1)[0][0] == PREMIUM
    assert PREMIUM not in after  # the 10-minute override ended at 1260 s
    ok_during = [ok for t, ok in zip(record.arrivals, record.success, strict=True) if 665 < t < 960]
    assert sum(ok_during) / len(ok_during) > 0.99


def ramped_monitor(prediction: bool) -> Monitor:
    """A monitor fed samsara_primary's latency climbing 15 ms/s towards its 2000 ms SLO."""
    catalog = load_catalog("samsara")
    config = MonitoringConfig()
    monitor = Monitor(
        {n.node_id: fresh_state(n) for n in catalog.nodes},
        config if prediction else without_prediction(config),
        prediction=prediction,
    )
    for second in range(90):
        monitor.record("samsara_primary", at(second), True, 200.0 + 15.0 * second)
        monitor.ingest(at(second), float(second))
    return monitor


def test_without_prediction_no_probability_reaches_routing() -> None:
    with_prediction = ramped_monitor(prediction=True).states["samsara_primary"]
    without = ramped_monitor(prediction=False).states["samsara_primary"]

    assert with_prediction.failure_probability > 0.5
    assert without.failure_probability == 0.0
    assert without.figures == with_prediction.figures


def test_a_price_rise_reaches_the_catalog_and_moves_traffic() -> None:
    scenario = load_scenario("twilio_budget_squeeze").truncated(600)

    record, policy = run(scenario)

    assert isinstance(policy, SwitchyardPolicy)
    before = first_nodes(record, 0, 300)
    after = first_nodes(record, 301, 600)
    assert before.most_common(1)[0][0] == "twilio_primary_us_east"
    assert after.most_common(1)[0][0] == "twilio_secondary_us_west"
    assert policy.monitor.states["twilio_primary_us_east"].node.cost_per_request == 0.0119


def test_breaker_states_are_the_routing_ones() -> None:
    scenario = load_scenario("stripe_full_outage").truncated(330)

    _, policy = run(scenario)

    assert isinstance(policy, SwitchyardPolicy)
    assert policy.monitor.states[PRIMARY].status.state in (
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
    )


def run_any(scenario: Scenario, policy: str, seed: int) -> tuple[RunRecord, SwitchyardPolicy]:
    world = World(scenario, scenario_catalog(scenario), seed)
    nodes = world.nodes()
    chosen = {**POLICIES, **ABLATIONS}[policy](world, nodes)
    assert isinstance(chosen, SwitchyardPolicy)
    return Engine(world, chosen, nodes).run(), chosen


def test_stacked_recovery_holds_strand_the_unguarded_ablation_not_switchyard() -> None:
    # Seed 3: the primary slows down and is held out; later the backup and then the EU node
    # each show a chance cluster of 5xx (6 in 100 calls). Without the monitor's strand guard
    # they get recoveries of their own and the holds together exclude every node.
    scenario = load_scenario("samsara_latency_ramp").truncated(1200)

    unguarded, ablation = run_any(scenario, "switchyard-unguarded", seed=3)
    live, policy = run_any(scenario, "switchyard", seed=3)

    stranded = sum(1 for node in unguarded.first_node if node is None)
    assert stranded > 500  # every request of several minutes found no eligible node
    assert ablation.name == "switchyard-unguarded" and not ablation.strand_guard
    assert policy.strand_guard
    assert None not in live.first_node
    assert len(live.success) - sum(live.success) < 20
    # The guarded monitor skipped a recovery the ablation started.
    assert set(policy.recoveries) < set(ablation.recoveries)


def test_one_sweep_never_holds_out_every_node_of_a_service() -> None:
    # Every node degraded in the same sweep: the first ones are held, the last is not,
    # because the nodes this sweep already held count against it (monitoring.start_recoveries).
    scenario = load_scenario("samsara_latency_ramp").truncated(60)
    world = World(scenario, scenario_catalog(scenario), 1)
    nodes = world.nodes()
    degraded = [
        Degradation(node.node_id, "samsara", "provider_outage", "high", "test")
        for node in world.catalog.regular
    ]
    regular = [d.node_id for d in degraded]

    held = {}
    for name in ("switchyard", "switchyard-unguarded"):
        policy = {**POLICIES, **ABLATIONS}[name](world, nodes)
        assert isinstance(policy, SwitchyardPolicy)
        policy._start_recoveries(degraded, 10.0)
        held[name] = set(policy._merged_overrides()["samsara"].excluded_nodes)

    assert len(regular) >= 2
    assert held["switchyard"] == set(regular[:-1])  # the last node stays in routing
    assert held["switchyard-unguarded"] == set(regular)
