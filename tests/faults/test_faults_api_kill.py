"""SIGKILL one of two API processes under load, then start it again: requests in flight on it
get no answer, but nothing accepted is lost, a retried batch or error report (same
Idempotency-Key, now through the other process) counts once, and every recovery ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TEST_SECRET
from fault_invariants import check_all
from fault_load import Load, LoadClient, LoadLog, Mix
from fault_report import Verdict, record
from fault_stack import FaultStack, bearer, running_stack
from fault_workflows import wait_workflows_ended
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.auth import Role
from switchyard.settings import Settings

# Longer than `make test` affords: `make test-faults` runs them.
pytestmark = [pytest.mark.devserver, pytest.mark.faults, pytest.mark.faults_long]
MIX = Mix(coordinations=30, outcome_batches=4, errors=3, error_services=("samsara", "maps"))


async def run_api_kills(
    stack: FaultStack,
    sessions: sessionmaker[Session],
    *,
    kills: int,
    down_seconds: float,
    load_seconds: float,
) -> Verdict:
    """Load over both APIs; the first one SIGKILLed and restarted `kills` times."""
    log, verdict = LoadLog(), Verdict()
    http = LoadClient([a.url for a in stack.apis], bearer(Role.admin, secret=TEST_SECRET))
    victim = stack.apis[0]
    back_in: list[float] = []
    try:
        load = Load(http, log, MIX)
        load.start()
        for _ in range(kills):
            await asyncio.sleep(load_seconds)
            victim.child.kill()
            await asyncio.sleep(down_seconds)
            restarted = time.monotonic()
            victim.child.start()
            await stack.wait_healthy(victim)
            back_in.append(time.monotonic() - restarted)
        await asyncio.sleep(load_seconds)
        await load.finish()
        client = await stack.client()
        ended_in = await wait_workflows_ended(client, within=90)
    finally:
        await http.close()
    await check_all(client, sessions, log, verdict)
    verdict.expect("500" not in log.answers(), f"500 answers: {log.answers()['500']}")
    for kind in ("outcomes", "error"):
        refused = [c.key for c in log.of(kind) if not c.accepted]
        verdict.expect(not refused, f"{kind} never accepted despite retries: {refused[:5]}")
    verdict.figures.update(
        load=log.figures(),
        kills=kills,
        api_down_seconds=down_seconds,
        recovered_seconds=max(back_in, default=None),
        workflows_ended_seconds_after_load=round(ended_in, 2),
    )
    return verdict


async def test_api_sigkill_under_load(
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    async with running_stack(make_settings, tmp_path, apis=2) as stack:
        verdict = await run_api_kills(stack, sessions, kills=1, down_seconds=2, load_seconds=3)
    record("api_sigkill", verdict)
    verdict.assert_clean()


async def test_api_sigkilled_three_times_under_load(
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    async with running_stack(make_settings, tmp_path, apis=2) as stack:
        verdict = await run_api_kills(stack, sessions, kills=3, down_seconds=1, load_seconds=4)
    record("api_sigkill_repeated", verdict)
    verdict.assert_clean()
