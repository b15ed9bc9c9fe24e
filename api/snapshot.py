"""The in-memory routing snapshot of an API process, kept fresh without per-request reads.

PostgreSQL: a LISTEN connection reloads on every `switchyard_snapshot` NOTIFY (sent in the
same transaction as the change), plus a slow safety reload. A NOTIFY saying that only nodes'
live health changed (outcome batches, several a second under load) re-reads node_health
alone, a tenth of a full reload. SQLite: a short poll.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

import psycopg
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from routing.types import RoutingSnapshot
from store.base import utcnow
from store.db import CONNECT_TIMEOUT_SECONDS, transaction
from store.events import HEALTH_ONLY, SNAPSHOT_CHANNEL
from store.snapshot import load_health, load_snapshot

log = logging.getLogger("switchyard.snapshot")

SAFETY_RELOAD_SECONDS = 5.0

# Reloads read in a transaction that commits. Ended by a ROLLBACK instead (a session closed
# without commit), psycopg drops the connection's prepared statements, and the pooled
# connection's next outcome batches are parsed and planned afresh: on a young outcomes table
# whose statistics are still PostgreSQL's defaults, those fresh plans sort every outcome of a
# node instead of reading its newest ones from the index (tens of milliseconds per batch).


class SnapshotCache:
    """Holds the current snapshot; `current` is a lock-free read on the hot path."""

    def __init__(
        self, engine: Engine, factory: sessionmaker[Session], poll_seconds: float = 0.5
    ) -> None:
        self._engine = engine
        self._factory = factory
        self._poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._loaded = threading.Condition()
        self._read_started = 0.0  # monotonic time at which the current snapshot's read began
        self._stop = threading.Event()
        self._wake = threading.Event()
        # Set before waking the reload thread: what the next reload must read.
        self._full_due = threading.Event()
        self._health_due = threading.Event()
        self._threads: list[threading.Thread] = []
        self._version = 0
        self.current: RoutingSnapshot = RoutingSnapshot(nodes={})
        self.loaded_at = 0.0
        self.last_error: str | None = None

    def refresh(self) -> RoutingSnapshot:
        """Reload from the store now and return the new snapshot."""
        with self._lock, transaction(self._factory) as session:
            started = time.monotonic()
            self._version += 1
            snapshot = load_snapshot(session, utcnow(), version=self._version)
            self.current = snapshot
            self.loaded_at = time.monotonic()
            self.last_error = None
        with self._loaded:
            self._read_started = max(self._read_started, started)
            self._loaded.notify_all()
        return snapshot

    def refresh_health(self) -> RoutingSnapshot:
        """Re-read the nodes' live health only; the rest is the current snapshot's.

        Does not count as a fresh read for `wait_fresh`: its callers wait for other parts.
        """
        with self._lock, transaction(self._factory) as session:
            self._version += 1
            snapshot = dataclasses.replace(
                self.current, health=load_health(session), version=self._version
            )
            self.current = snapshot
            self.loaded_at = time.monotonic()
            self.last_error = None
        return snapshot

    def request(self, *, health_only: bool = False) -> None:
        """Ask the reload thread for a reload: of node health alone, or of everything."""
        (self._health_due if health_only else self._full_due).set()
        self._wake.set()

    def wait_fresh(self, since: float, timeout: float = 2.0) -> bool:
        """Block until the snapshot was read after monotonic time `since` (True), or timeout.

        Callers that just committed a change (through the worker) wait here instead of
        reloading themselves: one reload serves every request waiting when it starts.
        """
        deadline = time.monotonic() + timeout
        with self._loaded:
            while self._read_started < since:
                self.request()
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return False
                self._loaded.wait(remaining)
        return True

    def start(self) -> None:
        """Load once, then keep the snapshot fresh in background threads."""
        self.refresh()
        reloader = threading.Thread(target=self._reload_loop, name="snapshot-reload", daemon=True)
        self._threads.append(reloader)
        if self._engine.dialect.name == "postgresql":
            listener = threading.Thread(
                target=self._listen_loop, name="snapshot-listen", daemon=True
            )
            self._threads.append(listener)
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop the background threads."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=2)

    @property
    def reload_seconds(self) -> float:
        """The longest a committed change waits for this process's next reload (NOTIFY aside)."""
        return self._interval()

    def _interval(self) -> float:
        if self._engine.dialect.name == "postgresql":
            return SAFETY_RELOAD_SECONDS
        return self._poll_seconds

    def _reload_loop(self) -> None:
        while not self._stop.is_set():
            woken = self._wake.wait(self._interval())
            self._wake.clear()
            if self._stop.is_set():
                return
            # Taken before reading, so a request arriving during the read runs another one.
            full = not woken or self._full_due.is_set() or not self._health_due.is_set()
            self._full_due.clear()
            self._health_due.clear()
            try:
                if full:
                    self.refresh()
                else:
                    self.refresh_health()
            except Exception as exc:  # the store may be briefly down; keep the last snapshot
                self.last_error = f"{exc.__class__.__name__}"
                log.warning("snapshot reload failed: %s", exc.__class__.__name__)

    def _listen_loop(self) -> None:
        conninfo = self._engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
                ) as conn:
                    conn.execute(f"LISTEN {SNAPSHOT_CHANNEL}")
                    # A change may have happened while we were not listening.
                    self.request()
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=0.2, stop_after=1):
                            self.request(health_only=notice.payload == HEALTH_ONLY)
            except Exception as exc:
                log.warning("snapshot listener reconnecting: %s", exc.__class__.__name__)
                self._stop.wait(1.0)
