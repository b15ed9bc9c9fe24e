"""Group commit for routing decisions: one writer per API process, on its event loop.

Requests hand their decision (what it charges, and how to build its record once the batch's
integration time is measured) to the writer and wait for its commit. For each batch the writer
opens one transaction, has the store book the charges, builds the accepted decisions' complete
records, and has the store write them (store/decisions.py). While one transaction is
in flight the next decisions queue up and go together in the following one, so the budget
row locks, the statements and the commit's flush are paid once per batch instead of once per
request. Nothing waits for a batch to fill: an idle writer commits a lone decision at once.

On PostgreSQL the usual batch goes in two round trips on the writer's own connection, awaited
on the event loop (store/decisions_pg.py): no thread, so no GIL hand-over per statement
between the writer and the loop serving requests. Other batches (an emergency's cap, a budget
running out) and every batch on SQLite go statement by statement in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from api import metrics
from store.db import transaction
from store.decisions import (
    Booking,
    DecisionCharge,
    DecisionRecord,
    Recorded,
    book_decisions,
    write_decisions,
)
from store.decisions_pg import (
    BatchConnection,
    abandon,
    book_in_one_round_trip,
    write_in_one_round_trip,
)

log = logging.getLogger("switchyard.api")


class DecisionAnswer(Protocol):
    """Builds a booked decision's complete record once its integration time is known."""

    def record(self, integration_ms: float) -> DecisionRecord:
        """The decision's coordination row, events and audit entry."""
        ...


@dataclass(frozen=True, slots=True)
class PendingDecision:
    """A decision waiting for its batch: what it charges and how its record is built."""

    charge: DecisionCharge
    answer: DecisionAnswer


_Pending = tuple[PendingDecision, "asyncio.Future[Recorded]"]


class DecisionWriter:
    """Records decisions in batches; `record` returns once the decision's batch committed."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        max_batch: int = 128,
        connection: BatchConnection | None = None,
    ) -> None:
        self.sessions = sessions
        self.max_batch = max_batch
        # PostgreSQL: the usual batch goes in two round trips on this connection.
        self.connection = connection
        self._pending: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.decisions = 0

    async def record(self, decision: PendingDecision) -> Recorded:
        """Queue the decision and wait for its batch; raises what the batch raised.

        A request that goes away meanwhile does not take its decision with it: the batch is
        the writer's task, not the request's.
        """
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._pending.append((decision, future))
        if self._task is None or self._task.done():
            # A context of its own: the writer's logs are not the first request's.
            self._task = asyncio.create_task(
                self._drain(), name="decision-writer", context=contextvars.Context()
            )
        return await future

    async def stop(self) -> None:
        """Finish the queued decisions, then close the connection."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.connection is not None:
            await self.connection.close()

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: len(batch)]
            await self._write(batch)

    async def _write(self, batch: list[_Pending]) -> None:
        try:
            results = await self._commit([decision for decision, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], error=exc)
                return
            # One bad decision must not fail the others: record each on its own.
            log.warning("decision batch of %d failed (%s); retrying one by one", len(batch), exc)
            for single in batch:
                await self._write([single])
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)

    async def _commit(self, batch: list[PendingDecision]) -> list[Recorded]:
        for decision in batch:
            decision.charge.refusal = None  # a retried batch starts over
        started, path = time.perf_counter(), "two_round_trips"
        results = None
        if self.connection is not None:
            results = await self._in_two_round_trips(self.connection, batch)
        if results is None:
            path = "step_by_step"
            results = await asyncio.to_thread(self._step_by_step, batch)
        metrics.decision_batch(path, len(batch), time.perf_counter() - started)
        self.batches += 1
        self.decisions += sum(1 for r in results if r.refusal is None)
        return results

    async def _in_two_round_trips(
        self, connection: BatchConnection, batch: list[PendingDecision]
    ) -> list[Recorded] | None:
        """PostgreSQL's usual batch; None when it must go step by step (nothing written)."""
        booking = await book_in_one_round_trip(connection, [d.charge for d in batch])
        if booking is None:
            return None
        try:
            records = [d.answer.record(booking.integration_ms) for d in batch]
        except BaseException:  # a decision could not be completed: none of the batch is kept
            await abandon(connection)
            raise
        await write_in_one_round_trip(connection, booking, records)
        return [Recorded(None) for _ in batch]

    def _step_by_step(self, batch: list[PendingDecision]) -> list[Recorded]:
        with transaction(self.sessions) as session:
            booking = book_decisions(session, [d.charge for d in batch])
            write_decisions(session, completed(batch, booking))
        return [Recorded(refusal) for refusal in booking.refusals]


def completed(batch: list[PendingDecision], booking: Booking) -> list[DecisionRecord]:
    """The complete records of the batch's booked decisions."""
    return [
        decision.answer.record(booking.integration_ms)
        for decision, refusal in zip(batch, booking.refusals, strict=True)
        if refusal is None
    ]


def _settle(
    future: asyncio.Future[Recorded],
    *,
    result: Recorded | None = None,
    error: Exception | None = None,
) -> None:
    """Hand the outcome over unless the request went away (its decision is recorded anyway)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert result is not None
        future.set_result(result)
