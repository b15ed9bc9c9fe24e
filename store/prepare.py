"""Start-up preparation of the store: the schema migrated and the catalog loaded when empty."""

from __future__ import annotations

import logging

from store.catalog import catalog_changes, load_catalog_file
from store.catalog_revisions import ensure_revision, live_catalog, seed_catalog
from store.db import make_engine, make_session_factory, migrate, start_up_lock, transaction
from switchyard.settings import Settings

log = logging.getLogger("switchyard.store")


def prepare_store(settings: Settings) -> list[str]:
    """Migrate the schema and load the catalog file into an empty store.

    On a store that has a catalog the file is not applied (the live catalog is changed with
    `switchyard catalog apply` or the API): returns, and logs, how the file differs from the
    live catalog, so a changed file is not ignored silently. Empty when they agree.
    """
    path = settings.catalog_path
    catalog = load_catalog_file(path)
    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        # Under the start-up lock: the API and the worker may both find the catalog empty.
        with (
            start_up_lock(settings.database_url),
            transaction(make_session_factory(engine)) as session,
        ):
            if seed_catalog(session, catalog, str(path)):
                log.info("loaded provider catalog from %s", path)
                return []
            revision = ensure_revision(session, str(path))
            live = live_catalog(session)
            drift = [str(c) for c in catalog_changes(live, catalog)] if live is not None else []
    finally:
        engine.dispose()
    if drift:
        log.warning(
            "%s differs from the live catalog (revision %d) in %d place(s); it is not applied "
            "at start-up: review with `switchyard catalog diff %s`, apply with "
            "`switchyard catalog apply %s`",
            path,
            revision.number,
            len(drift),
            path,
            path,
        )
    return drift
