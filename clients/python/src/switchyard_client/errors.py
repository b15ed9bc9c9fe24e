"""What the client raises, and the attempts a failed call carries."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import Any

# The attribute a call's last error carries its attempts in (see `attempts_of`).
ATTEMPTS_ATTRIBUTE = "switchyard_attempts"


class SwitchyardError(Exception):
    """A decision the client could not get or make; `code` is machine-readable."""

    def __init__(
        self, code: str, message: str, *, status: int | None = None, details: Any = None
    ) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"{status} {code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.details = details


class RequestRejected(SwitchyardError):
    """Switchyard answered with an error it means (a bad token, an invalid request, a budget
    or eligibility refusal): raised as is, never decided around locally."""


class SwitchyardUnavailable(SwitchyardError):
    """Switchyard did not answer and the client has nothing to decide from locally."""


class NoHandler(SwitchyardError):
    """The decision chose a node the caller gave no handler for; nothing was called."""

    def __init__(self, node_id: str, handlers: list[str]) -> None:
        super().__init__(
            "no_handler",
            f"the decision chose {node_id!r}, which has no handler "
            f"(handlers given: {', '.join(handlers) or 'none'})",
            details={"nodeId": node_id, "handlers": handlers},
        )
        self.node_id = node_id


class FailedResult(Exception):
    """A handler's return value that `classify` judged a failure (an HTTP 503, say)."""

    def __init__(self, node_id: str, result: object, error_code: str | None) -> None:
        super().__init__(f"{node_id} answered a failure ({error_code or 'error'}): {result!r:.200}")
        self.node_id = node_id
        self.result = result
        self.error_code = error_code


@dataclass(frozen=True)
class Attempt:
    """One try of a call: where it went, who decided, and how it failed (None: it did not)."""

    number: int
    node_id: str | None  # None when no node could be decided for the attempt
    decided_locally: bool
    coordination_id: str | None
    error: BaseException | None
    latency_ms: float | None  # the handler's time; None when nothing was called

    def describe(self) -> str:
        """One line: attempt, node and error."""
        where = self.node_id or "no node"
        local = " (decided locally)" if self.decided_locally else ""
        what = "ok" if self.error is None else f"{type(self.error).__name__}: {self.error}"
        return f"attempt {self.number} on {where}{local}: {what}"


def attach_attempts(error: BaseException, attempts: tuple[Attempt, ...]) -> BaseException:
    """The error, carrying every attempt of its call (and, on Python 3.11+, a note listing them)."""
    # An exception type with __slots__ takes no attribute: the note still tells.
    with contextlib.suppress(AttributeError):
        setattr(error, ATTEMPTS_ATTRIBUTE, attempts)
    if sys.version_info >= (3, 11):
        error.add_note("switchyard: " + "; ".join(attempt.describe() for attempt in attempts))
    return error


def attempts_of(error: BaseException) -> tuple[Attempt, ...]:
    """Every attempt of the call that raised `error`; empty for an error of something else."""
    attempts: tuple[Attempt, ...] = getattr(error, ATTEMPTS_ATTRIBUTE, ())
    return attempts
