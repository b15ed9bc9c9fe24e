"""Key rotation: re-encrypt every sealed value with the current key (`switchyard keys rotate`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from store.crypto import SEALED_EVENT_FIELDS, DecryptionError, FieldCipher, key_id_of
from store.db import transaction
from store.models import Emergency, ErrorEvent, Event

BATCH = 500


@dataclass(frozen=True)
class SealedColumn:
    """A column holding sealed values, the column bound as row identity, and the primary key."""

    value: InstrumentedAttribute[Any]
    row: InstrumentedAttribute[Any]
    pk: InstrumentedAttribute[Any]


# Every encrypted column; the associated data uses `row` (stable across the row's life).
SEALED_COLUMNS = (
    SealedColumn(ErrorEvent.error_message, ErrorEvent.idempotency_key, ErrorEvent.id),
    SealedColumn(Emergency.emergency_reason, Emergency.coordination_id, Emergency.coordination_id),
    SealedColumn(
        Emergency.business_justification, Emergency.coordination_id, Emergency.coordination_id
    ),
)


@dataclass
class RotationCount:
    """What rotation did to one column."""

    column: str
    rotated: int = 0  # sealed with an older key, now with the current one
    current: int = 0  # already sealed with the current key (and it decrypts)
    encrypted: int = 0  # plaintext from before encryption, now sealed (--encrypt-plaintext)
    failed: list[str] = field(default_factory=list)  # rows that did not decrypt or were plain

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary."""
        return {
            "column": self.column,
            "rotated": self.rotated,
            "current": self.current,
            "encrypted": self.encrypted,
            "failed": len(self.failed),
            "failedRows": self.failed[:20],
        }


def _rekey(
    cipher: FieldCipher,
    stored: str,
    where: dict[str, str],
    count: RotationCount,
    row_label: str,
    encrypt_plaintext: bool,
) -> str | None:
    """The new stored value, or None when it stays (current, or failed and counted)."""
    kid = key_id_of(stored)
    if kid is None:
        if not encrypt_plaintext:
            count.failed.append(f"{row_label}: not encrypted")
            return None
        count.encrypted += 1
        return cipher.encrypt(stored, **where)
    try:
        plaintext = cipher.decrypt(stored, **where)
    except DecryptionError as exc:
        count.failed.append(f"{row_label}: {exc}")
        return None
    if kid == cipher.keyring.current_kid:
        count.current += 1
        return None
    count.rotated += 1
    return cipher.encrypt(plaintext, **where)


def _batches(session: Session, column: SealedColumn, after: Any) -> list[Any]:
    query = select(column.pk, column.row, column.value).order_by(column.pk).limit(BATCH)
    if after is not None:
        query = query.where(column.pk > after)
    return list(session.execute(query).all())


def _rotate_column(
    sessions: sessionmaker[Session],
    cipher: FieldCipher,
    column: SealedColumn,
    encrypt_plaintext: bool,
) -> RotationCount:
    table = str(column.value.class_.__tablename__)
    count = RotationCount(f"{table}.{column.value.key}")
    after: Any = None
    while True:
        with transaction(sessions) as session:
            rows = _batches(session, column, after)
            for pk, row_id, stored in rows:
                where = {"table": table, "column": column.value.key, "row": str(row_id)}
                new = _rekey(cipher, stored, where, count, str(row_id), encrypt_plaintext)
                if new is not None:
                    session.execute(
                        update(column.value.class_)
                        .where(column.pk == pk)
                        .values({column.value.key: new})
                    )
        if len(rows) < BATCH:
            return count
        after = rows[-1][0]


def _events(session: Session, after: int) -> list[Event]:
    return list(
        session.scalars(
            select(Event)
            .where(Event.id > after, Event.event_type.in_(sorted(SEALED_EVENT_FIELDS)))
            .order_by(Event.id)
            .limit(BATCH)
        )
    )


def _rotate_events(
    sessions: sessionmaker[Session], cipher: FieldCipher, encrypt_plaintext: bool
) -> Iterator[RotationCount]:
    counts = {
        name: RotationCount(f"events.payload.{name}")
        for names in SEALED_EVENT_FIELDS.values()
        for name in names
    }
    after = 0
    while True:
        with transaction(sessions) as session:
            events = _events(session, after)
            for event in events:
                payload = dict(event.payload)
                row = event.coordination_id or ""
                for name in SEALED_EVENT_FIELDS[event.event_type]:
                    if not isinstance(payload.get(name), str):
                        continue
                    where = {"table": "events", "column": f"payload.{name}", "row": row}
                    label = f"event {event.id}"
                    new = _rekey(
                        cipher, payload[name], where, counts[name], label, encrypt_plaintext
                    )
                    if new is not None:
                        payload[name] = new
                if payload != event.payload:
                    event.payload = payload
        if len(events) < BATCH:
            break
        after = events[-1].id
    yield from counts.values()


def rotate_keys(
    sessions: sessionmaker[Session], cipher: FieldCipher, *, encrypt_plaintext: bool = False
) -> list[RotationCount]:
    """Re-encrypt every sealed value not under the current key; idempotent, batch by batch."""
    counts = [_rotate_column(sessions, cipher, c, encrypt_plaintext) for c in SEALED_COLUMNS]
    counts.extend(_rotate_events(sessions, cipher, encrypt_plaintext))
    return counts
