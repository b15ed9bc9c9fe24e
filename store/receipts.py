"""Audit receipts: the audit of high-volume writes without the chain's lock on their path.

Appending to the hash chain takes one lock for the whole chain until the transaction
commits, so every write that appends waits for the one before it to reach the disk. An
outcome batch instead writes a receipt (who, what, when, its size and the SHA-256 of its
body) in its own transaction: durable with the batch, nothing locked. A sealer folds the
receipts into the chain shortly after (the API runs one every second, and at shutdown): one
chain entry per principal, action and second, listing every batch's request id, counts and
digest, after which the receipts are deleted. A receipt is sealed exactly once: sealers take
their receipts with FOR UPDATE SKIP LOCKED on PostgreSQL (SQLite has one writer at a time),
and the entries and the deletion commit together.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, func, insert, select
from sqlalchemy.orm import Session

from store.audit import AuditRecord
from store.audit import append as append_audit
from store.base import iso_z
from store.models import AuditReceipt

# Receipts listed in one chain entry at most (an entry's detail stays a few kilobytes).
BATCHES_PER_ENTRY = 100
# Receipts one sealing transaction takes at most.
SEAL_LIMIT = 5000
_INSERT = insert(cast(Table, AuditReceipt.__table__))


def record_receipt(session: Session, record: AuditRecord, at: datetime) -> None:
    """Add the write's receipt to the session's transaction.

    A Core INSERT on the session's connection, sent at once: an ORM object would cost a
    unit-of-work flush at commit on every batch for a row nobody reads back.
    """
    session.connection().execute(
        _INSERT,
        {
            "at": at,
            "principal": record.principal[:200],
            "role": record.role[:64],
            "action": record.action[:100],
            "resource": record.resource[:300],
            "request_id": record.request_id[:100],
            "outcome": record.outcome[:64],
            "detail": record.detail,
        },
    )


def seal_receipts(session: Session, *, before: datetime) -> int:
    """Fold the receipts recorded before `before` into the chain; how many were sealed."""
    receipts = session.scalars(
        select(AuditReceipt)
        .where(AuditReceipt.at < before)
        .order_by(AuditReceipt.id)
        .limit(SEAL_LIMIT)
        .with_for_update(skip_locked=True)
    ).all()
    if not receipts:
        return 0
    groups: dict[tuple[str, str, str, str, int], list[AuditReceipt]] = defaultdict(list)
    for receipt in receipts:
        second = int(receipt.at.timestamp())
        key = (receipt.principal, receipt.role, receipt.action, receipt.outcome, second)
        groups[key].append(receipt)
    records = []
    for (principal, role, action, outcome, _), members in groups.items():
        for start in range(0, len(members), BATCHES_PER_ENTRY):
            part = members[start : start + BATCHES_PER_ENTRY]
            records.append(
                AuditRecord(
                    principal=principal,
                    role=role,
                    action=action,
                    resource=part[0].resource,
                    request_id=part[0].request_id,
                    outcome=outcome,
                    detail={
                        "sealed": len(part),
                        "from": iso_z(part[0].at),
                        "to": iso_z(part[-1].at),
                        "batches": [{"requestId": r.request_id, **r.detail} for r in part],
                    },
                )
            )
    append_audit(session, records)
    session.execute(delete(AuditReceipt).where(AuditReceipt.id.in_([r.id for r in receipts])))
    return len(receipts)


def pending_receipts(session: Session) -> int:
    """Receipts not sealed yet."""
    return int(session.scalar(select(func.count()).select_from(AuditReceipt)) or 0)
