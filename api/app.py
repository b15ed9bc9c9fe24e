"""The FastAPI application: lifespan, routers and error handlers."""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType

from fastapi import FastAPI

from api.decision_writer import DecisionWriter
from api.errors import install_error_handlers
from api.events_hub import build_events_hub
from api.incident_guard import IncidentProtector, protection_config
from api.metrics import install_metrics
from api.paths import PREFIX
from api.receipt_sealer import ReceiptSealer
from api.routes import (
    analytics,
    audit,
    catalog,
    codec,
    connections,
    coordination,
    dashboard,
    emergency,
    events,
    health,
    incidents,
    outcomes,
    providers,
    recovery,
)
from api.runtime import ApiRuntime
from api.security import install_security
from api.snapshot import SnapshotCache
from store.db import make_engine, make_session_factory
from store.decisions_pg import BatchConnection
from store.prepare import prepare_store
from switchyard.settings import Settings, get_settings
from switchyard.tracing import instrument_app

GIL_SWITCH_INTERVAL_SECONDS = 0.0005
GC_YOUNG_THRESHOLD = 7000  # allocations between young collections (CPython's default: 700)


def build_runtime(settings: Settings) -> ApiRuntime:
    """Open the store and load the snapshot."""
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    sessions = make_session_factory(engine)
    snapshot = SnapshotCache(engine, sessions, poll_seconds=settings.snapshot_poll_seconds)
    snapshot.start()
    # The decision writer's thread waits on PostgreSQL a dozen times per batch; each time it
    # wants the GIL back it waits up to the switch interval for the busy event loop (the
    # convoy effect). 5 ms by default: a batch could spend 50 ms queueing for the GIL.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)
    connection = None
    if engine.dialect.name == "postgresql":
        url = engine.url.set(drivername="postgresql")
        connection = BatchConnection(url.render_as_string(hide_password=False))
    decisions = DecisionWriter(sessions, connection=connection)
    return ApiRuntime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        snapshot=snapshot,
        decisions=decisions,
        receipts=ReceiptSealer(sessions),
        incidents=IncidentProtector(sessions, protection_config(settings)),
    )


def settle_garbage_collector() -> None:
    """Keep the cyclic collector off the hot path once start-up is done.

    Every request allocates a few thousand container objects; with the default thresholds the
    collector ran several times per request and, each time it reached the oldest generation,
    walked every object loaded at start-up (catalog, models, routes). Start-up objects are
    frozen out of its reach, and the young generation is collected ten times less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def create_app(settings: Settings | None = None, *, prepare: bool = True) -> FastAPI:
    """Build the app; `prepare` runs migrations and catalog loading at start-up."""
    resolved = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if prepare:
            prepare_store(resolved)
        runtime = build_runtime(resolved)
        app.state.runtime = runtime
        runtime.receipts.start()
        runtime.incidents.start()
        # Live events: app.state.events_hub also tells metrics its `clients` and `delivered`.
        hub = app.state.events_hub = build_events_hub(runtime)
        try:
            await hub.start()
            settle_garbage_collector()
            yield
        finally:
            await hub.stop()
            await runtime.close()

    app = FastAPI(
        title="Switchyard",
        summary="Routing and durable recovery for external API providers.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # Before security: its middleware wraps this one, so request ids are set when it runs.
    install_metrics(app, resolved)
    install_security(app, resolved)
    instrument_app(app, resolved)
    for module in ROUTERS:
        app.include_router(module.router, prefix=PREFIX)
    # Temporal's remote codec protocol: the UI is pointed at {api}/codec.
    app.include_router(codec.router)
    app.include_router(dashboard.pages)
    return app


# Routing tries the routers in this order, route by route, on every request: the volume paths
# (decisions, outcome batches) come first. No route below shares their paths.
ROUTERS: list[ModuleType] = [
    health,
    coordination,
    outcomes,
    analytics,
    recovery,
    incidents,
    connections,
    emergency,
    providers,
    catalog,
    audit,
    events,
    dashboard,
]
