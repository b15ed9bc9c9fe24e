"""The simulator's copies of live-system settings match the live system's own values."""

from __future__ import annotations

from dataclasses import replace

from api.incident_guard import protection_config
from api.snapshot import SAFETY_RELOAD_SECONDS
from routing.health import MonitoringConfig
from routing.incidents import ProtectionConfig
from routing.recovery import HEALTHY_MIN_SCORE
from routing.types import ProviderNode
from sim import monitor, switchyard
from sim.scenario import load_scenario
from sim.world import World, load_catalog
from store.health import DRIFT_NOTIFY_INTERVAL, monitoring_config
from switchyard.settings import Settings


def test_monitoring_rules_are_the_default_settings() -> None:
    assert monitoring_config(Settings.model_construct()) == MonitoringConfig()


def test_timers_and_thresholds_match_the_live_system() -> None:
    assert switchyard.SNAPSHOT_RELOAD_SECONDS == SAFETY_RELOAD_SECONDS
    assert DRIFT_NOTIFY_INTERVAL.total_seconds() == monitor.DRIFT_NOTIFY_SECONDS
    # The recovery's health check: the simulator applies the live rule, threshold included.
    node = ProviderNode("n", "svc", "N", "r", 99.9, 0.01, 100.0, 95.0)
    state = monitor.fresh_state(node)
    state.figures = replace(state.figures, health_score=HEALTHY_MIN_SCORE)
    assert state.healthy()
    state.figures = replace(state.figures, health_score=HEALTHY_MIN_SCORE - 0.1)
    assert not state.healthy()
    sweep = Settings.model_fields["health_sweep_interval_seconds"].default
    assert sweep == switchyard.SWEEP_INTERVAL_SECONDS


def test_incident_protections_are_the_default_settings() -> None:
    live = protection_config(Settings.model_construct())
    world = World(load_scenario("samsara_cascade"), load_catalog("maps"), 1)
    policy = switchyard.SwitchyardPolicy(
        world.catalog, world.scenario.request, world.nodes(), traffic=world.traffic
    )

    assert ProtectionConfig() == live
    assert policy.protection == live
