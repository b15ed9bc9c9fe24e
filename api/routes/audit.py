"""GET audit: the hash-chained audit log, page by page, for admins."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import Admin, RuntimeDep
from api.runtime import ApiRuntime
from api.schemas.common import Envelope, ErrorEnvelope, ResponseModel
from store.audit import entries_since

router = APIRouter(tags=["audit"])
ERRORS = {code: {"model": ErrorEnvelope} for code in (401, 403, 422)}
MAX_LIMIT = 1000


class AuditEntryView(ResponseModel):
    """One audit entry with its chain hashes."""

    id: int
    at: datetime
    principal: str
    role: str
    action: str
    resource: str
    request_id: str
    outcome: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(ResponseModel):
    """Entries after `since`, oldest first; pass `nextSince` to read on."""

    entries: list[AuditEntryView]
    next_since: int


def _page(runtime: ApiRuntime, since: int, limit: int) -> AuditPage:
    with runtime.sessions() as session:
        rows = entries_since(session, since, limit)
        views = [AuditEntryView.model_validate(row, from_attributes=True) for row in rows]
    return AuditPage(entries=views, next_since=views[-1].id if views else since)


@router.get(
    "/audit",
    response_model=Envelope[AuditPage],
    responses=ERRORS,  # type: ignore[arg-type]
)
async def get_audit(
    runtime: RuntimeDep,
    _: Admin,
    since: Annotated[int, Query(ge=0, le=2**62, description="Entries with a larger id")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> Envelope[AuditPage]:
    """Audit entries after `since` (an entry id), at most `limit`, oldest first."""
    return Envelope(data=await asyncio.to_thread(_page, runtime, since, limit))
