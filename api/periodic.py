"""A blocking step the API runs in the background every few seconds, and once more when it
stops, so that a graceful shutdown leaves nothing behind (audit receipts, refusal counts)."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("switchyard.api")


class Periodic:
    """Runs `tick` in a thread every `every` seconds on the running loop; a failing tick is
    logged and tried again at the next one (the store may be briefly down)."""

    every: float = 1.0
    # What the tick does, for the log lines ("sealing audit receipts").
    doing: str = "a periodic step"

    _task: asyncio.Task[None] | None = None

    def tick(self) -> object:
        """One step (blocking); what it returns is not used."""
        raise NotImplementedError

    def start(self) -> None:
        """Start ticking on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.doing)

    async def stop(self) -> None:
        """Stop ticking, then tick once more."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._tick_logged(" at shutdown")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            await self._tick_logged("")

    async def _tick_logged(self, when: str) -> None:
        try:
            await asyncio.to_thread(self.tick)
        except Exception as exc:
            log.warning("%s failed%s: %s", self.doing, when, type(exc).__name__)
