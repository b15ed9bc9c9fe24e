"""Whether a service is under live monitoring: the health sweep assessed its nodes lately."""

from __future__ import annotations

from datetime import datetime, timedelta

from routing.types import RoutingSnapshot


def monitoring_window(sweep_interval_seconds: float, reload_slack_seconds: float) -> timedelta:
    """How old the service's last assessment may be for its monitoring to count as active:
    two sweep intervals (one sweep may run late) plus the delay after which a process's
    snapshot shows a new assessment."""
    return timedelta(seconds=2 * sweep_interval_seconds + reload_slack_seconds)


def monitoring_active(
    snapshot: RoutingSnapshot, service: str, now: datetime, window: timedelta
) -> bool:
    """True when the health sweep assessed the service's nodes within ``window`` of ``now``."""
    assessed = snapshot.assessed_at.get(service)
    return assessed is not None and now - assessed <= window
