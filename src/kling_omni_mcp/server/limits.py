"""Time and size limits for the HTTP transport, so a slow or greedy client cannot hold the server.

uvicorn has no deadline for a request's headers (a client may drip them a byte a minute), so
``HeaderDeadlineH11`` closes a connection whose request line and headers are not complete
within ``header_seconds``. ``BodyDeadline`` reads a request's body within ``body_seconds`` (and
at most ``max_body_bytes``) before the app sees it, answering 408 or 413 otherwise.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

import anyio
import h11
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["BodyDeadline", "HttpLimits", "uvicorn_options"]


@dataclass(frozen=True)
class HttpLimits:
    """The HTTP transport's limits; the defaults suit a server on the open internet."""

    #: Request line and headers must arrive within this many seconds.
    header_seconds: float = 10.0
    #: A request body must arrive within this many seconds.
    body_seconds: float = 30.0
    #: Largest body on any route (the SDK's own /mcp limit).
    max_body_bytes: int = DEFAULT_MAX_REQUEST_BODY_SIZE
    #: Idle keep-alive connections are closed after this many seconds.
    keep_alive_seconds: int = 5
    #: Largest request line + headers h11 buffers.
    max_header_bytes: int = 16 * 1024
    #: Connections + requests at once; past it uvicorn answers 503.
    max_concurrency: int = 1000


class HeaderDeadlineH11(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose headers do not arrive in time."""

    header_seconds = HttpLimits.header_seconds

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_seconds, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)


def uvicorn_options(limits: HttpLimits) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` / ``uvicorn.run`` applying ``limits``."""
    protocol = type("HeaderDeadlineH11", (HeaderDeadlineH11,), {"header_seconds": limits.header_seconds})
    return {
        "http": protocol,
        "timeout_keep_alive": limits.keep_alive_seconds,
        "h11_max_incomplete_event_size": limits.max_header_bytes,
        "limit_concurrency": limits.max_concurrency,
    }


class BodyDeadline:
    """ASGI middleware: the whole body within ``seconds`` and ``max_bytes``, or 408 / 413."""

    def __init__(self, app: ASGIApp, *, seconds: float, max_bytes: int) -> None:
        self._app = app
        self._seconds = seconds
        self._max = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        messages: deque[Message] = deque()
        size = 0
        with anyio.move_on_after(self._seconds) as scope_timer:
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request":
                    break
                size += len(message.get("body", b""))
                if size > self._max:
                    too_big = {"error": f"request body over {self._max} bytes"}
                    await JSONResponse(too_big, status_code=413)(scope, receive, send)
                    return
                if not message.get("more_body", False):
                    break
        if scope_timer.cancelled_caught:
            response = JSONResponse(
                {"error": f"the request body did not arrive within {self._seconds:g} s"},
                status_code=408,
                headers={"connection": "close"},
            )
            await response(scope, receive, send)
            return

        async def replay() -> Message:
            if messages:
                return messages.popleft()
            return await receive()

        await self._app(scope, replay, send)
