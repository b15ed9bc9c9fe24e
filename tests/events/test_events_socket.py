"""The events WebSocket on a real server: resume, filters, auth, slow clients, polling."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from conftest import TEST_SECRET
from events_support import (
    BASE,
    SUBPROTOCOL,
    LiveApi,
    background_writer,
    commit_events,
    drafts,
    head,
    wait_until,
)
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from api.app import create_app
from api.auth import Role, issue_token
from switchyard.settings import Settings


@pytest.fixture
def live(clean_store: Engine, settings: Settings) -> Iterator[LiveApi]:
    """The API on a clean store, served by uvicorn."""
    with LiveApi(create_app(settings, prepare=False)) as api:
        yield api


def receive(ws: ClientConnection, timeout: float = 20.0) -> dict[str, Any]:
    """The next event."""
    event: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
    return event


def receive_until(ws: ClientConnection, last_id: int, timeout: float = 30.0) -> list[int]:
    """Ids of events received until one with `last_id` (or a later id) arrived."""
    ids: list[int] = []
    while not ids or ids[-1] < last_id:
        ids.append(receive(ws, timeout)["id"])
    return ids


def test_resume_after_disconnects_loses_and_repeats_nothing_while_events_flow(
    live: LiveApi, sessions: sessionmaker[Session], token: Callable[..., str]
) -> None:
    viewer = token(Role.viewer)
    start = head(sessions)
    received: list[int] = []
    with background_writer(sessions, total=240) as written:
        since = start
        for stop_after in (25, 60, 40):  # three disconnects while the writer keeps going
            with live.events(viewer, f"?since={since}") as ws:
                assert ws.subprotocol == SUBPROTOCOL
                for _ in range(stop_after):
                    received.append(receive(ws)["id"])
            since = received[-1]
            time.sleep(0.05)  # events committed while nobody listens must be replayed
    assert len(written) == 240
    with live.events(viewer, f"?since={since}") as ws:
        received += receive_until(ws, written[-1])
    assert received == written  # every committed event, in commit order, exactly once


def test_live_only_without_since_and_ids_on_every_event(
    live: LiveApi, sessions: sessionmaker[Session], token: Callable[..., str]
) -> None:
    commit_events(sessions, drafts(3, "before"))
    with live.events(token(Role.viewer)) as ws:
        wait_until(lambda: live.hub.live_clients == 1, what="the client to subscribe")
        ids = commit_events(sessions, drafts(2, "after", service="stripe"))
        first, second = receive(ws), receive(ws)
    assert [first["id"], second["id"]] == ids
    assert first["eventType"] == "after" and first["n"] == 0 and second["n"] == 1
    assert "timestamp" in first
    wait_until(lambda: live.hub.clients == 0, what="the hub to count the client gone")
    assert live.hub.delivered >= 2


MIXED = [
    ("breaker_opened", "stripe"),
    ("breaker_closed", "twilio"),
    ("recovery_started", "stripe"),
    ("breaker_opened", "twilio"),
    ("emergency_mode_ended", "stripe"),
]


def test_filters_by_type_and_service_live_and_replayed(
    live: LiveApi, sessions: sessionmaker[Session], token: Callable[..., str]
) -> None:
    viewer = token(Role.viewer)
    start = head(sessions)

    def mixed() -> list[tuple[int, str, str]]:
        return [
            (commit_events(sessions, drafts(1, kind, service=service))[0], kind, service)
            for kind, service in MIXED
        ]

    replayed = mixed()  # committed before the clients connect: they get these replayed
    filters = {
        "types": "?types=breaker_opened,recovery_started",
        "service": "?service=stripe",
        "both": "?types=breaker_opened&service=twilio",
    }
    keep: dict[str, Callable[[str, str], bool]] = {
        "types": lambda kind, service: kind in ("breaker_opened", "recovery_started"),
        "service": lambda kind, service: service == "stripe",
        "both": lambda kind, service: kind == "breaker_opened" and service == "twilio",
    }
    with (
        live.events(viewer, filters["types"] + f"&since={start}") as by_type,
        live.events(viewer, filters["service"] + f"&since={start}") as by_service,
        live.events(viewer, filters["both"] + f"&since={start}") as both,
    ):
        wait_until(lambda: live.hub.clients == 3, what="three clients")
        everything = replayed + mixed()  # the second half arrives live
        got = {}
        for name, ws in [("types", by_type), ("service", by_service), ("both", both)]:
            expected = [(i, k) for i, k, s in everything if keep[name](k, s)]
            got[name] = [(e["id"], e["eventType"]) for e in _take(ws, len(expected))]
            assert got[name] == expected, name
    assert len(got["types"]) == 6 and len(got["service"]) == 6 and len(got["both"]) == 2


def _take(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [receive(ws) for _ in range(count)]


def test_no_token_is_refused_before_the_handshake(live: LiveApi, token: Callable[..., str]) -> None:
    for protocols in ([SUBPROTOCOL], [SUBPROTOCOL, "bearer.not-a-jwt"]):
        with pytest.raises(InvalidStatus) as refused:
            connect(live.url(f"{BASE}/events", "ws"), subprotocols=protocols, open_timeout=10)
        assert refused.value.response.status_code == 403  # uvicorn's answer to a pre-accept close
    assert live.hub.clients == 0
    with live.events(token(Role.viewer)) as ws:
        assert ws.subprotocol == SUBPROTOCOL


def test_refusals_carry_policy_codes_and_reasons(
    api_client: TestClient, token: Callable[..., str]
) -> None:
    """The close codes the app sends instead of accepting (TestClient shows them)."""
    url = f"{BASE}/events"
    cases: list[tuple[list[str], str, int, str]] = [
        ([SUBPROTOCOL], "", 4401, "missing bearer token"),
        ([SUBPROTOCOL, "bearer.abc"], "", 4401, "invalid token"),
        ([SUBPROTOCOL, f"bearer.{token()}"], "?since=-3", 4400, "since must be"),
        ([SUBPROTOCOL, f"bearer.{token()}"], "?types=Bad-Type", 4400, "not an event type"),
    ]
    for protocols, query, code, reason in cases:
        with (
            pytest.raises(WebSocketDisconnect) as closed,
            api_client.websocket_connect(url + query, subprotocols=protocols) as ws,
        ):
            ws.receive_text()
        assert closed.value.code == code, (query, protocols)
        assert reason in (closed.value.reason or "")
    # A valid token whose roles grant nothing.
    nothing = issue_token(Settings(jwt_secret=TEST_SECRET), subject="nobody", roles=[], ttl=600)
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        api_client.websocket_connect(url, subprotocols=[f"bearer.{nothing}"]) as ws,
    ):
        ws.receive_text()
    assert closed.value.code == 4403


def test_query_token_works_and_stays_out_of_the_access_log(
    clean_store: Engine,
    settings: Settings,
    sessions: sessionmaker[Session],
    token: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    viewer = token(Role.viewer)
    app = create_app(settings, prepare=False)
    with LiveApi(app, log_config=None, log_level="info") as api:
        start = head(sessions)
        ids = commit_events(sessions, drafts(1))
        uri = api.url(f"{BASE}/events?since={start}&token={viewer}", "ws")
        with connect(uri, open_timeout=10) as ws:
            assert receive(ws)["id"] == ids[0]
    accepted = [r.getMessage() for r in caplog.records if "WebSocket" in r.getMessage()]
    assert accepted and all(f"since={start}" in line for line in accepted)
    assert viewer not in caplog.text


def test_an_expired_token_closes_the_stream_with_4401(
    clean_store: Engine, make_settings: Callable[..., Settings], token: Callable[..., str]
) -> None:
    settings = make_settings(jwt_leeway_seconds=0)
    with (
        LiveApi(create_app(settings, prepare=False)) as api,
        api.events(token(Role.viewer, ttl=2)) as ws,
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(timeout=30)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "token expired")


def _starved_socket() -> socket.socket:
    """A client socket with a tiny receive buffer that the test then stops reading."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    return sock


