"""Fan-out to many clients from one API process: each event framed once and written to every
socket, compressed or not; slow clients cut off without holding the others; resume with since.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest
from events_support import (
    BASE,
    SUBPROTOCOL,
    LiveApi,
    commit_events,
    drafts,
    head,
    wait_until,
)
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import PerMessageDeflate

from api.app import create_app
from api.auth import Role
from api.event_frames import WINDOW_BITS, deflate_message, text_frame
from switchyard.settings import Settings

CLIENTS = 40

# How the server is run: as `switchyard api` runs it (compression off or on), and uvicorn's
# own WebSocket protocol, which offers no frame sink (the app then sends text messages).
SERVERS: dict[str, dict[str, Any]] = {
    "shared frames": {"compression": False},
    "shared frames, compressed": {"compression": True},
    "uvicorn's protocol": {"ws": "websockets-sansio", "ws_per_message_deflate": True},
}


async def _open(api: LiveApi, viewer: str, query: str = "") -> ClientConnection:
    # Offer permessage-deflate as browsers do; the server decides.
    return await connect(
        api.url(f"{BASE}/events{query}", "ws"),
        subprotocols=[SUBPROTOCOL, f"bearer.{viewer}"],  # type: ignore[list-item]
        compression="deflate",
        max_queue=None,
        open_timeout=20,
    )


async def _ids_until(ws: ClientConnection, last: int) -> list[int]:
    ids: list[int] = []
    while not ids or ids[-1] < last:
        ids.append(json.loads(await asyncio.wait_for(ws.recv(), 30))["id"])
    return ids


def _payload_sizes(sessions: sessionmaker[Session]) -> list[int]:
    """Commit events one per transaction and in batches, small to 70 kB (every frame length
    form: 7-bit, 16-bit and 64-bit); their ids."""
    ids: list[int] = []
    for size in (0, 100, 300, 70_000):
        filler = os.urandom(size // 2).hex()
        ids += commit_events(sessions, drafts(1, "single", filler=filler))
        ids += commit_events(sessions, drafts(5, "batch", filler=filler))
    ids += commit_events(sessions, drafts(200, "burst"))
    return ids


@pytest.mark.parametrize("server", SERVERS)
def test_many_clients_get_every_event_in_order(
    server: str,
    clean_store: Engine,
    settings: Settings,
    sessions: sessionmaker[Session],
    token: Callable[..., str],
) -> None:
    viewer = token(Role.viewer)
    config = SERVERS[server]
    compressed = config.get("compression", config.get("ws_per_message_deflate", False))
    with LiveApi(create_app(settings, prepare=False), **config) as api:

        async def run() -> tuple[list[list[int]], list[int], list[bool]]:
            clients = [await _open(api, viewer) for _ in range(CLIENTS)]
            try:
                await asyncio.to_thread(
                    wait_until, lambda: api.hub.live_clients == CLIENTS, 20, "every client"
                )
                written = await asyncio.to_thread(_payload_sizes, sessions)
                got = await asyncio.gather(*(_ids_until(ws, written[-1]) for ws in clients))
                deflate = [
                    any(isinstance(e, PerMessageDeflate) for e in ws.protocol.extensions)
                    for ws in clients
                ]
                return list(got), written, deflate
            finally:
                await asyncio.gather(*(ws.close() for ws in clients))

        got, written, deflate = asyncio.run(run())
        assert all(ids == written for ids in got)  # every client, every event, in order
        assert deflate == [compressed] * CLIENTS
        wait_until(lambda: api.hub.delivered == CLIENTS * len(written), what="delivery count")
        framed = {frozenset(item.encodings()) for item in api.hub._log}
        if server == "uvicorn's protocol":
            assert framed == {frozenset()}  # the app sent text; uvicorn framed per client
        else:
            # Each event was framed once, in the one encoding every client shares.
            assert framed == {frozenset({WINDOW_BITS if compressed else None})}


@pytest.mark.parametrize("compression", [False, True])
def test_resuming_with_since_mixes_replay_and_live_without_gaps(
    compression: bool,
    clean_store: Engine,
    settings: Settings,
    sessions: sessionmaker[Session],
    token: Callable[..., str],
) -> None:
    viewer = token(Role.viewer)
    with LiveApi(create_app(settings, prepare=False), compression=compression) as api:

        async def run() -> tuple[list[int], list[int]]:
            start = await asyncio.to_thread(head, sessions)
            first = await asyncio.to_thread(commit_events, sessions, drafts(30, "early"))
            received: list[int] = []
            ws = await _open(api, viewer, f"?since={start}")
            received += (await _ids_until(ws, first[9]))[:10]
            await ws.close()
            later = await asyncio.to_thread(commit_events, sessions, drafts(30, "while away"))
            ws = await _open(api, viewer, f"?since={received[-1]}")
            await asyncio.to_thread(wait_until, lambda: api.hub.live_clients == 1, 20, "live")
            live = await asyncio.to_thread(commit_events, sessions, drafts(30, "live"))
            received += await _ids_until(ws, live[-1])
            await ws.close()
            return received, first + later + live

        received, written = asyncio.run(run())
    assert received == written


def _starved_socket(port: int) -> socket.socket:
    """A connected client socket with a tiny receive buffer, which the test stops reading."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.connect(("127.0.0.1", port))
    return sock


