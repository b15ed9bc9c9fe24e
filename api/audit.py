"""The audit of write requests: who, as which role, did what to what, and the decision made.

The middleware (api/security.py) holds a write request's answer until its entry is appended
(store/audit.py), in a short transaction of its own, so nothing is answered unaudited.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import MutableMapping
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Scope

from api.auth import Principal
from store.audit import AuditRecord, append_entries

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Response fields that say what was decided; the shallowest occurrence of each is kept.
DECISION_FIELDS = (
    "coordinationId",
    "workflowId",
    "nodeId",
    "routingStrategy",
    "selectedStrategy",
    "phase",
    "state",
    "accepted",
)
_SCAN_LIMIT = 400  # JSON nodes visited per response: bounded work on the write path


def decision_summary(body: bytes) -> dict[str, Any]:
    """The decision fields of a JSON answer, or the error code of an error envelope."""
    try:
        document = json.loads(body) if body else None
    except ValueError:
        return {}
    return document_summary(document) if isinstance(document, dict) else {}


def document_summary(document: dict[str, Any]) -> dict[str, Any]:
    """The decision fields of an answer's envelope, or its error code."""
    error = document.get("error")
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return {"error": error["code"]}
    found: dict[str, Any] = {}
    queue: deque[Any] = deque([document.get("data")])
    visited = 0
    while queue and visited < _SCAN_LIMIT and len(found) < len(DECISION_FIELDS):
        node = queue.popleft()
        visited += 1
        if isinstance(node, dict):
            for key, value in node.items():
                if key in DECISION_FIELDS and key not in found and _scalar(value):
                    found[key] = value
                elif isinstance(value, dict | list):
                    queue.append(value)
        elif isinstance(node, list):
            queue.extend(node[:20])
    return found


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and not (
        isinstance(value, str) and len(value) > 200
    )


def audit_record(scope: Scope, status: int, body: bytes) -> AuditRecord:
    """The entry for one answered write request."""
    return answer_record(scope, status, decision_summary(body))


def answer_record(scope: Scope, status: int, summary: dict[str, Any]) -> AuditRecord:
    """The entry for a write request answered with `status` and these decision fields."""
    state: MutableMapping[str, Any] = scope.get("state", {})
    principal = state.get("principal")
    route = scope.get("route")
    template = getattr(route, "path", None) or "(no route)"
    method = scope["method"]
    detail: dict[str, Any] = {"method": method, **summary}
    if isinstance(principal, Principal):
        subject, role = principal.subject, principal.primary_role
    else:
        subject, role = "anonymous", "none"
    return AuditRecord(
        principal=subject,
        role=role,
        action=f"{method} {template}",
        resource=scope["path"],
        request_id=str(state.get("request_id", "")),
        outcome=str(status),
        detail=detail,
    )


class AuditWriter:
    """Group commit: write requests answered at the same moment share one transaction.

    Each request waits for its own entry; while one transaction is in flight the next
    requests queue up and go together in the following one, so the chain's lock and the
    commit's flush are paid once per batch, not once per request.
    """

    def __init__(self, max_batch: int = 256) -> None:
        self.max_batch = max_batch
        self._pending: list[tuple[sessionmaker[Session], AuditRecord, asyncio.Future[None]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def append(self, sessions: sessionmaker[Session], record: AuditRecord) -> None:
        """Return once the entry is committed; raise when it could not be written."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (a new test client): start afresh
            self._loop, self._pending, self._drainer = loop, [], None
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((sessions, record, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            sessions = batch[0][0]
            try:
                await asyncio.to_thread(append_entries, sessions, [r for _, r, _ in batch])
            except Exception as exc:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, _, future in batch:
                    if not future.done():
                        future.set_result(None)


def mark_audited(scope: Scope) -> None:
    """The route wrote the request's entry itself, in its own transaction (see DecisionWriter)."""
    scope.setdefault("state", {})["audited"] = True


def is_audited(scope: Scope) -> bool:
    """True when the route already wrote the request's entry."""
    return bool(scope.get("state", {}).get("audited"))


async def record_write(scope: Scope, status: int, body: bytes) -> None:
    """Append the request's entry; raises when the audit log cannot be written."""
    app = scope["app"]
    await app.state.security.audit.append(
        app.state.runtime.sessions, audit_record(scope, status, body)
    )
