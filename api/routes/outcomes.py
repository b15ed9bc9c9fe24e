"""POST outcomes: clients report how their calls went; health and breakers follow at once.

The batch, the node health it implies, breaker transitions and their events, and the batch's
audit receipt (its size, what it recorded and the SHA-256 of its body; sealed into the audit
chain within a second, store/receipts.py) commit in one transaction before the 202 answer.
Recoveries for degraded nodes are started by the worker's health monitor, never here: ingestion
does not wait on Temporal.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session
from starlette.types import Scope

from api import metrics
from api.audit import answer_record, mark_audited
from api.deps import Reporter
from api.direct_route import DirectRoute
from api.errors import ApiError, field_error, fields_message
from api.runtime import ApiRuntime
from api.schemas.common import Envelope, ErrorEnvelope
from api.schemas.outcomes import (
    BreakerTransitionOut,
    OutcomeBatch,
    OutcomeBatchResult,
    OutcomeNode,
)
from store.audit import AuditRecord
from store.base import utcnow
from store.db import transaction
from store.health import monitoring_config
from store.ledger import apply_once
from store.outcomes import IngestResult, OutcomeReport, record_outcomes
from store.receipts import record_receipt

router = APIRouter(tags=["monitoring"], route_class=DirectRoute)
ERRORS = {code: {"model": ErrorEnvelope} for code in (401, 403, 409, 422)}
# Clocks disagree a little; an outcome from further in the future is a client bug.
MAX_CLOCK_SKEW = timedelta(seconds=60)
# An error body names at most this many bad items (the first ones).
MAX_ERROR_DETAILS = 50
MAX_KEY_LENGTH = 200


def _reports(runtime: ApiRuntime, body: OutcomeBatch, now: datetime) -> list[OutcomeReport]:
    """The batch as store reports, or 422 naming every bad item's index and field."""
    snapshot = runtime.snapshot.current
    known = {node.node_id for nodes in snapshot.nodes.values() for node in nodes}
    problems: list[dict[str, str]] = []
    reports = []
    for index, item in enumerate(body.outcomes):
        observed = now if item.observed_at is None else _utc(item.observed_at)
        if item.node_id not in known:
            problems.append(
                {"field": f"outcomes.{index}.nodeId", "message": f"unknown node {item.node_id!r}"}
            )
        if observed > now + MAX_CLOCK_SKEW:
            problems.append(
                {
                    "field": f"outcomes.{index}.observedAt",
                    "message": f"more than {MAX_CLOCK_SKEW.seconds} s in the future",
                }
            )
        reports.append(
            OutcomeReport(
                node_id=item.node_id,
                success=item.success,
                latency_ms=item.latency_ms,
                observed_at=observed,
                coordination_id=item.coordination_id,
                cost=item.cost,
                error_code=item.error_code,
            )
        )
    if problems:
        message = fields_message(p["field"] for p in problems)
        raise ApiError(422, "validation_error", message, problems[:MAX_ERROR_DETAILS])
    return reports


def _utc(at: datetime) -> datetime:
    """A naive timestamp is taken as UTC, as everywhere in Switchyard."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _idempotency_key(request: Request) -> str | None:
    """The caller's Idempotency-Key, or None; 422 naming the header when it is unusable."""
    key = request.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise field_error(
            "header.idempotency-key", f"must be 1 to {MAX_KEY_LENGTH} characters long"
        )
    return key


def _fingerprint(body: OutcomeBatch) -> str:
    return hashlib.sha256(body.model_dump_json().encode()).hexdigest()


def _audit_record(scope: Scope, reports: list[OutcomeReport], digest: str) -> AuditRecord:
    """The batch's audit entry: how many outcomes it records and its body's SHA-256."""
    failed = sum(1 for r in reports if not r.success)
    summary = {"accepted": len(reports), "failed": failed, "sha256": digest}
    return answer_record(scope, 202, summary)


def _envelope(data: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    # Built from OutcomeBatchResult already: encoded once, not validated again on the way out.
    body = {"success": True, "message": "Outcomes recorded", "data": data}
    return Response(orjson.dumps(body), 202, headers, media_type="application/json")


# Documented here because the direct route reads it from the request itself.
IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes a retried batch a no-op: the first answer is given again.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
}


@router.post(
    "/outcomes",
    status_code=202,
    response_model=Envelope[OutcomeBatchResult],
    responses=ERRORS,  # type: ignore[arg-type]
    openapi_extra={"parameters": [IDEMPOTENCY_HEADER]},
)
async def post_outcomes(body: OutcomeBatch, principal: Reporter, request: Request) -> Response:
    """Record a batch of call outcomes durably; node health and breakers move with it."""
    runtime: ApiRuntime = request.app.state.runtime  # not a dependency: a volume path
    idempotency_key = _idempotency_key(request)
    now = utcnow()
    reports = _reports(runtime, body, now)
    audit = _audit_record(request.scope, reports, hashlib.sha256(await request.body()).hexdigest())
    config = monitoring_config(runtime.settings)

    def record(session: Session) -> dict[str, Any]:
        """The batch and its audit entry, in one transaction; the answer's data."""
        data = _result(record_outcomes(session, reports, now, config))
        record_receipt(session, audit, now)
        return data

    if idempotency_key is None:

        def once() -> dict[str, Any]:
            with transaction(runtime.sessions) as session:
                return record(session)

        data = await asyncio.to_thread(once)
        mark_audited(request.scope)
        return _envelope(data)

    fingerprint = _fingerprint(body)
    applied = False

    def effect(session: Session) -> dict[str, Any]:
        nonlocal applied
        applied = True
        return {"fingerprint": fingerprint, "data": record(session)}

    # Keyed by caller: two clients may pick the same key without colliding.
    key = f"outcomes/{principal.subject}/{idempotency_key}"
    stored = await asyncio.to_thread(apply_once, runtime.sessions, key, effect)
    if stored.get("fingerprint") != fingerprint:
        raise ApiError(
            409,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different batch; use a new key per batch",
        )
    if applied:
        mark_audited(request.scope)  # its entry went in with the batch
        return _envelope(stored["data"])
    # A replay: the first answer; the middleware audits the replay itself.
    return _envelope(_first_answer(stored), {"Idempotent-Replayed": "true"})


def _result(ingested: IngestResult) -> dict[str, Any]:
    """A recorded batch's answer data, in wire form."""
    metrics.outcomes_ingested(ingested.accepted, ingested.failed)
    result = OutcomeBatchResult(
        accepted=ingested.accepted,
        failed=ingested.failed,
        nodes=[
            OutcomeNode(
                node_id=n.node_id,
                reported=n.reported,
                health_score=n.health_score,
                success_rate=n.success_rate,
                latency_p50_ms=n.latency_p50_ms,
                latency_p95_ms=n.latency_p95_ms,
                observations=n.observations,
                breaker_state=n.breaker_state,
                failure_probability=n.failure_probability,
                admitted_share=n.admitted_share,
                rate_capacity=n.rate_capacity,
            )
            for n in ingested.nodes
        ],
        breaker_transitions=[
            BreakerTransitionOut(
                node_id=t.node_id,
                service_name=t.service,
                previous_state=t.before.value,
                state=t.after.value,
                reason=t.reason,
            )
            for t in ingested.transitions
        ],
    )
    return result.model_dump(mode="json", by_alias=True)


def _first_answer(stored: dict[str, Any]) -> dict[str, Any]:
    """The first answer's data; ledger rows from before this version kept it as `result`."""
    if "data" in stored:
        data: dict[str, Any] = stored["data"]
        return data
    result = OutcomeBatchResult.model_validate(stored["result"])
    return result.model_dump(mode="json", by_alias=True)
