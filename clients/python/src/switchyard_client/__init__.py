"""switchyard-client: call external providers through Switchyard.

Decide with execute-coordination, call the chosen node, report the outcome in background
batches, retry elsewhere with failedProviders, and decide locally from a recent catalog copy
when Switchyard is unreachable, slow or answering 5xx.
"""

from switchyard_client.async_client import AsyncSwitchyard
from switchyard_client.classify import (
    SUCCESS,
    Classification,
    default_classify,
    failure,
    refusal,
)
from switchyard_client.decision import Decision, Hedge
from switchyard_client.errors import (
    Attempt,
    FailedResult,
    NoHandler,
    RequestRejected,
    SwitchyardError,
    SwitchyardUnavailable,
    attempts_of,
)
from switchyard_client.observe import Counters, Hooks
from switchyard_client.sync_client import Switchyard

__all__ = [
    "SUCCESS",
    "AsyncSwitchyard",
    "Attempt",
    "Classification",
    "Counters",
    "Decision",
    "FailedResult",
    "Hedge",
    "Hooks",
    "NoHandler",
    "RequestRejected",
    "Switchyard",
    "SwitchyardError",
    "SwitchyardUnavailable",
    "attempts_of",
    "default_classify",
    "failure",
    "refusal",
]
