"""INSERT ... ON CONFLICT for both backends."""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def dialect_insert(session: Session, model: type[Any]) -> Any:
    """The backend's INSERT construct (both support ON CONFLICT and RETURNING)."""
    module: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return module.insert(model)


def insert_ignore(session: Session, model: type[Any], values: dict[str, Any]) -> bool:
    """Insert a row unless its key exists; True when this call inserted it."""
    # RETURNING, not rowcount: psycopg reports -1 for ON CONFLICT DO NOTHING under SQLAlchemy.
    key = inspect(model).primary_key[0]
    statement = (
        dialect_insert(session, model).values(**values).on_conflict_do_nothing().returning(key)
    )
    return session.execute(statement).first() is not None