def test_a_slow_client_is_closed_with_4008_and_others_keep_up(
    live: LiveApi, sessions: sessionmaker[Session], token: Callable[..., str]
) -> None:
    viewer = token(Role.viewer)
    live.hub.backlog = 40  # pages of 20: a client more than 40 events behind is dropped
    start = head(sessions)
    total = 6000
    fast_ids: list[int] = []
    sock = _starved_socket()
    sock.connect(("127.0.0.1", live.port))
    slow_client = connect(
        live.url(f"{BASE}/events?since={start}", "ws"),
        sock=sock,
        subprotocols=[SUBPROTOCOL, f"bearer.{viewer}"],  # type: ignore[list-item]
        compression=None,
        max_queue=1,
        open_timeout=10,
    )
    with slow_client as slow, live.events(viewer, f"?since={start}") as fast:
        wait_until(lambda: live.hub.clients == 2, what="two clients")
        written: list[int] = []
        filler = os.urandom(600).hex()  # 1.2 kB that does not compress away
        # The fast client reads while the events are written (the last id is known once the
        # writing ends; ids are consecutive, so it reads until start + total).
        reader = threading.Thread(
            target=lambda: fast_ids.extend(receive_until(fast, start + total))
        )
        reader.start()
        for _ in range(total // 500):
            written += commit_events(sessions, drafts(500, "bulk", filler=filler))
        reader.join(timeout=120)
        assert fast_ids == written  # the slow client held nobody up

        slow_ids: list[int] = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                slow_ids.append(json.loads(slow.recv(timeout=30))["id"])
    close = closed.value.rcvd
    assert close is not None and close.code == 4008
    assert close.reason == f"client too slow; reconnect with since={slow_ids[-1]}"
    assert slow_ids == written[: len(slow_ids)] and len(slow_ids) < total
    # Resuming where the reason says loses nothing.
    with live.events(viewer, f"?since={slow_ids[-1]}") as again:
        rest = receive_until(again, written[-1])
    assert slow_ids + rest == written


def test_polling_pages_with_next_since(
    api_client: TestClient, sessions: sessionmaker[Session], auth: Callable[..., dict[str, str]]
) -> None:
    viewer = auth(Role.viewer)
    ids = commit_events(sessions, drafts(5, "page", service="stripe"))
    ids += commit_events(sessions, drafts(3, "other", service="twilio"))
    start = ids[0] - 1

    def page(query: str) -> dict[str, Any]:
        response = api_client.get(f"{BASE}/events{query}", headers=viewer)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    first = page(f"?since={start}&limit=3")
    assert [e["id"] for e in first["events"]] == ids[:3] and first["nextSince"] == ids[2]
    rest = page(f"?since={first['nextSince']}&limit=100")
    assert [e["id"] for e in rest["events"]] == ids[3:] and rest["nextSince"] == ids[-1]
    assert rest["events"][0]["eventType"] == "page" and rest["events"][0]["n"] == 3
    # A filtered page that comes back short still moves the cursor past what it skipped.
    stripe = page(f"?since={start}&service=stripe&types=page,breaker_opened")
    assert [e["id"] for e in stripe["events"]] == ids[:5] and stripe["nextSince"] == ids[-1]
    assert page(f"?since={ids[-1]}")["events"] == []
    bad = api_client.get(f"{BASE}/events?types=DROP%20TABLE", headers=viewer)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
    assert api_client.get(f"{BASE}/events").status_code == 401


def test_tail_gives_the_newest_events_oldest_first_and_where_to_read_on(
    api_client: TestClient, sessions: sessionmaker[Session], auth: Callable[..., dict[str, str]]
) -> None:
    viewer = auth(Role.viewer)

    def page(query: str) -> dict[str, Any]:
        response = api_client.get(f"{BASE}/events{query}", headers=viewer)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    before = head(sessions)
    ids = commit_events(sessions, drafts(6, "tail", service="stripe"))
    ids += commit_events(sessions, drafts(2, "other", service="twilio"))

    newest = page("?tail=3")
    assert [e["id"] for e in newest["events"]] == ids[-3:]  # oldest first
    assert newest["nextSince"] == ids[-1]
    assert [e["eventType"] for e in newest["events"]] == ["tail", "other", "other"]
    # Filtered: the newest stripe events, though twilio's came after them.
    stripe = page("?tail=4&service=stripe")
    assert [e["id"] for e in stripe["events"]] == ids[2:6] and stripe["nextSince"] == ids[-1]
    # Fewer than asked for after `since`: all of them; `limit` plays no part.
    since = page(f"?tail=50&since={ids[4]}&limit=1")
    assert [e["id"] for e in since["events"]] == ids[5:]
    everything = page(f"?tail=1000&since={before}")
    assert [e["id"] for e in everything["events"]] == ids
    # Read on from `nextSince`: the next event and nothing before it.
    later = commit_events(sessions, drafts(1, "tail", service="stripe"))
    assert [e["id"] for e in page(f"?since={newest['nextSince']}")["events"]] == later
    for bad in ("0", "1001", "x"):
        refused = api_client.get(f"{BASE}/events?tail={bad}", headers=viewer)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["details"][0]["field"] == "tail"


def test_emergency_text_is_decrypted_for_clients(
    live: LiveApi, sessions: sessionmaker[Session], token: Callable[..., str], settings: Settings
) -> None:
    from store.crypto import FieldCipher
    from store.db import transaction
    from store.events import publish

    cipher = FieldCipher.from_keys(settings.encryption_keys)
    sealed = cipher.seal_event(
        "emergency_mode_activated",
        "emergency_1",
        {"coordinationId": "emergency_1", "emergencyReason": "outage", "maxBudgetOverride": 5},
    )
    assert sealed["emergencyReason"] != "outage"
    start = head(sessions)
    with transaction(sessions) as session:
        publish(session, "emergency_mode_activated", sealed, coordination_id="emergency_1")
    with live.events(token(Role.viewer), f"?since={start}") as ws:
        event = receive(ws)
    assert event["emergencyReason"] == "outage" and event["maxBudgetOverride"] == 5
    polled = httpx.get(
        live.url(f"{BASE}/events?since={start}"),
        headers={"Authorization": f"Bearer {token(Role.viewer)}"},
    ).json()["data"]["events"]
    assert polled[0]["emergencyReason"] == "outage"


def test_polling_refuses_a_malformed_service_filter_naming_the_field(
    clean_store: Engine, make_settings: Callable[..., Settings], token: Callable[..., str]
) -> None:
    # A NUL byte reached PostgreSQL as a string literal and came back a 500.
    app = create_app(make_settings(temporal_address="127.0.0.1:1"), prepare=False)
    headers = {"Authorization": f"Bearer {token(Role.viewer)}"}
    with TestClient(app) as client:
        for service in ("str\x00ipe", "stripe;drop", " stripe"):
            response = client.get(f"{BASE}/events", params={"service": service}, headers=headers)
            assert response.status_code == 422, response.text
            assert response.json()["error"]["details"][0]["field"] == "service"
        ok = client.get(f"{BASE}/events", params={"service": "stripe"}, headers=headers)
        assert ok.status_code == 200, ok.text
