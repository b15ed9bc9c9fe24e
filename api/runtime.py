"""What one API process holds: settings, the store, the snapshot and the Temporal client."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from api.caller_budgets import CallerBudgets
from api.decision_writer import DecisionWriter
from api.incident_guard import IncidentProtector
from api.receipt_sealer import ReceiptSealer
from api.snapshot import SnapshotCache
from routing.headroom import Headroom
from routing.monitoring import monitoring_window
from switchyard.settings import Settings
from temporal_client.client import connect

log = logging.getLogger("switchyard.api")


@dataclass
class ApiRuntime:
    """Long-lived dependencies of the API, built at start-up and closed at shutdown."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    snapshot: SnapshotCache
    decisions: DecisionWriter
    receipts: ReceiptSealer
    incidents: IncidentProtector
    callers: CallerBudgets = field(default_factory=CallerBudgets)
    # Calls this process sent per second to nodes with a known rate capacity.
    headroom: Headroom = field(default_factory=Headroom)
    _temporal: Client | None = None
    _temporal_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def monitoring_window(self) -> timedelta:
        """How recent a service's last health sweep must be for monitoringActive."""
        return monitoring_window(
            self.settings.health_sweep_interval_seconds, self.snapshot.reload_seconds
        )

    async def temporal(self) -> Client:
        """The Temporal client, connected on first use (the API starts even if Temporal is down)."""
        if self._temporal is not None:
            return self._temporal
        async with self._temporal_lock:
            if self._temporal is None:
                self._temporal = await connect(self.settings)
            return self._temporal

    async def close(self) -> None:
        """Finish the queued decisions, stop background work and release connections."""
        await self.decisions.stop()
        await self.receipts.stop()
        await self.incidents.stop()
        self.snapshot.stop()
        self.engine.dispose()
