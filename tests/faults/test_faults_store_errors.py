"""An unreachable store is a 503 `database_unavailable` with Retry-After, never a 500.

In-process, no PostgreSQL server needed: real drivers fail against a port nobody listens on,
a pool with no free connection times out, and the driver's own errors (raised unwrapped by
the binary COPY of outcomes) are mapped like SQLAlchemy's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fault_stack import free_port
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import QueuePool

from api.errors import install_error_handlers
from store.db import make_engine

pytestmark = pytest.mark.faults


def _unreachable_query() -> None:
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/switchyard")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()


def _pool_exhausted() -> None:
    engine = create_engine(
        "sqlite://", poolclass=QueuePool, pool_size=1, max_overflow=0, pool_timeout=0.05
    )
    try:
        with engine.connect(), engine.connect():
            pass
    finally:
        engine.dispose()


def _driver_connection_lost() -> None:
    raise psycopg.OperationalError("consuming input failed: server closed the connection")


def _driver_connection_closed() -> None:
    raise psycopg.InterfaceError("the connection is closed")


def _constraint_violated() -> None:
    raise IntegrityError("INSERT", {}, Exception("duplicate key"))


FAILURES: dict[str, Callable[[], None]] = {
    "unreachable": _unreachable_query,
    "pool": _pool_exhausted,
    "driver-lost": _driver_connection_lost,
    "driver-closed": _driver_connection_closed,
    "integrity": _constraint_violated,
}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    """An app with the real error handlers and one route per kind of store failure."""
    app = FastAPI()
    install_error_handlers(app)
    for name, fail in FAILURES.items():
        app.add_api_route(f"/{name}", fail, methods=["POST"])
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.mark.parametrize("failure", ["unreachable", "pool", "driver-lost", "driver-closed"])
def test_store_unavailable_is_503_with_retry_after(client: TestClient, failure: str) -> None:
    response = client.post(f"/{failure}")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "database_unavailable"
    assert "database" in error["message"] and "retry" in error["message"]
    assert int(response.headers["Retry-After"]) > 0
    assert "127.0.0.1" not in response.text and "SELECT" not in response.text


def test_other_store_errors_stay_500(client: TestClient) -> None:
    response = client.post("/integrity")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
