"""A worker that dies (SIGKILL, by its own hand) right after a recovery's error step committed.

Run as a script with the SWITCHYARD_* environment of a fault stack. It is the real worker's
workflows and activities, except that `recovery.handle_error` kills the process as soon as
its transaction has committed: the store has the effect, Temporal never hears of it. That
is the narrowest window of a worker crash, hit every time instead of by chance.
"""

from __future__ import annotations

import asyncio
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from temporalio import activity
from temporalio.worker import Worker

from activities.emergency import EmergencyActivities
from activities.recovery import RecoveryActivities
from store.db import make_engine, make_session_factory
from switchyard.settings import get_settings
from temporal_client.client import connect
from worker.main import WORKFLOWS, workflow_runner
from workflows.recovery_types import HandleErrorInput, HandleErrorResult


async def main() -> None:
    """Poll the task queue until the first error step commits, then die."""
    settings = get_settings()
    client = await connect(settings)
    sessions = make_session_factory(make_engine(settings.database_url, pool_size=2))
    recovery = RecoveryActivities(sessions, settings)

    @activity.defn(name="recovery.handle_error")
    def handle_error_then_die(data: HandleErrorInput) -> HandleErrorResult:
        result = recovery.handle_error(data)
        os.kill(os.getpid(), signal.SIGKILL)
        return result

    activities: list[Any] = [
        handle_error_then_die,
        *(a for a in recovery.all() if a.__name__ != "handle_error"),
        *EmergencyActivities(sessions, settings).all(),
    ]
    with ThreadPoolExecutor(max_workers=4) as executor:
        worker = Worker(
            client,
            task_queue=settings.temporal_task_queue,
            workflows=WORKFLOWS,
            activities=activities,
            activity_executor=executor,
            workflow_runner=workflow_runner(),
        )
        await worker.run()


if __name__ == "__main__":
    asyncio.run(main())
