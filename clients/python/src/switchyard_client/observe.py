"""What the client did: a logger, running counters and optional hooks."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from switchyard_client.decision import Decision
    from switchyard_client.errors import Attempt

logger = logging.getLogger("switchyard_client")


@dataclass
class Counters:
    """Running totals since the client was made; `snapshot()` reads them all at once."""

    decisions: int = 0  # every decision, Switchyard's and local ones
    local_decisions: int = 0  # decided by the client because Switchyard did not answer
    retries: int = 0  # attempts after a call's first
    reports_queued: int = 0
    reports_sent: int = 0  # acknowledged by POST /outcomes
    reports_dropped: int = 0  # the queue was full: the oldest went
    reports_rejected: int = 0  # refused by Switchyard (422): never sent again
    catalog_refreshes: int = 0
    # Counts may be bumped from callers' threads and the background thread at once.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, amount: int = 1) -> None:
        """Add `amount` to the counter `name`."""
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def snapshot(self) -> dict[str, int]:
        """Every counter by name."""
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if f.name[0] != "_"}


@dataclass(frozen=True)
class Hooks:
    """Optional callbacks; one that raises is logged, never raised into the caller's call."""

    on_decision: Callable[[Decision], None] | None = None
    on_attempt: Callable[[Attempt], None] | None = None
    # Why the client decided locally (e.g. "ConnectError: connection refused").
    on_fallback: Callable[[str], None] | None = None
    on_reports_sent: Callable[[int], None] | None = None
    on_reports_dropped: Callable[[int], None] | None = None


def fire(hook: Callable[..., None] | None, *args: Any) -> None:
    """Run a hook, keeping its failures out of the request path."""
    if hook is None:
        return
    try:
        hook(*args)
    except Exception:
        logger.exception("switchyard_client hook %r failed", getattr(hook, "__name__", hook))
