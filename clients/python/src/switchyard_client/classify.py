"""How a provider call went: success, failure, or refusal (the provider's rate limit)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import httpx

Kind = Literal["success", "failure", "refusal"]
# Switchyard reads this errorCode as a refusal (docs/MONITORING.md): no health figure moves.
REFUSAL_CODE = "429"
# Every errorCode Switchyard reads as a refusal (any case).
REFUSAL_CODES = frozenset({"429", "rate_limited", "rate_limit_exceeded", "too_many_requests"})
MAX_ERROR_CODE = 100


@dataclass(frozen=True)
class Classification:
    """The verdict on one provider call, and the errorCode reported with a failure."""

    kind: Kind
    error_code: str | None = None

    @property
    def succeeded(self) -> bool:
        """Whether the call counts as a success (no retry, reported as one)."""
        return self.kind == "success"


SUCCESS = Classification("success")


def failure(error_code: str = "error") -> Classification:
    """A failed call: reported with `error_code`, retried elsewhere."""
    return Classification("failure", error_code[:MAX_ERROR_CODE])


def refusal(error_code: str = REFUSAL_CODE) -> Classification:
    """A call the provider refused for its rate limit: retried elsewhere, health untouched."""
    return Classification("refusal", error_code[:MAX_ERROR_CODE])


# The caller's hook: given a handler's return value or the exception it raised, a
# Classification, True/False for success/failure, or None for the default rules.
Classify = Callable[[object], "Classification | bool | None"]


def default_classify(value: object) -> Classification:
    """The default rules: exceptions and 5xx fail, 429 is a refusal, anything else succeeds.

    A 4xx other than 429 (a declined card, a bad address) is the provider answering: a success
    for routing, and an exception carrying one is raised to the caller without a retry.
    """
    status = _status_of(value)
    if status == 429:
        return refusal()
    if status is not None and 400 <= status < 500:
        return SUCCESS
    if isinstance(value, BaseException):
        if _is_timeout(value):
            return failure("timeout")
        return failure(str(status) if status is not None else type(value).__name__)
    if status is not None and status >= 500:
        return failure(str(status))
    return SUCCESS


def resolve(classify: Classify | None, value: object) -> Classification:
    """The caller's verdict on `value` when it gives one, else the default rules'."""
    if classify is not None:
        verdict = classify(value)
        if isinstance(verdict, Classification):
            return verdict
        if verdict is True:
            return SUCCESS
        if verdict is False:
            default = default_classify(value)
            return default if not default.succeeded else failure(_error_name(value))
    return default_classify(value)


def _error_name(value: object) -> str:
    status = _status_of(value)
    if status is not None:
        return str(status)
    return type(value).__name__ if isinstance(value, BaseException) else "error"


def _is_timeout(error: BaseException) -> bool:
    if isinstance(error, TimeoutError | asyncio.TimeoutError | httpx.TimeoutException):
        return True
    return "Timeout" in type(error).__name__  # requests.Timeout, a provider SDK's own


def _status_of(value: object) -> int | None:
    """The HTTP status a response, or an exception about one, carries (httpx, requests,
    aiohttp and provider SDKs name it differently)."""
    if isinstance(value, BaseException):
        response = getattr(value, "response", None)
        for candidate in (
            getattr(response, "status_code", None),
            getattr(value, "status_code", None),
            getattr(value, "http_status", None),
            getattr(value, "status", None),
        ):
            if isinstance(candidate, int):
                return candidate
        return None
    for name in ("status_code", "status"):
        candidate = getattr(value, name, None)
        if isinstance(candidate, int) and not isinstance(candidate, bool):
            return candidate
    return None
