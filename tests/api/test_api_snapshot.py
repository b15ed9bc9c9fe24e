"""The API's snapshot follows changes committed by other processes without a request-time read."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from store.base import utcnow
from store.db import transaction
from store.events import snapshot_changed
from store.models import RoutingOverrideRow
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
