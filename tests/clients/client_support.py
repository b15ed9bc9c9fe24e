"""The client library's tests against the real API: a server that can be stopped and started
again on its port, and what the tests read back from the store."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from store.models import Outcome

BASE = "/api/v1/enhanced-traffic-coordination"
PRIMARY = "stripe_primary_us_east"
SECONDARY = "stripe_secondary_us_west"
PREMIUM = "stripe_premium_emergency"
# The tests' own limits: the defaults are for people, and a test makes hundreds of requests.
# A decision deadline that a loaded test machine meets: these tests are about what the API
# answers; a stopped API refuses the connection at once, so falling back is not slowed.
DEADLINE = 10.0
GENEROUS_LIMITS = {
    "rate_limit_write": "100000/minute",
    "rate_limit_read": "100000/minute",
    "rate_limit_ingest": "100000/minute",
}


class RestartableApi:
    """The API served by uvicorn in a thread of this process; stop() makes it unreachable
    (connections refused), start() serves a fresh app on the same port."""

    def __init__(self, make_app: Callable[[], FastAPI]) -> None:
        self.make_app = make_app
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RestartableApi:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The server's root, as a client's base_url."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve (again): a free port the first time, the same port after a stop."""
        config = uvicorn.Config(
            self.make_app(), host="127.0.0.1", port=self.port, log_level="warning"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="client-test-api", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the API did not start")
            time.sleep(0.02)
        self.port = server.servers[0].sockets[0].getsockname()[1]
        self._server, self._thread = server, thread

    def stop(self) -> None:
        """Stop serving: open connections close, new ones are refused."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=30)
        self._server = self._thread = None

    def get(self, path: str, token: str) -> Any:
        """GET a path under the API prefix; the answer's data."""
        response = httpx.get(
            self.url + BASE + path, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def provider(self, node_id: str, token: str) -> dict[str, Any]:
        """One node's view in GET /providers."""
        views = self.get("/providers", token)["providers"]
        view: dict[str, Any] = next(v for v in views if v["nodeId"] == node_id)
        return view


def outcomes_stored(sessions: sessionmaker[Session], node_id: str | None = None) -> int:
    """Outcome rows in the store (of one node)."""
    query = select(func.count()).select_from(Outcome)
    if node_id is not None:
        query = query.where(Outcome.node_id == node_id)
    with sessions() as session:
        return int(session.scalar(query) or 0)


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Poll until `condition()` holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


class ProviderDown(ConnectionError):
    """What a handler for a failing provider raises."""


def failing(node_id: str) -> Callable[..., str]:
    """A handler whose provider refuses every call."""

    def call(*_: object) -> str:
        raise ProviderDown(f"{node_id} refused the connection")

    return call


def paying(node_id: str) -> Callable[..., str]:
    """A handler whose provider takes the payment."""

    def call(*args: object) -> str:
        return f"paid by {node_id}" + (f" for {args[0]}" if args else "")

    return call
