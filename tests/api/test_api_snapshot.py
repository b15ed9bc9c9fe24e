"""The API's snapshot follows changes committed by other processes without a request-time read."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, update
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.snapshot import SnapshotCache
from routing.health import MonitoringConfig
from routing.types import RoutingSnapshot
from store.base import utcnow
from store.db import transaction
from store.events import HEALTH_ONLY, SNAPSHOT_CHANNEL, snapshot_changed
from store.models import NodeHealthRow, RoutingOverrideRow
from store.outcomes import OutcomeReport, record_outcomes
from switchyard.settings import Settings


def test_override_committed_elsewhere_reaches_the_snapshot(
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
) -> None:
    # PostgreSQL's safety reload runs every 5 s: within the 3 s below only NOTIFY can deliver.
    settings = make_settings(snapshot_poll_seconds=0.05, temporal_address="127.0.0.1:1")
    app = create_app(settings, prepare=False)
    with TestClient(app):
        cache = app.state.runtime.snapshot
        assert "stripe" not in cache.current.overrides
        with transaction(sessions) as session:
            session.add(
                RoutingOverrideRow(
                    workflow_id="recovery:stripe:elsewhere",
                    service="stripe",
                    excluded_nodes=["stripe_primary_us_east"],
                    strategy="AVAILABILITY_FOCUSED",
                    restore_fraction=0.0,
                    created_at=utcnow(),
                    updated_at=utcnow(),
                )
            )
            snapshot_changed(session)
        deadline = time.monotonic() + 3.0
        while "stripe" not in cache.current.overrides and time.monotonic() < deadline:
            time.sleep(0.01)
        override = cache.current.overrides.get("stripe")
    assert override is not None
    assert override.excluded_nodes == frozenset({"stripe_primary_us_east"})


def _override(session: Session) -> None:
    session.add(
        RoutingOverrideRow(
            workflow_id="recovery:stripe:elsewhere",
            service="stripe",
            excluded_nodes=["stripe_primary_us_east"],
            strategy="AVAILABILITY_FOCUSED",
            restore_fraction=0.0,
            created_at=utcnow(),
            updated_at=utcnow(),
        )
    )


def test_a_health_reload_reads_node_health_and_keeps_the_rest(
    clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    cache = SnapshotCache(clean_store, sessions)
    before = cache.refresh()
    since = time.monotonic()
    with transaction(sessions) as session:
        _override(session)
        session.execute(
            update(NodeHealthRow)
            .where(NodeHealthRow.node_id == "stripe_primary_us_east")
            .values(health_score=12.5, observations=7)
        )

    after = cache.refresh_health()

    assert after.health["stripe_primary_us_east"].health_score == 12.5
    assert after.health["stripe_primary_us_east"].observations == 7
    assert after.version == before.version + 1
    # Everything else is the previous snapshot's: the override waits for a full reload.
    assert "stripe" not in after.overrides
    assert after.nodes == before.nodes and after.budgets == before.budgets
    # Callers waiting for a fresh read of everything are not released by it.
    assert not cache.wait_fresh(since, timeout=0.05)
    assert "stripe" in cache.refresh().overrides
    assert cache.wait_fresh(since, timeout=0.05)


def test_reloads_commit_so_pooled_connections_keep_their_prepared_statements(
    clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    """A session closed without commit ends in ROLLBACK, on which psycopg forgets the
    connection's prepared statements (the next outcome batches are planned afresh)."""
    cache = SnapshotCache(clean_store, sessions)
    ends: list[str] = []
    listeners = {
        "commit": lambda conn: ends.append("commit"),
        "rollback": lambda conn: ends.append("rollback"),
    }
    for name, listener in listeners.items():
        event.listen(clean_store, name, listener)
    try:
        cache.refresh()
        cache.refresh_health()
    finally:
        for name, listener in listeners.items():
            event.remove(clean_store, name, listener)
    assert ends == ["commit", "commit"]


def test_an_outcome_batch_notifies_health_only(
    clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    if clean_store.dialect.name != "postgresql":
        pytest.skip("NOTIFY is PostgreSQL's (SQLite replicas poll)")
    url = clean_store.url.set(drivername="postgresql").render_as_string(hide_password=False)
    reports = [OutcomeReport("stripe_primary_us_east", False, 150.0, utcnow()) for _ in range(20)]
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"LISTEN {SNAPSHOT_CHANNEL}")
        with transaction(sessions) as session:
            result = record_outcomes(session, reports, utcnow(), MonitoringConfig())
        with transaction(sessions) as session:
            _override(session)
            snapshot_changed(session)
        payloads = [n.payload for n in listener.notifies(timeout=2.0, stop_after=2)]
    assert result.transitions  # twenty failures open the breaker: routing must hear of it
    assert payloads == [HEALTH_ONLY, ""]


def test_the_reload_thread_reads_what_each_notify_asks_for(
    clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    cache = SnapshotCache(clean_store, sessions)
    reads: list[str] = []

    def full() -> RoutingSnapshot:
        reads.append("full")
        return cache.current

    def health() -> RoutingSnapshot:
        reads.append("health")
        return cache.current

    cache.refresh = full  # type: ignore[method-assign]
    cache.refresh_health = health  # type: ignore[method-assign]

    def reload(*requests: bool) -> str:
        for health_only in requests:
            cache.request(health_only=health_only)
        reads.clear()
        thread = threading.Thread(target=cache._reload_loop)
        thread.start()
        deadline = time.monotonic() + 3.0
        while not reads and time.monotonic() < deadline:
            time.sleep(0.005)
        cache._stop.set()
        cache._wake.set()
        thread.join()
        cache._stop.clear()
        return reads[0]

    assert reload(True) == "health"
    assert reload(True, False) == "full"  # a full request is never downgraded
    assert reload(False, True) == "full"
