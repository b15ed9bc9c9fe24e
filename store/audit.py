"""The audit log: append-only entries, each hash-chained to the one before it.

hash = sha256(canonical JSON of the entry's fields and prev_hash). Appends are serialised
across processes (PostgreSQL: a transaction-level advisory lock; SQLite: every transaction
begins IMMEDIATE, store/db.py), and the unique prev_hash constraint refuses a fork should
two appends ever read the same head.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from store.base import utcnow
from store.db import transaction
from store.models import AuditEntry

GENESIS = "0" * 64
# Any 64-bit constant, distinct from store/db.py's migration lock.
APPEND_LOCK_ID = 0x5357_4155_4449_54
_FIELD_LIMITS = {
    "principal": 200,
    "role": 64,
    "action": 100,
    "resource": 300,
    "request_id": 100,
    "outcome": 64,
}


@dataclass(frozen=True)
class AuditRecord:
    """What one audited action was: who, as what, did what to what, and how it ended."""

    principal: str
    role: str
    action: str
    resource: str
    request_id: str
    outcome: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class ChainBreak:
    """The first entry whose hash or link does not verify, and why."""

    entry_id: int
    reason: str


@dataclass(frozen=True)
class ChainReport:
    """The result of re-computing the chain."""

    checked: int
    head_hash: str
    broken: ChainBreak | None

    @property
    def ok(self) -> bool:
        """True when every entry verified."""
        return self.broken is None


def _hashed_time(at: datetime) -> str:
    """A time as the hash chain has always hashed it (changing this breaks verification)."""
    return at.isoformat(timespec="microseconds")


def entry_hash(fields: dict[str, Any], prev_hash: str) -> str:
    """sha256 over the canonical JSON (sorted keys, no spaces) of the fields and prev_hash."""
    document = {**fields, "prev_hash": prev_hash}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


_HASHED = ("principal", "role", "action", "resource", "request_id", "outcome", "detail")


def hashed_fields(entry: AuditEntry) -> dict[str, Any]:
    """The fields of a stored entry that its hash covers (everything but id and the hashes)."""
    return _hashed({name: getattr(entry, name) for name in ("at", *_HASHED)})


def _hashed(row: dict[str, Any]) -> dict[str, Any]:
    """hashed_fields of an entry's column values (no ORM object on the append path)."""
    return {"at": _hashed_time(row["at"]), **{name: row[name] for name in _HASHED}}


def _clipped(record: AuditRecord) -> dict[str, str]:
    return {name: str(getattr(record, name))[:limit] for name, limit in _FIELD_LIMITS.items()}


_insert_entries = insert(AuditEntry).returning(AuditEntry.id, sort_by_parameter_order=True)


def append(
    session: Session, records: list[AuditRecord], at: datetime | None = None
) -> list[AuditEntry]:
    """Append entries in the session's transaction, in order, chained to the current head.

    One multi-row INSERT whatever the batch size (this runs in every decision batch); the
    returned entries are detached copies carrying their ids.
    """
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(LOCK_SQL, {"k": APPEND_LOCK_ID})
    head = connection.execute(
        select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)
    ).scalar()
    rows = chain_rows(records, head or GENESIS, at or utcnow())
    if not rows:
        return []
    ids = list(connection.execute(_insert_entries, rows).scalars())
    check_chain_order(ids)
    return [AuditEntry(id=entry_id, **row) for entry_id, row in zip(ids, rows, strict=True)]


def chain_rows(records: list[AuditRecord], prev_hash: str, at: datetime) -> list[dict[str, Any]]:
    """The rows of `records` appended after the entry whose hash is `prev_hash`."""
    rows = []
    for record in records:
        # JSON round trip: the hash must cover exactly what the database gives back.
        detail = json.loads(json.dumps(record.detail, default=str))
        row = {"at": at, "detail": detail, **_clipped(record), "prev_hash": prev_hash}
        row["hash"] = prev_hash = entry_hash(_hashed(row), row["prev_hash"])
        rows.append(row)
    return rows


def check_chain_order(ids: list[int]) -> None:
    """Entries must be numbered in the order they were chained."""
    if ids != sorted(ids):
        raise RuntimeError("audit entries were numbered out of chain order")


def append_entries(sessions: sessionmaker[Session], records: list[AuditRecord]) -> list[AuditEntry]:
    """Append entries in one short transaction of their own (one lock, one head read)."""
    with transaction(sessions) as session:
        return append(session, records)


def append_entry(sessions: sessionmaker[Session], record: AuditRecord) -> AuditEntry:
    """Append one entry in its own short transaction."""
    return append_entries(sessions, [record])[0]


def _in_order(session: Session, batch: int) -> Iterator[AuditEntry]:
    after = 0
    while True:
        rows = list(
            session.scalars(
                select(AuditEntry).where(AuditEntry.id > after).order_by(AuditEntry.id).limit(batch)
            )
        )
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1].id
        session.expunge_all()


def verify_chain(session: Session, batch: int = 1000) -> ChainReport:
    """Re-compute every hash and link in id order; name the first entry that does not verify."""
    expected_prev = GENESIS
    checked = 0
    for entry in _in_order(session, batch):
        if entry.prev_hash != expected_prev:
            reason = (
                "prev_hash does not match the entry before it: an entry was deleted, inserted "
                "or reordered"
            )
            return ChainReport(checked, expected_prev, ChainBreak(entry.id, reason))
        if entry_hash(hashed_fields(entry), entry.prev_hash) != entry.hash:
            reason = "hash does not match the entry's contents: the entry was edited"
            return ChainReport(checked, expected_prev, ChainBreak(entry.id, reason))
        expected_prev = entry.hash
        checked += 1
    return ChainReport(checked, expected_prev, None)


def entries_since(session: Session, since: int, limit: int) -> list[AuditEntry]:
    """Entries with id > since, oldest first."""
    query = select(AuditEntry).where(AuditEntry.id > since).order_by(AuditEntry.id).limit(limit)
    return list(session.scalars(query))


# PostgreSQL, for writers that send the statements of a transaction together (psycopg's
# named parameters): take the lock, read the head, then append rows chained to it. One
# statement whatever the number of rows, numbered in chain order.
LOCK_SQL = "SELECT pg_advisory_xact_lock(%(k)s)"
HEAD_SQL = "SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1"
APPEND_SQL = """
    INSERT INTO audit_log
        (at, principal, role, action, resource, request_id, outcome, detail, prev_hash, hash)
    SELECT r.at, r.principal, r.role, r.action, r.resource, r.request_id, r.outcome, r.detail,
           r.prev_hash, r.hash
    FROM ROWS FROM (
        json_to_recordset(CAST(%(rows)s AS JSON)) AS (
            at TIMESTAMPTZ, principal TEXT, role TEXT, action TEXT, resource TEXT,
            request_id TEXT, outcome TEXT, detail JSON, prev_hash TEXT, hash TEXT
        )
    ) WITH ORDINALITY
        AS r(at, principal, role, action, resource, request_id, outcome, detail, prev_hash,
             hash, ord)
    ORDER BY r.ord
"""


def append_params(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The parameters of APPEND_SQL for rows made by chain_rows: one JSON document."""
    return {"rows": orjson.dumps([row | {"at": row["at"].isoformat()} for row in rows]).decode()}
