"""Exactly-once effects for activities: a ledger row per (workflow id, step key)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from store.db import transaction
from store.models import AppliedEffect

T = TypeVar("T")


def apply_once(
    sessions: sessionmaker[Session],
    key: str,
    effect: Callable[[Session], dict[str, Any]],
) -> dict[str, Any]:
    """Run `effect` and record its result under `key` in one transaction, unless already done.

    A retried or duplicated activity finds the ledger row and returns the first result, so
    the effect is applied once even when two attempts race (the loser's insert conflicts and
    it reads the winner's row).
    """
    for _ in range(2):
        try:
            with transaction(sessions) as session:
                done = session.get(AppliedEffect, key)
                if done is not None:
                    return dict(done.result)
                result = effect(session)
                session.add(AppliedEffect(key=key, result=result))
                return result
        except IntegrityError:
            continue
    with sessions() as session:
        done = session.get(AppliedEffect, key)
        if done is None:
            raise RuntimeError(f"effect {key!r} neither applied nor recorded")
        return dict(done.result)
