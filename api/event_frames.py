"""WebSocket frames encoded once for every client, and the server protocol that writes them.

A server-to-client frame is not masked (RFC 6455 §5.1), so an event's frame is the same bytes
for every client that has negotiated the same thing: no compression, or permessage-deflate
without server context takeover at the same window size (RFC 7692 §7.1.1.1). The events hub
builds each event's frame once and writes those bytes to every socket, instead of asking the
WebSocket layer to frame (and deflate) the same text once per client.

`FrameWebSocketProtocol` is uvicorn's sans-I/O WebSocket protocol with two changes: when
compression is on it never keeps a server compression context (so compressed frames can be
shared), and it offers the application a `FrameSink` in the ASGI scope's
`extensions["switchyard.frames"]["sink"]`. An application served by another server (or the
test client) finds no sink there and sends text messages as usual.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Mapping
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.http11 import Request
from websockets.server import ServerProtocol

EXTENSION = "switchyard.frames"
OPCODE_TEXT = 0x1
FIN = 0x80
RSV1 = 0x40  # "this message is compressed" (permessage-deflate)
# As uvicorn's own permessage-deflate: small windows keep a connection's memory low.
WINDOW_BITS = 12
COMPRESS_SETTINGS: dict[str, int] = {"memLevel": 5}
_SYNC_FLUSH_TAIL = b"\x00\x00\xff\xff"


def text_frame(payload: bytes, compressed: bool = False) -> bytes:
    """One unmasked, final text frame carrying `payload` (already deflated if `compressed`)."""
    first = FIN | OPCODE_TEXT | (RSV1 if compressed else 0)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, 126, size)
    else:
        header = struct.pack("!BBQ", first, 127, size)
    return header + payload


def deflate_message(payload: bytes, window_bits: int) -> bytes:
    """`payload` deflated as one message without context takeover (RFC 7692 §7.2.1)."""
    encoder = zlib.compressobj(wbits=-window_bits, memLevel=COMPRESS_SETTINGS["memLevel"])
    data = encoder.compress(payload) + encoder.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(_SYNC_FLUSH_TAIL) else data


class FrameSink:
    """Writes pre-built frames straight to one client's socket.

    `encoding` names the frames this client takes: `None` for plain frames, or the
    window bits of its stateless permessage-deflate. Writes go to the transport in the order
    they are made; a sink never queues: `writable()` says whether the socket's buffer has
    room (below the transport's high-water mark) and the connection is still open.
    """

    def __init__(self, protocol: FrameWebSocketProtocol, encoding: int | None) -> None:
        self._protocol = protocol
        self.encoding = encoding

    def writable(self) -> bool:
        """True when a write goes out now: open, not closing, buffer below its high-water mark."""
        protocol = self._protocol
        return (
            protocol.writable.is_set()
            and not protocol.close_sent
            and not protocol.disconnected
            and not protocol.transport.is_closing()
        )

    def open(self) -> bool:
        """True until the connection closes or the application sent its close frame."""
        protocol = self._protocol
        return not (protocol.close_sent or protocol.disconnected or protocol.transport.is_closing())

    def write(self, frames: bytes) -> None:
        """Write frames built by `text_frame` for this sink's `encoding`."""
        self._protocol.transport.write(frames)

    async def wait_writable(self) -> None:
        """Return once the socket's buffer drained below its low-water mark (or it closed)."""
        await self._protocol.writable.wait()

    def close(self, code: int, reason: str) -> None:
        """Send the close frame behind whatever the socket still holds, without waiting."""
        self._protocol.close_behind_buffer(code, reason)


class FrameWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, offering a `FrameSink` to the application."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.config.ws_per_message_deflate:
            # The same negotiation as uvicorn's, but never a server compression context:
            # every message is deflated on its own, so one deflate serves every client.
            self.conn = ServerProtocol(
                extensions=[
                    ServerPerMessageDeflateFactory(
                        server_no_context_takeover=True,
                        server_max_window_bits=WINDOW_BITS,
                        client_max_window_bits=WINDOW_BITS,
                        compress_settings=COMPRESS_SETTINGS,
                    )
                ],
                max_size=self.config.ws_max_size,
                logger=logging.getLogger("uvicorn.error"),
            )

    def close_behind_buffer(self, code: int, reason: str) -> None:
        """Start the closing handshake now, as uvicorn does for `websocket.close`, but without
        first waiting for the socket to drain: a client too slow to read its events still gets
        the close frame (and its reason) after them, once it reads that far."""
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        # As uvicorn does: the client's answering close, or this timer, closes the transport,
        # which still writes out what it holds first.
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)

    def handle_connect(self, event: Request) -> None:
        """Accept as uvicorn does, then offer the application a sink matching the handshake."""
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is None or self.response.status_code != 101:
            return
        shared, encoding = _shared_encoding(self.conn.extensions)
        if shared:
            scope["extensions"][EXTENSION] = {"sink": FrameSink(self, encoding)}


def _shared_encoding(extensions: list[Any]) -> tuple[bool, int | None]:
    """Whether frames can be shared under these negotiated extensions, and their encoding."""
    if not extensions:
        return True, None
    if len(extensions) == 1 and isinstance(extensions[0], PerMessageDeflate):
        deflate = extensions[0]
        if deflate.local_no_context_takeover and deflate.compress_settings == COMPRESS_SETTINGS:
            return True, int(deflate.local_max_window_bits)
    return False, None


def frame_sink(scope: Mapping[str, Any]) -> FrameSink | None:
    """The sink the server offered this WebSocket, if any."""
    offered = scope.get("extensions", {}).get(EXTENSION)
    sink = offered.get("sink") if isinstance(offered, dict) else None
    return sink if isinstance(sink, FrameSink) else None


def websocket_server_options(compression: bool) -> dict[str, Any]:
    """uvicorn options serving the events socket with shared frames, compressed or not."""
    return {"ws": FrameWebSocketProtocol, "ws_per_message_deflate": compression}
