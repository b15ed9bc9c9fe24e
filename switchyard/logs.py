"""Structured logs: one JSON object a line, carrying the ids of the work it belongs to.

Every line logged while an HTTP request is served carries its `request_id`, and, once known,
the `principal` (set by authentication), the `coordination_id` and the `workflow_id` it acted
on. Lines logged by workflows and activities carry their `workflow_id` through Temporal's
loggers (`workflow.logger`, `activity.logger`) or, for any logger, the running activity.
With tracing on, lines logged inside a span carry its `trace_id`.

The ids live in one mutable `LogContext` per request, held in a context variable: the
request's task and the threads it hands work to share the object, so an id bound inside a
synchronous route (run on a worker thread) still reaches the access log line written after it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from temporalio import activity, workflow

from switchyard import tracing
from switchyard.settings import Settings

# LogRecord attributes that are not extras; anything else a caller passes in `extra` is kept.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# Temporal's details (mapped to ids below) and uvicorn's ANSI-coloured copy of its message.
_SKIPPED_EXTRAS = frozenset(
    {"temporal_workflow", "temporal_activity", "temporal_log", "color_message"}
)


@dataclass
class LogContext:
    """The ids of one unit of work; `state` is the request's ASGI state (the principal)."""

    ids: dict[str, str] = field(default_factory=dict)
    state: Mapping[str, Any] | None = None

    def resolved(self) -> dict[str, str]:
        """The bound ids plus the principal once authentication has put it in the state."""
        found = dict(self.ids)
        if "principal" not in found and self.state is not None:
            principal = self.state.get("principal")
            if principal is not None:
                found["principal"] = str(getattr(principal, "subject", principal))
        return found


_context: ContextVar[LogContext | None] = ContextVar("switchyard_log_context", default=None)


@contextmanager
def log_context(state: Mapping[str, Any] | None = None, **ids: str) -> Iterator[LogContext]:
    """Lines logged inside the block (and in threads it hands work to) carry these ids."""
    context = LogContext(ids={k: v for k, v in ids.items() if v}, state=state)
    token = _context.set(context)
    try:
        yield context
    finally:
        _context.reset(token)


def bind(**ids: str | None) -> None:
    """Add ids to the current unit of work's context; outside one this does nothing."""
    context = _context.get()
    if context is not None:
        context.ids.update({k: v for k, v in ids.items() if v})


def current_ids() -> dict[str, str]:
    """The ids the next line logged here would carry (from the context only)."""
    context = _context.get()
    return context.resolved() if context is not None else {}


def record_ids(record: logging.LogRecord) -> dict[str, Any]:
    """Every id a log record should carry: request context, then Temporal's own details."""
    found: dict[str, Any] = current_ids()
    details: Mapping[str, Any] | None = getattr(record, "temporal_workflow", None)
    if details:
        found["workflow_id"] = details.get("workflow_id")
        found["run_id"] = details.get("run_id")
        found["workflow_type"] = details.get("workflow_type")
        if details.get("update_id"):
            found["update_id"] = details["update_id"]
    details = getattr(record, "temporal_activity", None)
    if details is None and activity.in_activity():
        details = _activity_details()
    if details:
        found["workflow_id"] = details.get("workflow_id")
        found["activity_type"] = details.get("activity_type")
        found["activity_id"] = details.get("activity_id")
        found["attempt"] = details.get("attempt")
    trace_id = tracing.current_trace_id()
    if trace_id:
        found["trace_id"] = trace_id
    return {k: v for k, v in found.items() if v is not None}


def _activity_details() -> Mapping[str, Any]:
    info = activity.info()
    return {
        "workflow_id": info.workflow_id,
        "activity_type": info.activity_type,
        "activity_id": info.activity_id,
        "attempt": info.attempt,
    }


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v
        for k, v in record.__dict__.items()
        if k not in _STANDARD and k not in _SKIPPED_EXTRAS and not k.startswith("_")
    }


def _access_fields(record: logging.LogRecord) -> dict[str, Any]:
    """uvicorn's access line as fields: (client, method, path, http version, status)."""
    args = record.args
    if record.name != "uvicorn.access" or not isinstance(args, tuple) or len(args) != 5:
        return {}
    client, method, path, _version, status = args
    return {"client": client, "method": method, "path": path, "status": status}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, ids, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single line of JSON."""
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(record_ids(record))
        line.update(_access_fields(record))
        for key, value in _extras(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


class ConsoleFormatter(logging.Formatter):
    """A readable line for `make run`: time, level, logger, message, then the ids."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        """The classic line with `[key=value ...]` appended when ids apply."""
        text = super().format(record)
        ids = record_ids(record)
        if not ids:
            return text
        suffix = " ".join(f"{k}={v}" for k, v in ids.items())
        if "\n" in text:  # keep the ids on the message line, before a traceback
            head, tail = text.split("\n", 1)
            return f"{head} [{suffix}]\n{tail}"
        return f"{text} [{suffix}]"


def formatter_for(log_format: str) -> logging.Formatter:
    """The formatter a `SWITCHYARD_LOG_FORMAT` value names."""
    return ConsoleFormatter() if log_format == "console" else JsonFormatter()


def configure_logging(settings: Settings) -> None:
    """Send every logger (uvicorn's and Temporal's included) through one stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(settings.log_format))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # No line shows the caller's file and line, the thread or the process: don't collect
    # them (the logging HOWTO's "Optimization"; the caller's frame walk cost ~10 us a line).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    if settings.log_format == "json":
        # The ids are fields of the line; Temporal's copy of them in the message is noise.
        workflow.logger.workflow_info_on_message = False
        activity.logger.activity_info_on_message = False
