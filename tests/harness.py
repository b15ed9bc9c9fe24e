"""A full worker (every workflow and activity) for tests that drive the API end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from activities.emergency import EmergencyActivities
from activities.recovery import RecoveryActivities
from switchyard.settings import Settings
from worker.main import WORKFLOWS


@asynccontextmanager
async def live_worker(
    client: Client, sessions: sessionmaker[Session], task_queue: str
) -> AsyncIterator[Worker]:
    """Run every workflow with real activities on the test store until the block ends."""
    settings = Settings()
    activities = [
        *RecoveryActivities(sessions, settings).all(),
        *EmergencyActivities(sessions, settings).all(),
    ]
    with ThreadPoolExecutor(max_workers=16) as executor:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=WORKFLOWS,
            activities=activities,
            activity_executor=executor,
        ) as worker:
            yield worker
