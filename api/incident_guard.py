"""Cascade prevention on the decision path: while an open incident's blast radius holds a
service, its retries are budgeted and its budget's last share is kept for CRITICAL and HIGH
requests (routing/incidents.py has the rule; docs/INCIDENTS.md the figures).

Each API process keeps its own retry windows: with N processes behind a balancer a
service's retry budget is N times the configured one, spread as the balancer spreads the
traffic. Refusals are counted in /metrics at once and announced as `incident_protection`
events at most once a second per incident, service and reason, each event carrying how many
refusals it stands for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from api import metrics
from api.errors import ApiError
from api.periodic import Periodic
from routing.incidents import Protection, ProtectionConfig, RetryWindow, protection_refusal
from routing.types import IncidentGuard, RoutingRequest, RoutingSnapshot
from store.db import transaction
from store.events import publish
from switchyard.settings import Settings

ANNOUNCE_EVERY_SECONDS = 1.0


def protection_config(settings: Settings) -> ProtectionConfig:
    """The configured protections."""
    return ProtectionConfig(
        retries_per_request=settings.incident_retries_per_request,
        retry_ratio=settings.incident_retry_ratio,
        retry_window_seconds=settings.incident_retry_window_seconds,
        min_retries=settings.incident_min_retries,
        reserved_share=settings.incident_reserved_share,
    )


@dataclass(slots=True)
class _Refusals:
    """Refusals of one (incident, service, reason) not announced yet."""

    count: int
    detail: str


class IncidentProtector(Periodic):
    """Checks protected decisions, counts their attempts, announces refusals."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        config: ProtectionConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.config = config
        # The retry windows' clock (seconds); tests hold it still.
        self.clock = clock
        self._windows: dict[str, RetryWindow] = {}
        self._pending: dict[tuple[str, str, Protection], _Refusals] = {}
        self.every = ANNOUNCE_EVERY_SECONDS
        self.doing = "announcing incident refusals"

    def admit(
        self, request: RoutingRequest, guard: IncidentGuard, snapshot: RoutingSnapshot
    ) -> None:
        """Let a protected request go on (counting it in its service's window) or raise the
        503 naming the protection, the incident and why."""
        service = request.service
        window = self._windows.get(service)
        if window is None:
            window = self._windows[service] = RetryWindow(self.config.retry_window_seconds)
        now = self.clock()
        budget = snapshot.budgets.get(service)
        refusal = protection_refusal(request, budget, window, now, self.config)
        if refusal is None:
            window.count(now, retry=bool(request.failed_providers))
            return
        reason, detail = refusal
        metrics.incident_refused(service, reason.value)
        key = (guard.incident_id, service, reason)
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = _Refusals(1, detail)
        else:
            pending.count += 1
            pending.detail = detail
        raise ApiError(
            503,
            reason.value,
            f"{service!r} is protected by incident {guard.incident_id}: {detail}",
            {"serviceName": service, "incidentId": guard.incident_id},
        )

    def take(self) -> dict[tuple[str, str, Protection], _Refusals]:
        """The refusals not announced yet, which are the announcer's from now on (called on
        the event loop, where admit() counts them)."""
        pending, self._pending = self._pending, {}
        return pending

    def announce(self, pending: dict[tuple[str, str, Protection], _Refusals]) -> int:
        """Publish one `incident_protection` event per (incident, service, reason) taken;
        how many were published (blocking, off the event loop)."""
        if not pending:
            return 0
        with transaction(self.sessions) as session:
            for (incident_id, service, reason), refusals in pending.items():
                publish(
                    session,
                    "incident_protection",
                    {
                        "incidentId": incident_id,
                        "serviceName": service,
                        "reason": reason.value,
                        "refused": refusals.count,
                        "detail": refusals.detail,
                    },
                    service=service,
                )
        return len(pending)

    def tick(self) -> int:
        return self.announce(self.take())
