"""The Temporal dev server restarts (same database file) under load, with recoveries and an
emergency running: execute-coordination never notices, error reports get 503 while it is
down, and afterwards every workflow resumes and ends correctly with each effect applied once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TEST_SECRET
from fault_invariants import check_all
from fault_load import Load, LoadClient, LoadLog, Mix, cancel_emergency, start_emergency
from fault_report import Verdict, record
from fault_stack import FaultStack, bearer, running_stack
from fault_workflows import wait_workflows_ended
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.auth import Role
from switchyard.settings import Settings

# Longer than `make test` affords: `make test-faults` runs them.
pytestmark = [pytest.mark.devserver, pytest.mark.faults, pytest.mark.faults_long]
MIX = Mix(coordinations=20, outcome_batches=2, errors=2, error_services=("samsara", "maps"))
# What a backend-agent-error may get while Temporal is down: it is told to retry.
DOWN_CODES = {"temporal_unavailable"}


async def run_temporal_restarts(
    stack: FaultStack,
    sessions: sessionmaker[Session],
    *,
    restarts: int,
    down_seconds: float,
    load_seconds: float,
    hard: bool,
) -> Verdict:
    """An emergency and load; the server stopped (SIGKILL when `hard`) and started again."""
    assert stack.temporal is not None
    log, verdict = LoadLog(), Verdict()
    http = LoadClient([a.url for a in stack.apis], bearer(Role.admin, secret=TEST_SECRET))
    windows: list[tuple[float, float]] = []
    try:
        emergency = await start_emergency(http, log, "stripe")
        assert emergency.accepted, emergency.attempts
        load = Load(http, log, MIX)
        load.start()
        for _ in range(restarts):
            await asyncio.sleep(load_seconds)
            down = time.monotonic()
            if hard:
                stack.temporal.kill()
            else:
                await asyncio.to_thread(stack.temporal.stop)
            await asyncio.sleep(down_seconds)
            stack.temporal.start()
            windows.append((down, time.monotonic()))
        await asyncio.sleep(load_seconds)
        cancel = await cancel_emergency(http, log, "stripe")
        await load.finish()
        assert cancel.accepted, cancel.attempts
        client = await stack.client()
        ended_in = await wait_workflows_ended(client, within=90)
    finally:
        await http.close()
    await check_all(client, sessions, log, verdict)
    # The hot path never waits on Temporal: every coordination and batch answered 2xx.
    for kind in ("coordination", "outcomes"):
        bad = [a for c in log.of(kind) for a in c.attempts if a.status not in (200, 202)]
        verdict.expect(not bad, f"{kind}: {len(bad)} non-2xx answers, first {bad[:1]}")
    for start, end in windows:
        for attempt in log.attempts_between(start, end):
            if attempt.status is not None and attempt.status >= 300:
                verdict.expect(
                    attempt.status == 503 and attempt.code in DOWN_CODES,
                    f"while Temporal was down: {attempt.status} {attempt.code}",
                )
    verdict.expect("500" not in log.answers(), f"500 answers: {log.answers()['500']}")
    recovered = [log.first_success_after(end, ("error",)) for _, end in windows]
    verdict.expect(None not in recovered, "no error report accepted after a restart")
    verdict.figures.update(
        load=log.figures(),
        restarts=restarts,
        hard_kill=hard,
        temporal_down_seconds=down_seconds,
        recovered_seconds=max((r for r in recovered if r is not None), default=None),
        workflows_ended_seconds_after_load=round(ended_in, 2),
    )
    return verdict


async def test_temporal_restart_under_load(
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    async with running_stack(make_settings, tmp_path) as stack:
        verdict = await run_temporal_restarts(
            stack, sessions, restarts=1, down_seconds=3, load_seconds=3, hard=False
        )
    record("temporal_restart", verdict)
    verdict.assert_clean()


async def test_temporal_sigkilled_twice_under_load(
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    async with running_stack(make_settings, tmp_path) as stack:
        verdict = await run_temporal_restarts(
            stack, sessions, restarts=2, down_seconds=5, load_seconds=4, hard=True
        )
    record("temporal_sigkill", verdict)
    verdict.assert_clean()
