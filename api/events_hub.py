"""Live events for WebSocket clients: one reader per API process fans the outbox out.

The hub follows the outbox by id, and ids are commit-ordered (store/events.py): woken by a
PostgreSQL NOTIFY on `switchyard_events` (with a slow safety poll), or polling on SQLite, it
reads the events after the last one it dispatched and decodes each once, for every client.
With no client connected it reads nothing and only keeps its position (the NOTIFY carries the
newest id), so a busy API without dashboards pays no read per committed batch.
Every API replica runs its own hub on the shared store, so an event committed anywhere
(worker or API) reaches the clients of every replica.

Dispatched events go into one shared in-memory backlog of the newest `backlog` events; each
client walks it at its own pace from its own position. Each event is framed once
(api/event_frames.py): a client that is level with the hub and whose socket has room gets the
new events written straight to its socket by the hub, the same bytes as every other client,
with no task of its own woken; only a client that fell behind walks the backlog itself.

A client that resumes (`since`) is first replayed from the store up to the hub's position,
then starts walking the backlog at exactly that position: no gap, no duplicate. A client that
falls more than `backlog` events behind is closed with 4008 and told where to resume, instead
of holding anyone up: the hub never waits for a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from starlette.websockets import WebSocket, WebSocketDisconnect

from api.event_frames import FrameSink, deflate_message, frame_sink, text_frame
from api.runtime import ApiRuntime
from store.crypto import SEALED_EVENT_FIELDS, DecryptionError, FieldCipher
from store.db import make_engine, make_session_factory
from store.events import EVENTS_CHANNEL, event_rows_since, latest_event_id

log = logging.getLogger("switchyard.events")

# Close codes sent after the handshake (RFC 6455 leaves 4000-4999 to applications).
CLOSE_TOO_SLOW = 4008
CLOSE_TOKEN_EXPIRED = 4401
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL = 1011

BACKLOG = 2000  # events a client may lag behind the hub before it counts as too slow
READ_PAGE = 500  # events per store read, live and replay (at most half the backlog)
SAFETY_POLL_SECONDS = 2.0  # PostgreSQL: read even without a NOTIFY (a lost listener)
HUB_POOL_SIZE = 4  # the follower, replays and live starts share it
CLOSE_WAIT_SECONDS = 5.0  # a client too slow to take its close frame is left to the server
WRITE_CHUNK_BYTES = 65_536  # a client catching up writes its frames in pieces of about this


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a client wants: some types (all when empty), one service (all when None)."""

    types: frozenset[str] = frozenset()
    service: str | None = None

    def matches(self, item: OutboundEvent) -> bool:
        """True when the event passes both parts of the filter."""
        return (not self.types or item.event_type in self.types) and (
            self.service is None or item.service == self.service
        )


@dataclass(frozen=True, slots=True)
class OutboundEvent:
    """An event as clients get it: `body` is `{"id", "eventType", "timestamp", ...}`."""

    id: int
    event_type: str
    service: str | None
    body: dict[str, Any]
    text: str  # body as JSON, encoded once for every client
    _frames: dict[int | None, bytes] = field(default_factory=dict, compare=False, repr=False)

    def frame(self, encoding: int | None) -> bytes:
        """The event's WebSocket frame for a sink's encoding, built once and kept."""
        built = self._frames.get(encoding)
        if built is None:
            payload = self.text.encode()
            if encoding is None:
                built = text_frame(payload)
            else:
                built = text_frame(deflate_message(payload, encoding), compressed=True)
            self._frames[encoding] = built
        return built

    def encodings(self) -> frozenset[int | None]:
        """The encodings this event has been framed in so far (once each, for every client)."""
        return frozenset(self._frames)


class StoredEvent(Protocol):
    """An events row: an ORM Event or a plain row of the events table."""

    id: int
    event_type: str
    service: str | None
    coordination_id: str | None
    payload: dict[str, Any]


