"""Per-principal rate limits by route class, via `limits`.

Four classes, each sized for what its requests cost and what they are for (docs/SECURITY.md):
`decide` (execute-coordination, the hot path), `ingest` (POST outcomes), `read` (GET) and
`control` (every other write: errors, emergencies, breakers, recoveries). Counters live in
memory (per process) or in Redis (shared by every API replica) as
`SWITCHYARD_RATE_LIMIT_STORAGE` says. When the storage cannot be reached the request is let
through and a warning logged: Redis being down must not take the API down with it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from enum import StrEnum

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import STRATEGIES

from switchyard.settings import Settings

log = logging.getLogger("switchyard.api")
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_STORAGE_TIMEOUT_SECONDS = 0.5
_WARN_EVERY_SECONDS = 30.0
# A principal over its limit is logged at most this often (its 429s are counted in /metrics).
REFUSAL_LOG_SECONDS = 60.0


class RouteClass(StrEnum):
    """What a request is for, which sets its limit."""

    decide = "decide"
    ingest = "ingest"
    read = "read"
    control = "control"


class SweepingMemoryStorage(MemoryStorage):
    """`limits`' memory storage without a timer thread per burst of requests.

    The stock storage starts a `threading.Timer` (a new thread) whenever its previous one has
    finished, up to a hundred a second under load, only to drop expired counters; counters are
    expired on read anyway (MemoryStorage.get). Here the sweep runs inline at most once per
    SWEEP_SECONDS. The override replaces the name-mangled private hook of limits 5.
    """

    SWEEP_SECONDS = 1.0

    def __init__(self, uri: str | None = None) -> None:
        super().__init__(uri)
        self._swept = time.monotonic()

    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now - self._swept >= self.SWEEP_SECONDS:
            self._swept = now
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class RateLimitState:
    """Where a principal stands in its current window."""

    route_class: RouteClass
    limit: int
    remaining: int
    reset_at: float  # epoch seconds
    exceeded: bool

    def headers(self) -> dict[str, str]:
        """X-RateLimit-Limit / -Remaining / -Reset (epoch seconds), and Retry-After if exceeded."""
        values = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(self.remaining, 0)),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }
        if self.exceeded:
            values["Retry-After"] = str(self.retry_after())
        return values

    def retry_after(self) -> int:
        """Whole seconds until the window resets (at least 1)."""
        return max(1, math.ceil(self.reset_at - time.time()))


class RateLimiter:
    """Counts requests per (route class, principal) and says when a window is exhausted."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limit_enabled
        self.items: dict[RouteClass, RateLimitItem] = {
            RouteClass.decide: parse(settings.rate_limit_decide),
            RouteClass.ingest: parse(settings.rate_limit_ingest),
            RouteClass.read: parse(settings.rate_limit_read),
            RouteClass.control: parse(settings.rate_limit_control),
        }
        strategy = STRATEGIES.get(settings.rate_limit_strategy)
        if strategy is None:
            names = ", ".join(STRATEGIES)
            raise ValueError(f"SWITCHYARD_RATE_LIMIT_STRATEGY must be one of {names}")
        uri = settings.rate_limit_storage
        # A slow Redis must not stall requests: short socket timeouts, then fail open.
        options: dict[str, float | str | bool] = (
            {
                "socket_timeout": _STORAGE_TIMEOUT_SECONDS,
                "socket_connect_timeout": _STORAGE_TIMEOUT_SECONDS,
            }
            if uri.startswith(("redis://", "rediss://"))
            else {}
        )
        self.storage = (
            SweepingMemoryStorage(uri)
            if uri.startswith("memory://")
            else storage_from_string(uri, **options)
        )
        self.blocking = not uri.startswith("memory://")  # a network storage
        self.strategy = strategy(self.storage)
        self._warned_at = 0.0
        self._refusals_logged: dict[tuple[str, RouteClass], float] = {}

    @staticmethod
    def route_class(method: str) -> RouteClass:
        """read for GET/HEAD, control for any other request not given a class."""
        return RouteClass.read if method.upper() in READ_METHODS else RouteClass.control

    def hit(
        self, subject: str, method: str, route_class: RouteClass | None = None
    ) -> RateLimitState | None:
        """Count one request in its class (by method unless given); None when not limiting."""
        if not self.enabled:
            return None
        route_class = route_class or self.route_class(method)
        item = self.items[route_class]
        try:
            allowed = self.strategy.hit(item, "switchyard", route_class, subject)
            stats = self.strategy.get_window_stats(item, "switchyard", route_class, subject)
        except Exception as exc:
            self._warn(exc)
            return None
        return RateLimitState(
            route_class=route_class,
            limit=item.amount,
            remaining=stats.remaining,
            reset_at=stats.reset_time,
            exceeded=not allowed,
        )

    async def hit_async(
        self, subject: str, method: str, route_class: RouteClass | None = None
    ) -> RateLimitState | None:
        """`hit` from the event loop: a network storage (Redis) is called off the loop."""
        if self.blocking:
            return await asyncio.to_thread(self.hit, subject, method, route_class)
        return self.hit(subject, method, route_class)

    def describe(self, route_class: RouteClass) -> str:
        """The configured limit in words, e.g. '120 per 1 minute'."""
        item = self.items[route_class]
        return f"{item.amount} per {item.multiples} {item.GRANULARITY.name}"

    def should_log_refusal(self, subject: str, route_class: RouteClass) -> bool:
        """True at most once per principal and class per REFUSAL_LOG_SECONDS."""
        now = time.monotonic()
        key = (subject, route_class)
        if now - self._refusals_logged.get(key, -REFUSAL_LOG_SECONDS) < REFUSAL_LOG_SECONDS:
            return False
        if len(self._refusals_logged) > 10_000:  # many principals: forget the quiet ones
            self._refusals_logged = {
                k: at for k, at in self._refusals_logged.items() if now - at < REFUSAL_LOG_SECONDS
            }
        self._refusals_logged[key] = now
        return True

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning("rate-limit storage unavailable, not limiting: %s", exc.__class__.__name__)
