"""The attempts of one `call()`: which nodes failed, what each attempt did, the final error.

Shared by the sync and async clients, whose loops only decide and run the handler.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from switchyard_client.classify import resolve
from switchyard_client.context import RoutingRequest, routing_request
from switchyard_client.core import ClientCore
from switchyard_client.decision import Decision
from switchyard_client.errors import (
    Attempt,
    FailedResult,
    NoHandler,
    SwitchyardError,
    attach_attempts,
)
from switchyard_client.observe import fire, logger

H = TypeVar("H")


class Attempts:
    """One call's attempts so far."""

    def __init__(self, core: ClientCore, handlers: list[str]) -> None:
        self.handlers = handlers
        self._core = core
        self._number = 0
        self._failed: list[str] = []
        self._attempts: list[Attempt] = []
        self._last_error: BaseException | None = None

    def more(self) -> bool:
        """Whether another attempt may be made."""
        return self._number < self._core.options.max_attempts

    def tried(self) -> bool:
        """Whether an attempt failed already."""
        return self._last_error is not None

    def request(self, service: str, operation: str, context: Mapping[str, Any]) -> RoutingRequest:
        """The next attempt's request: a retry names the nodes that failed."""
        self._number += 1
        if self._number > 1:
            self._core.counters.add("retries")
        return routing_request(service, operation, context, self._failed)

    def undecided(self, error: SwitchyardError) -> None:
        """No node for a retry: the attempts end with the error of the last one that ran."""
        self._attempts.append(Attempt(self._number, None, False, None, error, None))

    def handler_for(self, decision: Decision, handlers: Mapping[str, H]) -> H | None:
        """The decided node's handler; None (a failed attempt, nothing called) without one."""
        handler = handlers.get(decision.node_id)
        if handler is None:
            error = NoHandler(decision.node_id, self.handlers)
            logger.warning("switchyard_client: %s", error.message)
            self._failed_attempt(decision, error, None)
        return handler

    def settle(
        self, decision: Decision, value: object, seconds: float, raised: bool = False
    ) -> bool:
        """Classify and report the handler's result (or the exception it raised); True when
        the call is over: return the result, or raise the exception (the provider answered)."""
        verdict = resolve(self._core.options.classify, value)
        latency_ms = seconds * 1000.0
        self._core.record(decision, verdict, latency_ms)
        if verdict.succeeded:
            attempt = Attempt(
                self._number,
                decision.node_id,
                decision.decided_locally,
                decision.coordination_id,
                None,
                latency_ms,
            )
            self._attempts.append(attempt)
            fire(self._core.hooks.on_attempt, attempt)
            return True
        error = (
            value
            if raised and isinstance(value, BaseException)
            else FailedResult(decision.node_id, value, verdict.error_code)
        )
        self._failed_attempt(decision, error, latency_ms)
        return False

    def final_error(self) -> BaseException:
        """The last attempt's error, carrying every attempt."""
        assert self._last_error is not None, "final_error() after a failed attempt only"
        return attach_attempts(self._last_error, tuple(self._attempts))

    def _failed_attempt(
        self, decision: Decision, error: BaseException, latency_ms: float | None
    ) -> None:
        attempt = Attempt(
            self._number,
            decision.node_id,
            decision.decided_locally,
            decision.coordination_id,
            error,
            latency_ms,
        )
        self._attempts.append(attempt)
        self._failed.append(decision.node_id)
        self._last_error = error
        fire(self._core.hooks.on_attempt, attempt)