def outbound(row: StoredEvent, cipher: FieldCipher) -> OutboundEvent:
    """The client's view of a stored event: sensitive fields decrypted, the id first."""
    payload: dict[str, Any] = dict(row.payload)
    if row.event_type in SEALED_EVENT_FIELDS:
        try:
            payload = cipher.open_event(row.event_type, row.coordination_id or "", payload)
        except DecryptionError:
            # A key that was retired without re-encryption: send the event without the text.
            log.warning("event %d: sealed fields did not decrypt", row.id)
            payload.update(dict.fromkeys(SEALED_EVENT_FIELDS[row.event_type]))
    body = {"id": row.id, **{k: v for k, v in payload.items() if k != "id"}}
    return OutboundEvent(
        row.id, row.event_type, row.service, body, json.dumps(body, separators=(",", ":"))
    )


@dataclass(eq=False)
class Subscription:
    """One connected client: its filter, its place in the backlog, why it must close."""

    filter: EventFilter
    closing: asyncio.Future[tuple[int, str]]
    sink: FrameSink | None = None  # the socket's raw frame writer, when the server offers one
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    position: int = 0  # the hub's sequence number of the next backlog event to look at
    after: int = 0  # events up to this id were replayed (or predate the client)
    last_sent: int = 0
    # Level with the hub and parked: the hub may write to the socket itself. Only the hub
    # clears it (when it wakes the client), so the two never write to one socket at once.
    idle: bool = False


