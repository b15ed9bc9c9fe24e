"""What Switchyard's HTTP answers mean to the client: a decision, an error it means, or an
outage to decide around."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from switchyard_client.context import RoutingRequest
from switchyard_client.decision import Decision, MalformedAnswer, server_decision
from switchyard_client.errors import RequestRejected

# 503s that are Switchyard's decision, not its outage: no node may take the request, or its
# budget is spent. Deciding around them locally would break the rule they enforce.
REFUSALS = frozenset({"no_eligible_node", "budget_exhausted"})


class FailOpen(Exception):
    """Switchyard did not decide: the client decides locally (`reason` says why)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def decision_of(request: RoutingRequest, response: httpx.Response) -> Decision:
    """The decision in an execute-coordination answer; RequestRejected for an error Switchyard
    means (4xx, and the refusals above); FailOpen for anything else."""
    status = response.status_code
    body = _json(response.content)
    if status == 200:
        try:
            return server_decision(request.service, request.operation, body)
        except MalformedAnswer as exc:
            raise FailOpen(str(exc)) from None
    error = error_of(body)
    code = str(error.get("code") or f"http_{status}")
    message = str(error.get("message") or response.reason_phrase or "")
    # Switchyard's own rate limit refuses volume, not this request: deciding locally keeps
    # the caller as available as it was without Switchyard (a 4xx, but not the caller's fault).
    if status == 429:
        raise FailOpen(f"429 {code}: {message}", retry_after_of(response))
    if status >= 500 and code not in REFUSALS:
        raise FailOpen(f"{status} {code}: {message}", retry_after_of(response))
    raise RequestRejected(code, message, status=status, details=error.get("details"))


def error_of(body: Any) -> Mapping[str, Any]:
    """The `error` object of Switchyard's error envelope (empty when there is none)."""
    error = body.get("error") if isinstance(body, Mapping) else None
    return error if isinstance(error, Mapping) else {}


def json_of(response: httpx.Response) -> Any:
    """The answer's JSON, or None when it is not JSON."""
    return _json(response.content)


def retry_after_of(response: httpx.Response) -> float | None:
    """Retry-After in seconds, when given as a number."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def describe(error: BaseException) -> str:
    """A short account of a transport error for logs and `Decision.reason`."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _json(content: bytes) -> Any:
    try:
        return json.loads(content) if content else None
    except ValueError:
        return None
