"""Fixtures for the routing tests."""

from __future__ import annotations

import pytest
from routing_builders import load_default_snapshot

from routing import RoutingSnapshot


@pytest.fixture(scope="session")
def default_snapshot() -> RoutingSnapshot:
    """The default catalog (providers.yaml) with unspent server budgets."""
    return load_default_snapshot()