@dataclass
class EventHub:
    """Follows the outbox and feeds every WebSocket client of this process."""

    engine: Engine
    sessions: sessionmaker[Session]
    cipher: FieldCipher
    poll_seconds: float = 0.5  # SQLite's poll; PostgreSQL is woken by NOTIFY
    backlog: int = BACKLOG
    clients: int = 0  # open WebSocket connections
    delivered: int = 0  # events sent to clients since start
    head: int = 0  # the newest event dispatched
    dispatched: int = 0  # events dispatched since start: the sequence number of the next one
    _log: deque[OutboundEvent] = field(default_factory=deque)
    _subscriptions: set[Subscription] = field(default_factory=set)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def live_clients(self) -> int:
        """Clients past their replay, walking the backlog."""
        return len(self._subscriptions)

    @property
    def _postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    async def start(self) -> None:
        """Start at the newest committed event and follow the outbox from there."""
        self.head = await asyncio.to_thread(self._latest)
        self._tasks.append(asyncio.create_task(self._follow(), name="events-follow"))
        if self._postgresql:
            self._tasks.append(asyncio.create_task(self._listen(), name="events-listen"))

    async def stop(self) -> None:
        """Stop following and close every client with 1001 (going away)."""
        for subscription in list(self._subscriptions):
            self._close(subscription, CLOSE_GOING_AWAY, "server shutting down")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.engine.dispose()

    def wake(self) -> None:
        """Read the outbox now (a NOTIFY arrived, or a test wants no wait)."""
        self._wake.set()

    def read(
        self,
        after: int,
        limit: int,
        event_filter: EventFilter | None = None,
        until: int | None = None,
    ) -> list[OutboundEvent]:
        """Decoded events after `after` (up to `until`), oldest first; blocking."""
        chosen = event_filter or EventFilter()
        with self.sessions() as session:
            rows = event_rows_since(
                session,
                after,
                limit,
                types=chosen.types or None,
                service=chosen.service,
                until=until,
            )
            return [outbound(row, self.cipher) for row in rows]

    async def stream(
        self,
        websocket: WebSocket,
        event_filter: EventFilter,
        since: int | None,
        expires_at: float | None,
    ) -> None:
        """Serve one accepted client: replay after `since`, then live, until someone closes.

        `expires_at` (epoch seconds) is when the client's token expires: it is closed with
        4401 then, and may reconnect with a fresh token and `since`.
        """
        subscription = Subscription(
            event_filter,
            asyncio.get_running_loop().create_future(),
            sink=frame_sink(websocket.scope),
        )
        self.clients += 1
        try:
            await self._serve(websocket, subscription, since, expires_at)
        finally:
            self._subscriptions.discard(subscription)
            self.clients -= 1

    async def _serve(
        self,
        websocket: WebSocket,
        subscription: Subscription,
        since: int | None,
        expires_at: float | None,
    ) -> None:
        gone = asyncio.create_task(_until_disconnect(websocket))
        sender = asyncio.create_task(self._send(websocket, subscription, since))
        waiters: set[asyncio.Future[Any]] = {gone, sender, subscription.closing}
        timeout = None if expires_at is None else max(0.0, expires_at - time.time())
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        close: tuple[int, str] | None = (CLOSE_TOKEN_EXPIRED, "token expired")
        if gone in done:
            close = None
        elif subscription.closing in done:
            close = subscription.closing.result()
        elif sender in done:
            close = _sender_outcome(sender)
        for task in (gone, sender):
            task.cancel()
        await asyncio.gather(gone, sender, return_exceptions=True)
        if close is None:
            return
        # The reason may take 123 bytes; the resume point fits.
        if subscription.sink is not None:
            subscription.sink.close(*close)  # queued behind the events the socket still holds
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(websocket.close(*close), CLOSE_WAIT_SECONDS)

    async def _send(
        self, websocket: WebSocket, subscription: Subscription, since: int | None
    ) -> None:
        # Without `since`, live from the newest committed event (the hub may lag it a poll).
        last = await asyncio.to_thread(self._latest) if since is None else since
        # Replay from the store until level with the hub. The check and the subscription
        # below run with no await between them, so the backlog walk starts exactly at `last`.
        while last < self.head:
            head = self.head
            page = await asyncio.to_thread(
                self.read, last, self._page_size, subscription.filter, head
            )
            await self._deliver(websocket, subscription, page)
            last = page[-1].id if len(page) == self._page_size else head
        subscription.after = last
        subscription.position = self.dispatched
        self._subscriptions.add(subscription)
        while True:
            if subscription.position == self.dispatched:
                subscription.idle = True
                await subscription.wake.wait()
                subscription.wake.clear()
            # Woken: the hub found the socket full, or this client is behind. Walk the
            # backlog, writing a chunk at a time as the socket takes it.
            batch: list[OutboundEvent] = []
            size = 0
            while subscription.position < self.dispatched and size < WRITE_CHUNK_BYTES:
                oldest = self.dispatched - len(self._log)
                if subscription.position < oldest:
                    await asyncio.Future()  # left behind: the hub is closing this client
                item = self._log[subscription.position - oldest]
                subscription.position += 1
                if item.id > subscription.after and subscription.filter.matches(item):
                    batch.append(item)
                    size += len(item.text)
            await self._deliver(websocket, subscription, batch)

    async def _deliver(
        self, websocket: WebSocket, subscription: Subscription, items: list[OutboundEvent]
    ) -> None:
        sink = subscription.sink
        if sink is None:
            for item in items:
                await websocket.send_text(item.text)
                subscription.last_sent = item.id
                self.delivered += 1
            return
        if not items:
            return
        await sink.wait_writable()
        if not sink.open():
            raise WebSocketDisconnect(1006)
        sink.write(b"".join(item.frame(sink.encoding) for item in items))
        subscription.last_sent = items[-1].id
        self.delivered += len(items)

    @property
    def _page_size(self) -> int:
        return max(1, min(READ_PAGE, self.backlog // 2))

    def _dispatch(self, page: list[OutboundEvent]) -> None:
        """Append a page to the backlog and send it: written at once to every client level
        with the hub whose socket has room, the others woken; drop clients it left behind."""
        if not page:
            return
        start = self.dispatched
        for item in page:
            self._log.append(item)
            self.dispatched += 1
            self.head = item.id
        while len(self._log) > self.backlog:
            self._log.popleft()
        oldest = self.dispatched - len(self._log)
        # The page's frames per (filter, encoding), joined once for all clients sharing them.
        shared: dict[tuple[EventFilter, int | None], tuple[bytes, int, int]] = {}
        for subscription in list(self._subscriptions):
            sink = subscription.sink
            if (
                subscription.idle
                and subscription.position == start
                and sink is not None
                and sink.writable()
                and subscription.after < page[0].id
            ):
                key = (subscription.filter, sink.encoding)
                frames = shared.get(key)
                if frames is None:
                    chosen = [item for item in page if subscription.filter.matches(item)]
                    joined = b"".join(item.frame(sink.encoding) for item in chosen)
                    frames = shared[key] = (joined, len(chosen), chosen[-1].id if chosen else 0)
                data, count, last_id = frames
                subscription.position = self.dispatched
                if count:
                    sink.write(data)
                    subscription.last_sent = last_id
                    self.delivered += count
            elif subscription.position < oldest:
                self._close(
                    subscription,
                    CLOSE_TOO_SLOW,
                    f"client too slow; reconnect with since={subscription.last_sent}",
                )
            else:
                subscription.idle = False
                subscription.wake.set()

    def _close(self, subscription: Subscription, code: int, reason: str) -> None:
        self._subscriptions.discard(subscription)
        if not subscription.closing.done():
            subscription.closing.set_result((code, reason))

    def _latest(self) -> int:
        with self.sessions() as session:
            return latest_event_id(session)

    async def _follow(self) -> None:
        interval = SAFETY_POLL_SECONDS if self._postgresql else self.poll_seconds
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            try:
                await self._catch_up()
            except Exception as exc:  # the store may be briefly down; keep the position
                log.warning("reading events failed: %s", exc.__class__.__name__)
                await asyncio.sleep(1.0)

    async def _catch_up(self) -> None:
        if self.clients == 0:
            # No client: follow the position only (a client that connects replays from the
            # store up to it, then walks the backlog from there).
            latest = await asyncio.to_thread(self._latest)
            if self.clients == 0:  # still none: one that came meanwhile replays to `head`
                self.head = max(self.head, latest)
                return
        while True:
            size = self._page_size
            page = await asyncio.to_thread(self.read, self.head, size)
            self._dispatch(page)
            if len(page) < size:
                return

    async def _listen(self) -> None:
        conninfo = self.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                    self.wake()  # events may have been committed while nobody listened
                    async for notice in conn.notifies():
                        newest = int(notice.payload) if notice.payload.isdigit() else None
                        if newest is not None and self.clients == 0:
                            # Nobody to feed: keep the position, read nothing.
                            self.head = max(self.head, newest)
                        elif newest is None or newest > self.head:
                            self.wake()
            except Exception as exc:
                log.warning("events listener reconnecting: %s", exc.__class__.__name__)
                await asyncio.sleep(1.0)


def build_events_hub(runtime: ApiRuntime) -> EventHub:
    """The hub of an API process; SQLite polls as often as the snapshot does.

    The hub reads through an engine (and pool) of its own, so streaming to many clients never
    takes a connection a request is waiting for.
    """
    settings = runtime.settings
    if make_url(settings.database_url).get_backend_name() == "postgresql":
        # No pre-ping: it would cost a round trip per read. A dropped connection fails one
        # read, the pool replaces it, and the next wake reads again.
        engine = create_engine(
            settings.database_url, pool_size=HUB_POOL_SIZE, max_overflow=HUB_POOL_SIZE
        )
    else:
        engine = make_engine(settings.database_url)
    return EventHub(
        engine=engine,
        sessions=make_session_factory(engine),
        cipher=FieldCipher.from_keys(settings.encryption_keys),
        poll_seconds=settings.snapshot_poll_seconds,
    )


async def _until_disconnect(websocket: WebSocket) -> None:
    """Return when the client goes away; what it sends is ignored."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


def _sender_outcome(sender: asyncio.Task[None]) -> tuple[int, str] | None:
    """How to close after the sender stopped on its own: nothing if the client is gone."""
    error = sender.exception()
    if error is None or isinstance(error, WebSocketDisconnect):
        return None
    log.warning("event stream failed: %s", error.__class__.__name__)
    return CLOSE_INTERNAL, "event stream failed; reconnect with since"
