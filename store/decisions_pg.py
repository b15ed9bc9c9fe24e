"""PostgreSQL: a batch of decisions in two round trips.

On a small machine, waiting for the server's answer costs the client about as much CPU as the
statement itself, and a batch recorded statement by statement (store/decisions.py) waits a
dozen times. The writer's own connection sends each half of the transaction as one string
of statements instead (values bound client-side by psycopg, quoted as literals):

1. ``book_in_one_round_trip``: ``BEGIN``; the budget upserts (booking each group only if all
   of it fits); the stream and monitoring upserts; the audit lock and the audit head. Its
   duration is the decisions' measured backend-integration time.
2. ``write_in_one_round_trip``: the complete records the API built with that figure: the
   coordination rows, the audit entries chained to that head, the events (counter, rows and
   NOTIFY in one statement, store/events.py) and ``COMMIT``.

The events counter row, the one row every writer shares, is locked only inside the second
string, right before COMMIT. A batch that is not the usual one (an emergency's cap to charge,
a budget without room for all of it) is rolled back after the first string, or not started,
and goes the step-by-step way, which takes the decisions one by one in arrival order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Json
from sqlalchemy import JSON, Insert
from sqlalchemy.dialects.postgresql import psycopg as postgresql_psycopg

from store import audit
from store.audit import chain_rows
from store.base import utcnow
from store.db import CONNECT_TIMEOUT_SECONDS
from store.decisions import (
    STATEMENTS,
    DecisionCharge,
    DecisionRecord,
    budget_groups,
    elapsed_ms,
    monitoring_rows,
    stream_rows,
)
from store.events import WRITE_ALL_SQL, number_drafts, write_all_params

_DIALECT = postgresql_psycopg.dialect()  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy
APPLICATION_NAME = "switchyard-decision-writer"  # how pg_stat_activity shows the connection


class _Statement:
    """A statement of store/decisions.py as SQL text for rows with given columns."""

    _cache: dict[tuple[int, tuple[str, ...]], _Statement] = {}

    def __init__(self, statement: Insert, keys: tuple[str, ...]) -> None:
        compiled = statement.compile(dialect=_DIALECT, column_keys=list(keys))
        self.sql = str(compiled)
        self.json = frozenset(c.key for c in statement.table.columns if isinstance(c.type, JSON))
        # Values written into the statement itself (`active = true` on conflict, say).
        self.fixed = {k: v for k, v in compiled.params.items() if k not in keys}

    @classmethod
    def of(cls, statement: Insert, row: dict[str, Any]) -> _Statement:
        """`statement` for rows shaped like `row`, compiled once per shape."""
        key = (id(statement), tuple(row))
        found = cls._cache.get(key)
        if found is None:
            found = cls._cache[key] = cls(statement, key[1])
        return found

    def params(self, row: dict[str, Any]) -> dict[str, Any]:
        return self.fixed | {k: Json(v) if k in self.json else v for k, v in row.items()}


def _coordination_rows(rows: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Any number of coordination rows as one statement: the rows travel as one JSON document.

    Only the rows' own columns are named, so a column they leave out keeps its default.
    """
    columns = ", ".join(rows[0])
    sql = (
        f"INSERT INTO coordinations ({columns}) SELECT {columns} FROM "
        "json_populate_recordset(NULL::coordinations, CAST(%(rows)s AS JSON))"
    )
    document = [row | {"created_at": row["created_at"].isoformat()} for row in rows]
    return sql, {"rows": orjson.dumps(document).decode()}


class BatchConnection:
    """The decision writer's own connection: autocommit, transactions written out in text.

    Opened on first use and again after it broke; a batch whose first string failed on a
    broken connection is tried once more on a new one (nothing of it was committed).
    """

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def cursor(self) -> psycopg.AsyncClientCursor[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                application_name=APPLICATION_NAME,
            )
        return psycopg.AsyncClientCursor(self._conn)

    async def discard(self) -> None:
        """Drop the connection (it broke, or its transaction state is unknown)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    async def close(self) -> None:
        await self.discard()


async def _send(
    cursor: psycopg.AsyncClientCursor[Any], statements: list[tuple[str, Any]]
) -> list[Any]:
    """Run the statements as one string; each one's rows (None when it returns none)."""
    query = ";\n".join(cursor.mogrify(sql, params) for sql, params in statements)
    await cursor.execute(query)
    results: list[Any] = []
    while True:
        results.append(await cursor.fetchall() if cursor.description is not None else None)
        if not cursor.nextset():
            return results


