"""A full worker (every workflow and activity, as `switchyard worker` runs them) for tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker

from api.app import create_app
from switchyard.settings import Settings
from worker.main import WORKFLOWS, all_activities


@asynccontextmanager
async def live_api(
    client: Client, sessions: sessionmaker[Session], settings: Settings
) -> AsyncIterator[TestClient]:
    """The API in-process and a full worker on `client`'s server, sharing the test store."""
    async with live_worker(client, sessions, settings.temporal_task_queue, settings):
        api = TestClient(create_app(settings, prepare=False))
        await asyncio.to_thread(api.__enter__)
        try:
            yield api
        finally:
            await asyncio.to_thread(api.__exit__, None, None, None)


@asynccontextmanager
async def live_worker(
    client: Client,
    sessions: sessionmaker[Session],
    task_queue: str,
    settings: Settings | None = None,
) -> AsyncIterator[Worker]:
    """Run every workflow with real activities on the test store until the block ends.

    The activities see `settings` on `task_queue`: what they start (a recovery from the
    monitor, an incident from a recovery) runs on this worker.
    """
    settings = (settings or Settings()).model_copy(update={"temporal_task_queue": task_queue})
    with ThreadPoolExecutor(max_workers=16) as executor:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=WORKFLOWS,
            activities=all_activities(sessions, settings, client),
            activity_executor=executor,
        ) as worker:
            try:
                yield worker
            finally:
                await terminate_running(client, task_queue)


async def terminate_running(client: Client, task_queue: str) -> None:
    """End what a test left running on its task queue, so that no later test joins a workflow
    (the same stream's recovery, say) that no worker will ever run again."""
    query = f'TaskQueue = "{task_queue}" AND ExecutionStatus = "Running"'
    async for execution in client.list_workflows(query):
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        with suppress(RPCError):  # it ended meanwhile
            await handle.terminate(reason="test over")
