"""Both clients over httpx's MockTransport: what each kind of answer makes them do.

The same behaviour against the real API is tested in the repository's tests/clients.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import httpx
import pytest
from fakes import (
    PREMIUM,
    PRIMARY,
    SECONDARY,
    FakeSwitchyard,
    decision_answer,
    error_answer,
    reply,
)

from switchyard_client import (
    AsyncSwitchyard,
    FailedResult,
    NoHandler,
    RequestRejected,
    Switchyard,
    attempts_of,
)
from switchyard_client.core import Options

URL = "http://switchyard.test"


def retry_aware(request: httpx.Request) -> httpx.Response:
    """Switchyard's choice: the primary, and the secondary for a retry after the primary."""
    failed = json.loads(request.content).get("routingContext", {}).get("failedProviders", [])
    return reply(200, decision_answer(SECONDARY if PRIMARY in failed else PRIMARY))


def client(fake: FakeSwitchyard, **options: Any) -> Switchyard:
    return Switchyard(URL, "token", transport=httpx.MockTransport(fake), **options)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `condition` on the event loop (the background task makes it true)."""
    deadline = time.monotonic() + timeout
    for _ in iter(condition, True):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def fail(*_: Any) -> str:
    raise ConnectionError("provider refused the connection")


def test_a_rejected_request_raises_at_once_with_the_servers_code_and_message() -> None:
    fake = FakeSwitchyard(
        {"POST /execute-coordination": lambda _: reply(401, error_answer("unauthorized", "bad"))}
    )
    with client(fake) as sy:
        called: list[str] = []
        with pytest.raises(RequestRejected) as raised:
            sy.call("stripe", "pay", {PRIMARY: lambda: called.append("x")})
        assert (raised.value.status, raised.value.code, raised.value.message) == (
            401,
            "unauthorized",
            "bad",
        )
        assert called == [] and sy.counters.local_decisions == 0


def test_switchyards_refusals_are_raised_not_decided_around() -> None:
    for code in ("no_eligible_node", "budget_exhausted"):
        fake = FakeSwitchyard(
            {"POST /execute-coordination": lambda _, c=code: reply(503, error_answer(c, "no"))}
        )
        with client(fake) as sy, pytest.raises(RequestRejected) as raised:
            sy.decide("stripe", "pay")
        assert raised.value.code == code


def test_an_outage_is_decided_around_from_the_copy_and_429_holds_off() -> None:
    answers = iter(
        [
            reply(503, error_answer("database_unavailable", "the store is down")),
            reply(429, error_answer("rate_limited", "slow down"), {"Retry-After": "30"}),
        ]
    )
    fake = FakeSwitchyard({"POST /execute-coordination": lambda _: next(answers)})
    with client(fake) as sy:
        wait_for(lambda: sy.catalog_age is not None)
        first = sy.decide("stripe", "pay")
        assert first.decided_locally and first.node_id == PRIMARY
        assert "503 database_unavailable" in first.reason
        time.sleep(0.6)  # past the first hold: the next decision asks again (the probe)
        second = sy.decide("stripe", "pay")
        assert second.decided_locally and "429 rate_limited" in second.reason
        third = sy.decide("stripe", "pay")  # within Retry-After: Switchyard is not asked
        assert third.decided_locally
        assert len(fake.sent("POST", "/execute-coordination")) == 2
        assert sy.counters.local_decisions == 3


def test_a_failed_call_is_retried_elsewhere_and_both_outcomes_are_reported() -> None:
    fake = FakeSwitchyard({"POST /execute-coordination": retry_aware})
    with client(fake) as sy:
        result = sy.call("stripe", "pay", {PRIMARY: fail, SECONDARY: lambda: "paid"})
        assert result == "paid"
        assert sy.flush(5.0)
        assert sy.counters.retries == 1
    decisions = fake.bodies("POST", "/execute-coordination")
    assert [d.get("routingContext", {}).get("failedProviders") for d in decisions] == [
        None,
        [PRIMARY],
    ]
    (batch,) = fake.bodies("POST", "/outcomes")
    reported = [(o["nodeId"], o["success"], o.get("errorCode")) for o in batch["outcomes"]]
    assert reported == [(PRIMARY, False, "ConnectionError"), (SECONDARY, True, None)]
    assert batch["outcomes"][0]["coordinationId"] == f"coordination_1_{PRIMARY}"


def test_a_node_without_a_handler_is_not_called_and_every_attempt_is_on_the_last_error() -> None:
    choices = iter([PREMIUM, PRIMARY, SECONDARY])
    fake = FakeSwitchyard(
        {"POST /execute-coordination": lambda _: reply(200, decision_answer(next(choices)))}
    )
    handlers: dict[str, Callable[[], object]] = {
        PRIMARY: fail,
        SECONDARY: lambda: httpx.Response(503),
    }
    with client(fake) as sy:
        with pytest.raises(FailedResult) as raised:
            sy.call("stripe", "pay", handlers)
        attempts = attempts_of(raised.value)
        assert [(a.node_id, type(a.error)) for a in attempts] == [
            (PREMIUM, NoHandler),
            (PRIMARY, ConnectionError),
            (SECONDARY, FailedResult),
        ]
        assert raised.value.error_code == "503"
        assert sy.counters.retries == 2


def test_reports_go_out_within_the_interval_without_a_flush() -> None:
    fake = FakeSwitchyard({"POST /execute-coordination": retry_aware})
    with client(fake, report_interval=0.05, catalog_refresh_interval=3600) as sy:
        for sent in (1, 2, 3):
            sy.call("stripe", "pay", {PRIMARY: lambda: "paid"})
            wait_for(lambda n=sent: sy.counters.reports_sent == n)  # type: ignore[misc]
        assert len(fake.sent("POST", "/outcomes")) == 3


def test_closing_sends_what_is_queued_and_a_resent_batch_keeps_its_key() -> None:
    outcomes = iter([reply(500, error_answer("internal", "oops")), reply(202, {"data": {}})])
    fake = FakeSwitchyard(
        {
            "POST /execute-coordination": retry_aware,
            "POST /outcomes": lambda _: next(outcomes),
        }
    )
    sy = client(fake, report_interval=60.0)
    sy.call("stripe", "pay", {PRIMARY: lambda: "paid"})
    sy.close()
    keys = [r.headers["Idempotency-Key"] for r in fake.sent("POST", "/outcomes")]
    assert len(keys) == 2 and keys[0] == keys[1]
    assert sy.counters.reports_sent == 1 and sy.queued_reports == 0


def test_the_async_client_retries_reports_and_decides_around_an_outage() -> None:
    async def scenario() -> None:
        down = False

        def decide(request: httpx.Request) -> httpx.Response:
            if down:
                raise httpx.ConnectError("connection refused")
            return retry_aware(request)

        fake = FakeSwitchyard({"POST /execute-coordination": decide})

        async def fails() -> str:
            raise ConnectionError("refused")

        async def pays() -> str:
            return "paid"

        async with AsyncSwitchyard(URL, "t", transport=httpx.MockTransport(fake)) as sy:
            handlers = {PRIMARY: fails, SECONDARY: pays}
            assert await sy.call("stripe", "pay", handlers) == "paid"
            await until(lambda: sy.catalog_age is not None)
            down = True
            decisions: list[bool] = []
            for _ in range(3):
                decisions.append((await sy.decide("stripe", "pay")).decided_locally)
            assert decisions == [True, True, True]
            assert await sy.flush(5.0)
            assert sy.counters.snapshot()["reports_sent"] == 2

    asyncio.run(scenario())


def test_the_async_client_raises_a_rejection_at_once() -> None:
    async def scenario() -> None:
        fake = FakeSwitchyard(
            {
                "POST /execute-coordination": lambda _: reply(
                    422, error_answer("validation_error", "invalid request: serviceName")
                )
            }
        )
        async with AsyncSwitchyard(URL, "t", transport=httpx.MockTransport(fake)) as sy:
            with pytest.raises(RequestRejected, match="serviceName"):
                await sy.decide("nope", "pay")

    asyncio.run(scenario())


@pytest.mark.parametrize("constructor", [Switchyard.__init__, AsyncSwitchyard.__init__])
def test_both_constructors_default_to_the_documented_options(
    constructor: Callable[..., None],
) -> None:
    documented = {f.name: f.default for f in fields(Options) if f.name != "hooks"}
    defaults = constructor.__kwdefaults__ or {}
    assert {name: defaults[name] for name in documented} == documented


def test_an_async_handler_given_to_the_sync_client_is_refused_not_reported() -> None:
    fake = FakeSwitchyard({"POST /execute-coordination": retry_aware})

    async def pay() -> str:
        return "paid"

    with client(fake) as sy:
        with pytest.raises(TypeError, match="AsyncSwitchyard"):
            _ = sy.call("stripe", "pay", {PRIMARY: pay})
        assert sy.counters.reports_queued == 0


def test_a_cancelled_probe_lets_the_next_decision_probe() -> None:
    async def scenario() -> None:
        calls = 0
        release = asyncio.Event()

        async def hang(request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise httpx.ConnectError("refused")  # starts an outage
            if calls == 2:
                await release.wait()  # the probe: cancelled below
            return retry_aware(request)

        fake = FakeSwitchyard({"POST /execute-coordination": hang})
        async with AsyncSwitchyard(URL, "t", transport=httpx.MockTransport(fake)) as sy:
            await until(lambda: sy.catalog is not None)
            assert (await sy.decide("stripe", "pay")).decided_locally
            await asyncio.sleep(0.6)  # past the first hold
            probe = asyncio.create_task(sy.decide("stripe", "pay"))
            await until(lambda: calls == 2)
            probe.cancel()
            with pytest.raises(asyncio.CancelledError):
                await probe
            decision = await sy.decide("stripe", "pay")
            assert not decision.decided_locally and calls == 3

    asyncio.run(scenario())


def test_closing_gives_up_after_flush_timeout_while_switchyard_is_away() -> None:
    async def scenario() -> None:
        fake = FakeSwitchyard(
            {
                "POST /execute-coordination": retry_aware,
                "POST /outcomes": lambda _: reply(503, error_answer("database_unavailable", "")),
            }
        )
        transport = httpx.MockTransport(fake)
        sy = AsyncSwitchyard(URL, "t", transport=transport, flush_timeout=0.3)

        async def pays() -> str:
            return "paid"

        await sy.call("stripe", "pay", {PRIMARY: pays})
        await sy.aclose()  # returns: the report stays unsent
        assert sy.queued_reports == 1 and sy.counters.reports_sent == 0

    asyncio.run(scenario())
