"""Helpers for the event tests: a real uvicorn server in a thread, WebSocket clients, writers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker
from websockets.sync.client import ClientConnection, connect

from api.event_frames import websocket_server_options
from api.events_hub import EventHub
from store.db import transaction
from store.events import EventDraft, event_draft, latest_event_id, publish_many

BASE = "/api/v1/enhanced-traffic-coordination"
SUBPROTOCOL = "switchyard.events.v1"


class LiveApi:
    """An app served by uvicorn on a free port, in a thread of this process.

    A real server (unlike TestClient) has TCP back-pressure and the WebSocket handshake of
    production, which the slow-client and auth tests need. It is configured as `switchyard
    api` configures uvicorn (shared event frames, compression as `compression` says) unless
    `config` says otherwise.
    """

    def __init__(self, app: FastAPI, compression: bool = False, **config: Any) -> None:
        self.app = app
        options: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "log_level": "warning",
            **websocket_server_options(compression),
        }
        self.config = uvicorn.Config(app, **(options | config))
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name="live-api", daemon=True)
        self.port = 0

    def __enter__(self) -> LiveApi:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @property
    def hub(self) -> EventHub:
        """The server's event hub."""
        hub: EventHub = self.app.state.events_hub
        return hub

    def url(self, path: str, scheme: str = "http") -> str:
        """An absolute URL on this server."""
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def events(self, token: str | None, query: str = "", **options: Any) -> ClientConnection:
        """Open the events WebSocket with the token as a subprotocol."""
        protocols = [SUBPROTOCOL] + ([f"bearer.{token}"] if token else [])
        uri = self.url(f"{BASE}/events{query}", scheme="ws")
        return connect(uri, subprotocols=protocols, open_timeout=10, **options)  # type: ignore[arg-type]


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Poll until `condition()` holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


def drafts(count: int, event_type: str = "test_event", **fields: Any) -> list[EventDraft]:
    """`count` events with a sequence number in their payload."""
    service = fields.pop("service", None)
    return [event_draft(event_type, {"n": n, **fields}, service=service) for n in range(count)]


def commit_events(sessions: sessionmaker[Session], batch: list[EventDraft]) -> list[int]:
    """Publish the batch in one transaction; the ids it got."""
    with transaction(sessions) as session:
        publish_many(session, batch)
    return [int(d.id) for d in batch if d.id is not None]


def head(sessions: sessionmaker[Session]) -> int:
    """The newest committed event id."""
    with sessions() as session:
        return latest_event_id(session)


@contextmanager
def background_writer(
    sessions: sessionmaker[Session], total: int, pause: float = 0.002
) -> Iterator[list[int]]:
    """Commit `total` events one transaction each from a thread; yields their ids as they go."""
    ids: list[int] = []
    stop = threading.Event()

    def run() -> None:
        for n in range(total):
            if stop.is_set():
                return
            ids.extend(commit_events(sessions, drafts(1, "tick", sequence=n)))
            time.sleep(pause)

    thread = threading.Thread(target=run, name="event-writer", daemon=True)
    thread.start()
    try:
        yield ids
        thread.join(timeout=120)
    finally:
        stop.set()
        thread.join(timeout=10)
