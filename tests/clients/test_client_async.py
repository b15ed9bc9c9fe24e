"""switchyard_client.AsyncSwitchyard against the real API served by uvicorn."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
from client_support import (
    DEADLINE,
    GENEROUS_LIMITS,
    PRIMARY,
    SECONDARY,
    ProviderDown,
    RestartableApi,
    outcomes_stored,
)
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from switchyard_client import AsyncSwitchyard, Decision, Hooks, RequestRejected

from api.app import create_app
from api.auth import Role
from switchyard.settings import Settings

PAY = ("stripe", "payment_processing")
CRITICAL = {"priority": "CRITICAL"}


@pytest.fixture
def api(clean_store: Engine, make_settings: Callable[..., Settings]) -> Iterator[RestartableApi]:
    """The API on a clean store, with limits for hundreds of requests."""
    settings = make_settings(**GENEROUS_LIMITS)
    with RestartableApi(lambda: create_app(settings, prepare=False)) as served:
        yield served


@pytest.fixture
def operator(token: Callable[..., str]) -> str:
    """The token a calling service holds."""
    return token(Role.operator, sub="checkout-service")


async def until(condition: Callable[[], bool], what: str = "", within: float = 30.0) -> None:
    """Poll `condition` while the event loop (and the client's background task) runs."""
    deadline = time.monotonic() + within
    for _ in iter(condition, True):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.02)


def declining(node_id: str) -> Callable[[str], Awaitable[str]]:
    """An async handler whose provider refuses every call."""

    async def call(order: str) -> str:
        raise ProviderDown(f"{node_id} refused the connection for {order}")

    return call


def paying(node_id: str) -> Callable[[str], Awaitable[str]]:
    """An async handler whose provider takes the payment."""

    async def call(order: str) -> str:
        await asyncio.sleep(0)
        return f"paid by {node_id} for {order}"

    return call


async def test_a_call_whose_first_node_fails_is_retried_on_another_node(
    api: RestartableApi, operator: str, sessions: sessionmaker[Session]
) -> None:
    decisions: list[Decision] = []
    handlers = {PRIMARY: declining(PRIMARY), SECONDARY: paying(SECONDARY)}
    hooks = Hooks(on_decision=decisions.append)
    async with AsyncSwitchyard(api.url, operator, hooks=hooks, decision_deadline=DEADLINE) as sy:
        paid = await sy.call(*PAY, handlers, "order-1", **CRITICAL)
        assert paid == f"paid by {SECONDARY} for order-1"
        assert await sy.flush(timeout=30)
        assert sy.counters.retries == 1
    assert [d.node_id for d in decisions] == [PRIMARY, SECONDARY]
    assert not any(d.decided_locally for d in decisions)
    assert (outcomes_stored(sessions, PRIMARY), outcomes_stored(sessions, SECONDARY)) == (1, 1)


async def test_with_the_api_stopped_calls_go_on_locally_and_reports_arrive_when_it_is_back(
    api: RestartableApi, operator: str, sessions: sessionmaker[Session]
) -> None:
    decisions: list[Decision] = []
    handlers = {PRIMARY: paying(PRIMARY), SECONDARY: paying(SECONDARY)}
    hooks = Hooks(on_decision=decisions.append)
    async with AsyncSwitchyard(
        api.url, operator, catalog_refresh_interval=0.2, hooks=hooks, decision_deadline=DEADLINE
    ) as sy:
        await until(lambda: sy.catalog is not None, what="the first catalog copy")
        for n in range(3):
            assert await sy.call(*PAY, handlers, n, **CRITICAL) == f"paid by {PRIMARY} for {n}"
        await asyncio.to_thread(api.stop)
        for n in range(3, 9):
            assert await sy.call(*PAY, handlers, n, **CRITICAL) == f"paid by {PRIMARY} for {n}"
        assert [d.decided_locally for d in decisions] == [False] * 3 + [True] * 6
        assert {d.node_id for d in decisions} == {PRIMARY}
        assert sy.counters.local_decisions == 6
        await asyncio.to_thread(api.start)
        assert await sy.flush(timeout=30)
        assert sy.counters.reports_sent == 9
    assert outcomes_stored(sessions, PRIMARY) == 9


async def test_a_bad_token_raises_at_once(api: RestartableApi) -> None:
    called: list[str] = []

    async def never(order: str) -> None:
        called.append(order)

    async with AsyncSwitchyard(api.url, "not-a-token", decision_deadline=DEADLINE) as sy:
        with pytest.raises(RequestRejected) as raised:
            await sy.call(*PAY, {PRIMARY: never}, "order-1")
        assert (raised.value.status, raised.value.code) == (401, "unauthorized")
        assert raised.value.message
        assert called == [] and sy.counters.local_decisions == 0
