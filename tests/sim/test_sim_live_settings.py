"""The simulator's copies of live-system settings match the live system's own values."""

from __future__ import annotations

from activities.recovery import HEALTHY_MIN_SCORE
from api.snapshot import SAFETY_RELOAD_SECONDS
from routing.health import MonitoringConfig
from sim import monitor, switchyard
from store.health import DRIFT_NOTIFY_INTERVAL, monitoring_config
from switchyard.settings import Settings


def test_monitoring_rules_are_the_default_settings() -> None:
    assert monitoring_config(Settings.model_construct()) == MonitoringConfig()


def test_timers_and_thresholds_match_the_live_system() -> None:
    assert switchyard.SNAPSHOT_RELOAD_SECONDS == SAFETY_RELOAD_SECONDS
    assert DRIFT_NOTIFY_INTERVAL.total_seconds() == monitor.DRIFT_NOTIFY_SECONDS
    assert monitor.HEALTHY_MIN_SCORE == HEALTHY_MIN_SCORE
    sweep = Settings.model_fields["health_sweep_interval_seconds"].default
    assert sweep == switchyard.SWEEP_INTERVAL_SECONDS
