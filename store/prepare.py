"""Start-up preparation of the store: the schema migrated and the catalog loaded when empty."""

from __future__ import annotations

import logging

from store.catalog import load_catalog_file, seed_catalog
from store.db import make_engine, make_session_factory, migrate, start_up_lock, transaction
from switchyard.settings import Settings

log = logging.getLogger("switchyard.store")


def prepare_store(settings: Settings) -> None:
    """Migrate the schema and load the default catalog into an empty store."""
    catalog = load_catalog_file(settings.catalog_path)
    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        # Under the start-up lock: the API and the worker may both find the catalog empty.
        with (
            start_up_lock(settings.database_url),
            transaction(make_session_factory(engine)) as session,
        ):
            if seed_catalog(session, catalog):
                log.info("loaded provider catalog from %s", settings.catalog_path)
    finally:
        engine.dispose()