@dataclass(frozen=True, slots=True)
class OpenBooking:
    """A batch booked by the first string: its transaction is open until the second."""

    integration_ms: float
    audit_head: str  # the hash the batch's audit entries chain to


async def book_in_one_round_trip(
    connection: BatchConnection, charges: Sequence[DecisionCharge]
) -> OpenBooking | None:
    """Book the usual batch, leaving its transaction open; None (nothing booked, nothing
    open) when the batch must go step by step. Every charge of a booked batch is accepted."""
    if any(c.emergency_workflow_id is not None for c in charges):
        return None
    groups = budget_groups([c for c in charges if c.budget is not None])
    if any(group.total > group.limit for group in groups):
        return None
    statements = STATEMENTS["postgresql"]
    first: list[tuple[str, Any]] = [("BEGIN", None)]
    for group in groups:
        first.append(_bound(statements.charge_budget, group.charge_params()))
    first += [_bound(statements.touch_streams, row) for row in stream_rows(list(charges))]
    first += [_bound(statements.touch_monitoring, row) for row in monitoring_rows(list(charges))]
    first += [
        (_COUNTER_SQL, None),
        (audit.LOCK_SQL, {"k": audit.APPEND_LOCK_ID}),
        (audit.HEAD_SQL, None),
    ]
    started = time.perf_counter()
    answers = await _first_string(connection, first)
    booked, counter, head = answers[1 : 1 + len(groups)], answers[-3], answers[-1]
    # Not booked: another process spent the budget meanwhile. No counter row: a store being
    # emptied; the step-by-step path puts it back.
    if not all(booked) or not counter[0][0]:
        await abandon(connection)
        return None
    return OpenBooking(elapsed_ms(started), head[0][0] if head else audit.GENESIS)


async def write_in_one_round_trip(
    connection: BatchConnection, booking: OpenBooking, records: Sequence[DecisionRecord]
) -> None:
    """Write the booked batch's complete records and commit."""
    try:
        second: list[tuple[str, Any]] = [
            _coordination_rows([r.coordination.values() for r in records])
        ]
        audits = [r.audit for r in records if r.audit is not None]
        if audits:
            rows = chain_rows(audits, booking.audit_head, utcnow())
            second.append((audit.APPEND_SQL, audit.append_params(rows)))
        events = [event for r in records for event in r.events]
        if events:
            second.append((WRITE_ALL_SQL, write_all_params(events)))
        second.append(("COMMIT", None))
    except BaseException:  # a record could not be written: none of the batch is kept
        await abandon(connection)
        raise
    try:
        answers = await _send(await connection.cursor(), second)
    except BaseException:
        await connection.discard()  # the server rolls back what it did not commit; start clean
        raise
    if events:
        number_drafts(events, int(answers[-2][0][0]))


_COUNTER_SQL = "SELECT EXISTS (SELECT FROM event_log_head)"


def _bound(statement: Insert, row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    compiled = _Statement.of(statement, row)
    return compiled.sql, compiled.params(row)


async def _first_string(
    connection: BatchConnection, statements: list[tuple[str, Any]]
) -> list[Any]:
    """Send the first half; once more on a new connection if the connection was broken."""
    for attempt in (1, 2):
        try:
            return await _send(await connection.cursor(), statements)
        except psycopg.OperationalError:
            await connection.discard()
            if attempt == 2:
                raise
        except BaseException:
            await abandon(connection)
            raise
    raise AssertionError("unreachable")


async def abandon(connection: BatchConnection) -> None:
    """Roll back the open batch (or drop the connection when that fails)."""
    try:
        await (await connection.cursor()).execute("ROLLBACK")
    except psycopg.Error:
        await connection.discard()
