"""Many event-socket clients in one process, cheap enough not to be the bottleneck.

A load generator that parses every frame with a full WebSocket library spends more CPU than
the server it measures once hundreds of clients share the machine. These clients speak just
enough RFC 6455 for a server-to-client stream: the opening handshake (offering
permessage-deflate as browsers do, when asked), unmasked text frames (inflated when the server
compressed them), answering pings, and close frames. Each message's id is read from its
first field (`{"id":N,...`, as the server writes it); every client checks it got first..last
in order.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import cast

CLOSE_TOO_SLOW = 4008
_ID_PREFIX = b'{"id":'
_SYNC_FLUSH_TAIL = b"\x00\x00\xff\xff"


@dataclass
class ClientReport:
    """What the clients of one process saw."""

    connected: int = 0
    complete: int = 0  # clients that received every event, in order
    too_slow: int = 0  # closed by the server with 4008
    failed: int = 0  # other closes, errors, timeouts, gaps
    received: int = 0  # events received by all clients
    in_order: int = 0  # of those, events that were the next expected one
    compressed: int = 0  # clients whose server agreed to permessage-deflate
    samples: list[tuple[int, float]] = field(default_factory=list)  # (event id, wall time)
    cpu_seconds: float = 0.0


class EventsClient(asyncio.Protocol):
    """One WebSocket client expecting the events first..last, in order."""

    def __init__(
        self, request: bytes, first: int, last: int, sampled: bool, report: ClientReport
    ) -> None:
        self.request = request
        self.expected = first
        self.last = last
        self.sampled = sampled
        self.report = report
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.finished: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.inflater: zlib._Decompress | None = None
        self.handshaken = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the opening handshake."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        """A close without a close frame is a failure (unless the stream was complete)."""
        self._finish("lost")
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))

    def data_received(self, data: bytes) -> None:
        """Parse the handshake answer, then every whole frame in the buffer."""
        self.buffer += data
        if not self.handshaken:
            if self.opened.done():
                return  # refused
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            del self.buffer[: end + 4]
            if not head.startswith("HTTP/1.1 101"):
                self.opened.set_exception(ConnectionError(head.split("\r\n", 1)[0]))
                return
            if "permessage-deflate" in head.lower():
                self.inflater = zlib.decompressobj(wbits=-15)
                self.report.compressed += 1
            self.handshaken = True
            self.opened.set_result(None)
        self._frames()

    def _frames(self) -> None:
        buffer = self.buffer
        now = time.time() if self.sampled else 0.0
        offset = 0
        while len(buffer) - offset >= 2:
            first, second = buffer[offset], buffer[offset + 1]
            size = second & 0x7F
            start = offset + 2
            if size == 126:
                if len(buffer) - offset < 4:
                    break
                size = struct.unpack_from("!H", buffer, start)[0]
                start += 2
            elif size == 127:
                if len(buffer) - offset < 10:
                    break
                size = struct.unpack_from("!Q", buffer, start)[0]
                start += 8
            if len(buffer) < start + size:
                break
            payload = bytes(buffer[start : start + size])
            offset = start + size
            opcode = first & 0x0F
            if opcode == 0x1:
                if first & 0x40 and self.inflater is not None:
                    payload = self.inflater.decompress(payload + _SYNC_FLUSH_TAIL)
                self._message(payload, now)
            elif opcode == 0x9:
                self._send(0xA, payload)  # pong
            elif opcode == 0x8:
                code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005
                self._finish("too_slow" if code == CLOSE_TOO_SLOW else "closed")
        del buffer[:offset]

    def _message(self, payload: bytes, now: float) -> None:
        if self.finished.done():
            return
        if not payload.startswith(_ID_PREFIX):
            self._finish("malformed")
            return
        event_id = int(payload[len(_ID_PREFIX) : payload.index(b",", len(_ID_PREFIX))])
        self.report.received += 1
        if self.sampled:
            self.report.samples.append((event_id, now))
        if event_id != self.expected:
            self._finish("gap")
            return
        self.report.in_order += 1
        if event_id == self.last:
            self._finish("complete")
            return
        self.expected += 1

    def _send(self, opcode: int, payload: bytes) -> None:
        # Clients must mask (RFC 6455 5.3); a zero key leaves the payload as it is.
        if self.transport is not None and not self.transport.is_closing():
            header = bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\x00\x00\x00\x00"
            self.transport.write(header + payload)

    def _finish(self, outcome: str) -> None:
        if not self.finished.done():
            self.finished.set_result(outcome)

    def close(self) -> None:
        """Send a close frame and drop the connection."""
        self._send(0x8, struct.pack("!H", 1000))
        if self.transport is not None:
            self.transport.close()


def handshake(host: str, port: int, path: str, protocols: list[str], compression: bool) -> bytes:
    """The opening handshake of a client offering `protocols` (and deflate if asked)."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        f"Sec-WebSocket-Protocol: {', '.join(protocols)}",
    ]
    if compression:
        lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def open_client(
    host: str,
    port: int,
    path: str,
    protocols: list[str],
    compression: bool,
    expect: tuple[int, int],
    sampled: bool,
    report: ClientReport,
) -> EventsClient:
    """Connect one client and complete its handshake."""
    loop = asyncio.get_running_loop()
    request = handshake(host, port, path, protocols, compression)
    first, last = expect
    _, client = await loop.create_connection(
        lambda: EventsClient(request, first, last, sampled, report), host, port
    )
    await asyncio.wait_for(client.opened, 60)
    return client
