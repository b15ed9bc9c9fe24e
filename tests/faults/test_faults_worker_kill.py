"""SIGKILL the worker while recoveries and emergencies run under load; a new worker finishes
them: every accepted request is stored once, every workflow ends correctly, nothing twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TEST_SECRET
from fault_invariants import check_all
from fault_load import Call, Load, LoadClient, LoadLog, Mix, cancel_emergency, start_emergency
from fault_report import Verdict, record
from fault_stack import FaultStack, bearer, running_stack
from fault_workflows import RECOVERY, check_overrides, executions, wait_workflows_ended
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import WorkflowExecutionStatus

from api.auth import Role
from switchyard.settings import Settings

pytestmark = [pytest.mark.devserver, pytest.mark.faults]
EMERGENCY_SERVICES = ("stripe", "twilio")
# Requested while the worker is dead: the API waits for the next worker to activate it.
LATE_EMERGENCY = "maps"
MIX = Mix(coordinations=15, outcome_batches=2, errors=3, error_services=("samsara", "maps"))


async def _running_recoveries(stack: FaultStack) -> int:
    client = await stack.client()
    return sum(
        1 for e in await executions(client, RECOVERY) if e.status == WorkflowExecutionStatus.RUNNING
    )


async def _kill_and_restart(
    stack: FaultStack,
    sessions: sessionmaker[Session],
    down_seconds: float,
    verdict: Verdict,
    on_down: Callable[[], None] | None = None,
) -> float:
    """SIGKILL the worker, check routing ownership while it is down, restart it.

    `on_down` runs right after the kill. Returns the monotonic time of the restart.
    """
    worker = stack.workers[0]
    worker.kill()
    if on_down is not None:
        on_down()
    await asyncio.sleep(down_seconds)
    # Nothing moves while no worker runs: every override must belong to a running workflow.
    await check_overrides(await stack.client(), sessions, verdict)
    worker.start()
    return time.monotonic()


async def _recovery_in_flight(stack: FaultStack, verdict: Verdict) -> None:
    for _ in range(100):
        if await _running_recoveries(stack) > 0:
            return
        await asyncio.sleep(0.1)
    verdict.problems.append("no recovery was running when the worker was killed")


async def run_worker_kills(
    stack: FaultStack,
    sessions: sessionmaker[Session],
    *,
    kills: int,
    load_seconds: float,
    down_seconds: float,
    kill_while_ending: bool = False,
) -> Verdict:
    """Emergencies + load, `kills` SIGKILLs of the worker, then every check; the figures.

    During the first outage another emergency is requested and waits for the new worker.
    With `kill_while_ending` the worker dies once more as the load stops: recoveries are
    about to restore traffic and the emergencies are being cancelled.
    """
    log, verdict = LoadLog(), Verdict()
    http = LoadClient([a.url for a in stack.apis], bearer(Role.admin, secret=TEST_SECRET))
    client = await stack.client()
    restarts: list[float] = []
    late: list[asyncio.Task[Call]] = []

    def request_late_emergency() -> None:
        late.append(asyncio.create_task(start_emergency(http, log, LATE_EMERGENCY)))

    try:
        for service in EMERGENCY_SERVICES:
            call = await start_emergency(http, log, service)
            assert call.accepted, call.attempts
        load = Load(http, log, MIX)
        load.start()
        for number in range(kills):
            await asyncio.sleep(load_seconds)
            await _recovery_in_flight(stack, verdict)
            on_down = request_late_emergency if number == 0 else None
            restarts.append(
                await _kill_and_restart(stack, sessions, down_seconds, verdict, on_down)
            )
        await asyncio.sleep(load_seconds)
        late_call = await late[0]
        assert late_call.accepted, late_call.attempts
        services = (*EMERGENCY_SERVICES, LATE_EMERGENCY)
        cancels = [asyncio.create_task(cancel_emergency(http, log, s)) for s in services]
        finishing = asyncio.create_task(load.finish())
        if kill_while_ending:
            restarts.append(await _kill_and_restart(stack, sessions, down_seconds, verdict))
        await finishing
        for cancel in cancels:
            assert (await cancel).accepted, (await cancel).attempts
        ended_in = await wait_workflows_ended(client, within=90)
    finally:
        await http.close()
    await check_all(client, sessions, log, verdict)
    recovered = [log.first_success_after(moment, ("error", "emergency")) for moment in restarts]
    verdict.expect(None not in recovered, "nothing needing the worker succeeded after a restart")
    verdict.figures.update(
        load=log.figures(),
        kills=len(restarts),
        worker_down_seconds=down_seconds,
        recovered_seconds=max((r for r in recovered if r is not None), default=None),
        workflows_ended_seconds_after_load=round(ended_in, 2),
    )
    return verdict


async def test_worker_sigkill_during_recoveries_and_emergencies(
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    async with running_stack(make_settings, tmp_path) as stack:
        verdict = await run_worker_kills(stack, sessions, kills=1, load_seconds=3, down_seconds=2)
    record("worker_sigkill", verdict)
    verdict.assert_clean()


@pytest.mark.faults_long
async def test_worker_sigkilled_repeatedly_and_while_ending(
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    async with running_stack(make_settings, tmp_path) as stack:
        verdict = await run_worker_kills(
            stack, sessions, kills=3, load_seconds=4, down_seconds=3, kill_while_ending=True
        )
    record("worker_sigkill_repeated", verdict)
    verdict.assert_clean()
