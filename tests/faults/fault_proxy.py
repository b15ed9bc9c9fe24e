"""A TCP proxy that stands between Switchyard's processes and PostgreSQL and can cut them off.

The shared PostgreSQL server is never stopped. Instead the API and the worker reach the
database through this proxy, and an outage is made here: `cut()` resets every open
connection (RST, as when the server process dies) and stops listening, so new connections are
refused (ECONNREFUSED, as when the server is down); `restore()` listens again on the same
port. To a client this is indistinguishable from the server stopping and starting.
`freeze()` resets open connections too, but then accepts new ones and never answers them: a
host that takes TCP connections while its database does not respond (a failover in progress).

The proxy runs its own event loop in a thread so the test's load generator cannot starve it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
CHUNK = 65536
# SO_LINGER on with a zero timeout: close() sends RST instead of FIN, like a crashed peer.
_RESET = struct.pack("ii", 1, 0)


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    writer.transport.abort()


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `upstream_host:upstream_port` until cut."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="db-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._frozen = False
        self._held: set[asyncio.StreamWriter] = set()  # accepted while frozen, never answered

    def start(self) -> int:
        """Start listening on a free port; returns it."""
        self._thread.start()
        self._call(self._listen())
        return self.port

    def cut(self) -> None:
        """Reset every connection and refuse new ones until `restore()`."""
        self._call(self._cut())

    def freeze(self) -> None:
        """Reset every connection; accept new ones but never answer them until `restore()`."""
        self._call(self._freeze())

    def restore(self) -> None:
        """Serve connections again on the same port (held ones are reset)."""
        self._call(self._restore())

    def close(self) -> None:
        """Cut everything and stop the proxy's thread."""
        if not self._thread.is_alive():
            return
        self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _restore(self) -> None:
        self._frozen = False
        for writer in list(self._held):
            _reset(writer)
        self._held.clear()
        await self._listen()

    async def _freeze(self) -> None:
        await self._cut()
        self._frozen = True
        await self._listen()

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for client, upstream in list(self._pairs):
            _reset(client)
            _reset(upstream)
        self._pairs.clear()
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted just as the cut began
            _reset(writer)
            return
        if self._frozen:
            self._held.add(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(writer)
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._pairs.discard(pair)
            for side in pair:
                side.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes one way until either side closes."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()
