"""Bounds for uvicorn's HTTP connections: a request's headers must arrive within a deadline, and connections are
capped. uvicorn has neither (its keep-alive timeout only starts after a response), so a few hundred half-sent
requests could hold every file descriptor of the gateway's process. No well-kept ASGI server option does this
for uvicorn; it is a small subclass of its httptools protocol."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["guarded_protocol"]

log = logging.getLogger("edgeflow.web")


def guarded_protocol(base: type[Any], *, header_timeout: float, max_connections: int) -> type[Any]:
    """Return a subclass of uvicorn's httptools protocol `base` with a header deadline and a connection cap."""

    class GuardedHttpToolsProtocol(base):  # type: ignore[misc, valid-type]
        refused = 0
        timed_out = 0

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._header_deadline: asyncio.TimerHandle | None = None
            if len(self.connections) > max_connections:
                type(self).refused += 1
                if type(self).refused == 1 or type(self).refused % 1000 == 0:
                    log.warning("web: more than %d HTTP connections; refusing new ones (%d so far)", max_connections,
                                type(self).refused)  # fmt: skip
                transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._header_deadline = self.loop.call_later(header_timeout, self._too_slow)

        def _disarm(self) -> None:
            handle = getattr(self, "_header_deadline", None)
            if handle is not None:
                handle.cancel()
                self._header_deadline = None

        def _too_slow(self) -> None:
            self._header_deadline = None
            type(self).timed_out += 1
            if not self.transport.is_closing():
                self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()  # each request on a kept-alive connection gets the deadline afresh

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedHttpToolsProtocol
