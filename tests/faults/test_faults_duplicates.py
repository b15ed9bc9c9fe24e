"""The same backend-agent-error and the same outcome batch delivered twice, and concurrently
through two API processes, under load: each takes effect once and every delivery gets the
first delivery's answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_SECRET
from fault_invariants import check_all
from fault_load import (
    ERRORS,
    OUTCOMES,
    Call,
    Load,
    LoadClient,
    LoadLog,
    Mix,
    error_report,
    outcome_batch,
)
from fault_report import Verdict, record
from fault_stack import bearer, running_stack
from fault_workflows import wait_workflows_ended
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from api.auth import Role
from store.models import ErrorEvent, Outcome
from switchyard.settings import Settings

pytestmark = [pytest.mark.devserver, pytest.mark.faults]
CONCURRENT = 6


async def _deliver(
    http: LoadClient, log: LoadLog, kind: str, key: str, body: dict[str, Any], path: str
) -> list[Call]:
    """Deliver one request twice in a row, then CONCURRENT times at once over every API."""
    headers = {"Idempotency-Key": key}
    calls = [log.add(kind, key, body) for _ in range(2 + CONCURRENT)]
    for call in calls[:2]:
        await http.attempt(call, path, headers)
    await asyncio.gather(
        *(
            http.attempt(call, path, headers, url=http.urls[n % len(http.urls)])
            for n, call in enumerate(calls[2:])
        )
    )
    return calls


def _same_answers(calls: list[Call], pick: Callable[[dict[str, Any]], object]) -> set[object]:
    return {repr(pick(c.data)) for c in calls if c.data is not None}


async def test_same_error_and_batch_twice_and_concurrently(
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    log, verdict = LoadLog(), Verdict()
    async with running_stack(make_settings, tmp_path, apis=2) as stack:
        http = LoadClient([a.url for a in stack.apis], bearer(Role.admin, secret=TEST_SECRET))
        try:
            load = Load(http, log, Mix(coordinations=10))
            load.start()
            errors = await _deliver(
                http, log, "error", "dup-error-1", error_report("samsara", "dup_stream"), ERRORS
            )
            batch = outcome_batch(1, "dup", size=25)
            batches = await _deliver(http, log, "outcomes", "dup-batch-1", batch, OUTCOMES)
            reused = log.add("outcomes_reused_key", "dup-batch-1", outcome_batch(2, "dup", 5))
            await http.attempt(reused, OUTCOMES, {"Idempotency-Key": "dup-batch-1"})
            await load.finish()
            client = await stack.client()
            await wait_workflows_ended(client, within=60)
        finally:
            await http.close()
        await check_all(client, sessions, log, verdict)

    assert all(c.accepted for c in errors + batches), [c.attempts for c in errors + batches]
    # Every delivery answered as the first one did: one coordination, error number 1.
    first = (errors[0].data or {})["backendAgentResponse"]
    assert _same_answers(
        errors,
        lambda d: (
            d["backendAgentResponse"]["coordinationId"],
            d["backendAgentResponse"]["errorCount"],
        ),
    ) == {repr((first["coordinationId"], 1))}
    assert len(_same_answers(batches, lambda d: d)) == 1
    assert sum(c.replayed for c in batches) == len(batches) - 1
    assert reused.attempts[0].status == 409
    assert reused.attempts[0].code == "idempotency_key_reused"
    with sessions() as session:
        stored = session.scalar(
            select(func.count())
            .select_from(Outcome)
            .where(Outcome.coordination_id.like("dup-o1-%"))
        )
        refused = session.scalar(
            select(func.count())
            .select_from(Outcome)
            .where(Outcome.coordination_id.like("dup-o2-%"))
        )
        recorded = session.scalar(
            select(func.count()).select_from(ErrorEvent).where(ErrorEvent.stream_id == "dup_stream")
        )
    assert (stored, refused) == (25, 0)
    assert recorded == 1
    verdict.figures.update(load=log.figures(), deliveries=2 + CONCURRENT, recovered_seconds=None)
    record("duplicate_deliveries", verdict)
    verdict.assert_clean()
