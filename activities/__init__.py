"""Activities: the only place workflows touch the world. Built with their dependencies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from activities.emergency import EmergencyActivities
from activities.recovery import RecoveryActivities
from switchyard.settings import Settings


def build_activities(settings: Settings, sessions: sessionmaker[Session]) -> list[Callable[..., Any]]:
    """Every activity method, bound to the store."""
    recovery = RecoveryActivities(sessions, settings)
    emergency = EmergencyActivities(sessions, settings)
    return [*recovery.all(), *emergency.all()]
