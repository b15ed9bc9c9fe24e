"""A worker killed right after a recovery's error step committed, before Temporal recorded it:
the next worker replays the step from the ledger, and the error's answer must name the
failover coordination that is in the store.

The ledger keeps the effect from being applied twice; what it replays has to be what the
workflow answers with, or the caller is handed a coordination id that does not exist.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fault_stack import Child, FaultStack, free_port
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from store.models import Coordination, ErrorEvent
from switchyard.settings import Settings
from temporal_client.recoveries import start_or_join_recovery
from workflows.recovery_types import ErrorReport

pytestmark = [pytest.mark.devserver, pytest.mark.faults, pytest.mark.faults_long]
DYING_WORKER = Path(__file__).with_name("fault_dying_worker.py")


async def test_error_step_replayed_after_a_crash_answers_with_the_stored_coordination(
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    stack = FaultStack(make_settings(temporal_address=f"127.0.0.1:{free_port()}"), tmp_path)
    try:
        stack.start_proxy()
        stack.start_temporal()
        client = await stack.client()
        dying = Child(
            "dying-worker", [sys.executable, str(DYING_WORKER)], stack.env(), tmp_path / "dying.log"
        )
        dying.start()
        report = ErrorReport(
            error_type="service_unavailable",
            severity="high",
            failed_providers=["samsara_primary"],
            request_key="crash-1",
        )
        answer = asyncio.create_task(
            start_or_join_recovery(
                client,
                stack.settings,
                service="samsara",
                stream_id="crash_stream",
                report=report,
                summary="a worker dies after the error step commits",
            )
        )
        assert dying.process is not None
        await asyncio.to_thread(dying.process.wait, 120)
        assert dying.process.returncode == -9, dying.tail()
        stack.add_worker()
        result = await asyncio.wait_for(answer, 120)
    finally:
        await asyncio.to_thread(stack.close)

    with sessions() as session:
        stored = session.scalars(
            select(Coordination.coordination_id).where(
                Coordination.error_stream_id == "crash_stream"
            )
        ).all()
        errors = session.scalar(
            select(func.count())
            .select_from(ErrorEvent)
            .where(ErrorEvent.stream_id == "crash_stream")
        )
    assert (errors, len(stored)) == (1, 1)  # applied once
    assert result.error_count == 1
    assert result.coordination_id in stored, (result.coordination_id, stored)
