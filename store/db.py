"""Engines, sessions and start-up migrations for PostgreSQL and the embedded SQLite file."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any 64-bit constant: serialises concurrent migrations (API and worker starting together).
_MIGRATION_LOCK_ID = 0x5357_4954_4348
# A database host that accepts no connection (down, failing over) must not hold a request or
# an activity for minutes: a new connection gives up after this, the caller sees an error.
CONNECT_TIMEOUT_SECONDS = 5


def make_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> Engine:
    """An engine tuned for the backend: WAL and busy timeout on SQLite, a pool on PostgreSQL."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30}
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling is off (isolation_level=None); begin every
        # transaction IMMEDIATE so two writers queue on busy_timeout instead of failing with
        # "database is locked" when a read lock cannot be upgraded. WAL keeps readers free.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    # pre-ping replaces connections that died with the server, so the pool heals by itself.
    return create_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory whose sessions keep loaded attributes after commit."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One session and one transaction: committed on success, rolled back on error."""
    with factory() as session, session.begin():
        yield session


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the packaged migrations and the given database."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Bring the database to the newest schema; safe to call from several processes at once."""
    with start_up_lock(url):
        command.upgrade(alembic_config(url), "head")


@contextmanager
def start_up_lock(url: str) -> Iterator[None]:
    """Serialise start-up work (migrations, catalog loading) across processes.

    PostgreSQL: a session advisory lock. SQLite: an flock on a file beside the database.
    """
    if make_url(url).get_backend_name() != "postgresql":
        database = make_url(url).database or ""
        lock_path = Path(database + ".lock") if database and database != ":memory:" else None
        with _file_lock(lock_path):
            yield
        return
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_ID})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_ID})
                conn.commit()
    finally:
        engine.dispose()


@contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