@pytest.mark.parametrize("compression", [False, True])
def test_a_slow_client_is_cut_off_while_many_others_get_everything(
    compression: bool,
    clean_store: Engine,
    settings: Settings,
    sessions: sessionmaker[Session],
    token: Callable[..., str],
) -> None:
    viewer = token(Role.viewer)
    fast_clients = 10
    with LiveApi(create_app(settings, prepare=False), compression=compression) as api:
        api.hub.backlog = 40  # pages of 20: a client more than 40 events behind is dropped
        start = head(sessions)
        filler = os.urandom(600).hex()  # 1.2 kB that does not compress away

        async def run() -> tuple[list[list[int]], list[int], list[int], int, str]:
            sock = _starved_socket(api.port)
            slow = await connect(
                api.url(f"{BASE}/events?since={start}", "ws"),
                sock=sock,
                subprotocols=[SUBPROTOCOL, f"bearer.{viewer}"],  # type: ignore[list-item]
                max_queue=1,
                open_timeout=20,
                ping_interval=None,  # its pongs would wait behind the events it does not read
            )
            fast = [await _open(api, viewer, f"?since={start}") for _ in range(fast_clients)]
            await asyncio.to_thread(
                wait_until, lambda: api.hub.clients == fast_clients + 1, 20, "every client"
            )
            written: list[int] = []
            for _ in range(12):
                written += await asyncio.to_thread(
                    commit_events, sessions, drafts(500, "bulk", filler=filler)
                )
            # The fast clients get everything while the slow one is not reading at all.
            got = await asyncio.gather(*(_ids_until(ws, written[-1]) for ws in fast))
            await asyncio.gather(*(ws.close() for ws in fast))
            slow_ids: list[int] = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    slow_ids.append(json.loads(await asyncio.wait_for(slow.recv(), 30))["id"])
            close = closed.value.rcvd
            assert close is not None
            return list(got), written, slow_ids, close.code, close.reason

        got, written, slow_ids, code, reason = asyncio.run(run())
        assert all(ids == written for ids in got)
        assert code == 4008
        assert reason == f"client too slow; reconnect with since={slow_ids[-1]}"
        assert slow_ids == written[: len(slow_ids)] and len(slow_ids) < len(written)

        async def resume() -> list[int]:
            ws = await _open(api, viewer, f"?since={slow_ids[-1]}")
            try:
                return await _ids_until(ws, written[-1])
            finally:
                await ws.close()

        assert slow_ids + asyncio.run(resume()) == written


def test_a_frame_is_what_a_websocket_client_decodes() -> None:
    """The hub's frames, plain and deflated, parsed by the websockets library's client."""
    from websockets.frames import Frame
    from websockets.streams import StreamReader

    for size in (0, 125, 126, 65_535, 65_536, 200_000):
        text = json.dumps({"id": 1, "filler": "x" * size})
        for compressed in (False, True):
            payload = deflate_message(text.encode(), WINDOW_BITS) if compressed else text.encode()
            reader = StreamReader()
            reader.feed_data(text_frame(payload, compressed=compressed))
            extensions = [PerMessageDeflate(True, True, WINDOW_BITS, WINDOW_BITS)]
            parser = Frame.parse(
                reader.read_exact, mask=False, extensions=extensions if compressed else None
            )
            try:
                next(parser)
            except StopIteration as done:
                frame: Frame = done.value
            assert frame.fin and bytes(frame.data).decode() == text, (size, compressed)


def test_the_frame_sink_is_offered_only_when_frames_can_be_shared() -> None:
    """Compression with a server context would make each client's bytes differ: no sink."""
    from api.event_frames import _shared_encoding

    assert _shared_encoding([]) == (True, None)
    stateless = PerMessageDeflate(False, True, 15, WINDOW_BITS, {"memLevel": 5})
    assert _shared_encoding([stateless]) == (True, WINDOW_BITS)
    with_context = PerMessageDeflate(False, False, 15, WINDOW_BITS, {"memLevel": 5})
    assert _shared_encoding([with_context]) == (False, None)
