"""The API's sealer of audit receipts: every second, and once more at shutdown, the receipts
of outcome batches are folded into the audit chain (store/receipts.py)."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.orm import Session, sessionmaker

from store.base import utcnow
from store.db import transaction
from store.receipts import SEAL_LIMIT, seal_receipts

log = logging.getLogger("switchyard.api")
SEAL_EVERY_SECONDS = 1.0


class ReceiptSealer:
    """Seals receipts in the background; several API processes may run one each."""

    def __init__(self, sessions: sessionmaker[Session], every: float = SEAL_EVERY_SECONDS) -> None:
        self.sessions = sessions
        self.every = every
        self._task: asyncio.Task[None] | None = None
        self.sealed = 0

    def seal(self) -> int:
        """Seal the receipts recorded before now (blocking); how many were sealed.

        Receipts that arrive meanwhile wait for the next tick: sealing until none is left
        would never end under steady traffic.
        """
        before, total = utcnow(), 0
        while True:
            with transaction(self.sessions) as session:
                sealed = seal_receipts(session, before=before)
            total += sealed
            if sealed < SEAL_LIMIT:
                self.sealed += total
                return total

    def start(self) -> None:
        """Start sealing every `every` seconds on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="receipt-sealer")

    async def stop(self) -> None:
        """Stop the loop, then seal what is left (a graceful shutdown leaves nothing unsealed)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await asyncio.to_thread(self.seal)
        except Exception as exc:  # the next process to start seals them
            log.warning("audit receipts not sealed at shutdown: %s", exc.__class__.__name__)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await asyncio.to_thread(self.seal)
            except Exception as exc:  # the store may be briefly down: the receipts wait
                log.warning("sealing audit receipts failed: %s", exc.__class__.__name__)
