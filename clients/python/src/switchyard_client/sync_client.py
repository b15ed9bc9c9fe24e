"""Switchyard: the client for synchronous code; a background thread reports and refreshes."""

from __future__ import annotations

import inspect
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from switchyard_client.answers import FailOpen, decision_of, describe, json_of, retry_after_of
from switchyard_client.attempts import Attempts
from switchyard_client.catalog import CatalogCopy
from switchyard_client.classify import Classify
from switchyard_client.context import RoutingRequest, check_context, routing_request
from switchyard_client.core import ClientCore, Options, TokenSource
from switchyard_client.decision import Decision
from switchyard_client.errors import SwitchyardError
from switchyard_client.observe import Counters, Hooks, logger
from switchyard_client.reports import Batch

T = TypeVar("T")


def _refuse_awaitable(result: object) -> None:
    """An async handler given to the sync client: its coroutine would never run."""
    close = getattr(result, "close", None)
    if close is not None:
        close()  # no "never awaited" warning on top of this error
    raise TypeError("an async handler was given to Switchyard; use AsyncSwitchyard")


class Switchyard:
    """Decide, call, report and retry through Switchyard; decide locally when it is away."""

    def __init__(
        self,
        base_url: str,
        token: TokenSource,
        *,
        decision_deadline: float = 0.25,
        timeout: float = 5.0,
        max_attempts: int = 3,
        classify: Classify | None = None,
        report_batch_size: int = 500,
        report_interval: float = 1.0,
        max_queued_reports: int = 20_000,
        catalog_refresh_interval: float = 10.0,
        flush_timeout: float = 5.0,
        hooks: Hooks | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        options = Options(
            decision_deadline=decision_deadline,
            timeout=timeout,
            max_attempts=max_attempts,
            classify=classify,
            report_batch_size=report_batch_size,
            report_interval=report_interval,
            max_queued_reports=max_queued_reports,
            catalog_refresh_interval=catalog_refresh_interval,
            flush_timeout=flush_timeout,
            hooks=hooks or Hooks(),
        )
        self._core = core = ClientCore(base_url, token, options)
        # Decisions and the background work use separate pools: a slow report never holds
        # the connection a decision needs.
        self._http = httpx.Client(timeout=core.deadline, transport=transport)
        self._background_http = httpx.Client(timeout=timeout, transport=transport)
        self._decide_url = core.api + "/execute-coordination"
        self._wake = threading.Event()
        core.wake_sender = self._wake.set
        self._drained = threading.Condition()
        self._flushes = 0
        self._closing = False
        self._closed = False
        self._thread = threading.Thread(
            target=self._background, name="switchyard-client", daemon=True
        )
        self._thread.start()

    @property
    def counters(self) -> Counters:
        """Decisions, local decisions, retries, reports queued/sent/dropped/rejected."""
        return self._core.counters

    @property
    def catalog(self) -> CatalogCopy | None:
        """The catalog copy local decisions read (None before the first refresh)."""
        return self._core.catalog

    @property
    def catalog_age(self) -> float | None:
        """Seconds since the catalog copy was taken; None before the first one."""
        return self._core.catalog_age

    @property
    def queued_reports(self) -> int:
        """Outcome reports not yet acknowledged by Switchyard."""
        return self._core.reporter.queued()

    def decide(self, service: str, operation: str, **routing_context: Any) -> Decision:
        """One execute-coordination decision, or a local one when Switchyard does not answer."""
        return self._decide(routing_request(service, operation, routing_context), None)

    def call(
        self,
        service: str,
        operation: str,
        handlers: Mapping[str, Callable[..., T]],
        *args: Any,
        **routing_context: Any,
    ) -> T:
        """Decide, run the chosen node's handler with `args`, report, and retry elsewhere on
        failure (up to max_attempts); the last error, carrying every attempt, when all fail."""
        check_context(routing_context)
        attempts = Attempts(self._core, list(handlers))
        while attempts.more():
            try:
                request = attempts.request(service, operation, routing_context)
                decision = self._decide(request, attempts.handlers)
            except SwitchyardError as exc:
                if not attempts.tried():
                    raise  # nothing ran: Switchyard's answer is the caller's error
                attempts.undecided(exc)
                break
            handler = attempts.handler_for(decision, handlers)
            if handler is None:
                continue
            started = time.perf_counter()
            try:
                result = handler(*args)
            except Exception as exc:
                if attempts.settle(decision, exc, time.perf_counter() - started, raised=True):
                    raise
            else:
                if inspect.isawaitable(result):
                    _refuse_awaitable(result)  # the caller's mistake, not the provider's
                if attempts.settle(decision, result, time.perf_counter() - started):
                    return result
        raise attempts.final_error()

    def report(
        self,
        decision: Decision,
        *,
        success: bool,
        latency_ms: float,
        error_code: str | None = None,
    ) -> None:
        """Queue the outcome of a call you made to `decision`'s node yourself."""
        self._core.report(decision, success, latency_ms, error_code)

    def flush(self, timeout: float | None = None) -> bool:
        """Send every queued report now; True when all were acknowledged within `timeout`."""
        if self._closed:
            return self._core.reporter.idle()
        wait = self._core.options.flush_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        with self._drained:
            self._flushes += 1
        self._wake.set()
        try:
            with self._drained:
                while not self._core.reporter.idle():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._drained.wait(remaining)
        finally:
            with self._drained:
                self._flushes -= 1
        return self._core.reporter.idle()

    def close(self) -> None:
        """Send the queued reports (up to flush_timeout), then stop the background thread."""
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        self._thread.join(self._core.options.flush_timeout + self._core.options.timeout + 1.0)
        self._closed = True
        self._http.close()
        self._background_http.close()

    def __enter__(self) -> Switchyard:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def _decide(self, request: RoutingRequest, handlers: Sequence[str] | None = None) -> Decision:
        core = self._core
        if self._closed:
            raise RuntimeError("this Switchyard client is closed")
        if not core.gate.ask(time.monotonic()):
            return core.fall_back(request, handlers, core.gate.reason, failed_now=False)
        try:
            response = self._http.post(
                self._decide_url, content=json.dumps(request.body), headers=core.headers()
            )
            decision = decision_of(request, response)
        except FailOpen as exc:
            return core.fall_back(request, handlers, exc.reason, exc.retry_after)
        except httpx.RequestError as exc:
            return core.fall_back(request, handlers, describe(exc))
        except SwitchyardError:
            core.server_answered()
            raise
        except Exception as exc:  # the token provider failed: Switchyard was never asked
            logger.exception("switchyard_client: could not ask Switchyard")
            return core.fall_back(request, handlers, describe(exc))
        except BaseException:  # cancelled mid-request: the next decision may probe
            core.gate.abandon()
            raise
        core.server_answered()
        return core.decided(decision)

    # The background thread: sends due batches, refreshes the catalog copy.

    def _background(self) -> None:
        core = self._core
        close_by = None
        while True:
            self._wake.clear()
            now = time.monotonic()
            if self._closing and close_by is None:
                close_by = now + core.options.flush_timeout
            step = core.next_step(now, self._flushes > 0, close_by)
            if step.kind == "stop":
                break
            try:
                if step.batch is not None:
                    self._send(step.batch)
                elif step.kind == "refresh":
                    self._refresh()
                else:
                    self._wake.wait(step.seconds)
            except Exception:  # a bug here must not stop reporting for good
                logger.exception("switchyard_client: background step %s failed", step.kind)
                time.sleep(1.0)
        with self._drained:
            self._drained.notify_all()

    def _send(self, batch: Batch) -> None:
        core = self._core
        headers = {**core.headers(), "Idempotency-Key": batch.key}
        try:
            response = self._background_http.post(
                core.api + "/outcomes", content=batch.body(), headers=headers
            )
        except Exception as exc:
            core.reporter.settle(batch, None, describe(exc), time.monotonic())
        else:
            nodes = core.reporter.settle(
                batch,
                response.status_code,
                json_of(response),
                time.monotonic(),
                retry_after_of(response),
            )
            if 200 <= response.status_code < 300:
                core.outcome_figures(nodes)
        with self._drained:
            self._drained.notify_all()

    def _refresh(self) -> None:
        core = self._core
        now = time.monotonic()
        try:
            providers = self._background_http.get(core.api + "/providers", headers=core.headers())
            coordinations = None
            if providers.status_code == 200 and core.needs_emergencies():
                answer = self._background_http.get(
                    core.api + "/active-coordinations", headers=core.headers()
                )
                coordinations = json_of(answer) if answer.status_code == 200 else None
        except Exception as exc:
            logger.debug("switchyard_client: catalog refresh failed: %s", describe(exc))
            core.refresh_failed(now)
            return
        if providers.status_code != 200:
            core.refresh_failed(now, retry_after_of(providers))
            logger.warning("switchyard_client: GET /providers answered %d", providers.status_code)
            return
        core.take_catalog(json_of(providers), coordinations, now)
