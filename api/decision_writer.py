"""Group commit for routing decisions: one writer thread per API process.

Requests hand their decision to the writer and wait for its commit. While one transaction is
in flight the next decisions queue up and go together in the following one, so the budget
row locks, the statements and the commit's flush are paid once per batch instead of once per
request. Nothing waits for a batch to fill: an idle writer commits a lone decision at once.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from concurrent.futures import Future, InvalidStateError

from sqlalchemy.orm import Session, sessionmaker

from store.db import transaction
from store.decisions import DecisionDraft, Recorded, record_decisions

log = logging.getLogger("switchyard.api")

_STOP = object()


class DecisionWriter:
    """Records decisions in batches; `record` returns once the decision's batch committed."""

    def __init__(self, sessions: sessionmaker[Session], max_batch: int = 128) -> None:
        self.sessions = sessions
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.decisions = 0

    def start(self) -> None:
        """Start the writer thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="decision-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Finish the queued decisions, then stop."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=30)
            self._thread = None

    async def record(self, draft: DecisionDraft) -> Recorded:
        """Queue the decision and wait for its batch; raises what the batch raised."""
        future: Future[Recorded] = Future()
        self._queue.put((draft, future))
        return await asyncio.wrap_future(future)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    self._queue.put(_STOP)  # finish this batch first, then stop
                    break
                batch.append(item)
            self._write(batch)  # type: ignore[arg-type]

    def _write(self, batch: list[tuple[DecisionDraft, Future[Recorded]]]) -> None:
        try:
            results = self._commit([draft for draft, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], error=exc)
                return
            # One bad decision must not fail the others: record each on its own.
            log.warning("decision batch of %d failed (%s); retrying one by one", len(batch), exc)
            for single in batch:
                self._write([single])
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)

    def _commit(self, drafts: list[DecisionDraft]) -> list[Recorded]:
        for draft in drafts:
            draft.refusal = None  # a retried batch starts over
        with transaction(self.sessions) as session:
            results = record_decisions(session, drafts)
        self.batches += 1
        self.decisions += sum(1 for r in results if r.refusal is None)
        return results


def _settle(
    future: Future[Recorded], *, result: Recorded | None = None, error: Exception | None = None
) -> None:
    """Hand the outcome over unless the request went away (its decision is recorded anyway)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            assert result is not None
            future.set_result(result)
    except InvalidStateError:
        pass
