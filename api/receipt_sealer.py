"""The API's sealer of audit receipts: every second, and once more at shutdown, the receipts
of outcome batches are folded into the audit chain (store/receipts.py)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from api.periodic import Periodic
from store.base import utcnow
from store.db import transaction
from store.receipts import SEAL_LIMIT, seal_receipts

SEAL_EVERY_SECONDS = 1.0


class ReceiptSealer(Periodic):
    """Seals receipts in the background; several API processes may run one each."""

    def __init__(self, sessions: sessionmaker[Session], every: float = SEAL_EVERY_SECONDS) -> None:
        self.sessions = sessions
        self.every = every
        self.doing = "sealing audit receipts"
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

    def tick(self) -> int:
        return self.seal()
