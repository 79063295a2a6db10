"""Connection-level faults: an answer that never arrives, a body that stops half way.

The client must see a transport error, not an HTTP response, so these cannot be ordinary
responses. A handler marks the request (``drop_answer`` / ``abort_after_response``); the
outermost layer of the app (``ConnectionControl``) swallows the answer and then aborts the TCP
connection through the server's transport. Servers other than uvicorn (or an in-process ASGI
transport) expose no transport: the fallback sends headers and ends the response unfinished,
which servers and clients also treat as a broken answer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.types import Message, Receive, Scope, Send

__all__ = ["ConnectionControl", "abort_after_response", "drop_answer"]

logger = logging.getLogger(__name__)

_SCOPE_KEY = "kling_sim.connection"
#: Event-loop turns to wait for the server to notice the aborted socket (one is usually enough).
_ABORT_SPINS = 20


def drop_answer(scope: Scope) -> None:
    """Send nothing for this request and close the connection (a "lost answer")."""
    control = scope.get(_SCOPE_KEY)
    if isinstance(control, ConnectionControl):
        control.drop = True
        control.abort = True


def abort_after_response(scope: Scope) -> None:
    """Close the connection once the handler returns, even though the body is unfinished."""
    control = scope.get(_SCOPE_KEY)
    if isinstance(control, ConnectionControl):
        control.abort = True


class ConnectionControl:
    """Per-request switches set by handlers and carried out by ``run``."""

    def __init__(self) -> None:
        self.drop = False
        self.abort = False
        self.started = False

    async def run(self, app: Any, scope: Scope, receive: Receive, send: Send) -> None:
        """Call ``app`` with a guarded ``send``, then carry out a requested drop or abort."""
        scope[_SCOPE_KEY] = self

        async def guarded_send(message: Message) -> None:
            if self.drop:
                return
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        await app(scope, receive, guarded_send)
        if self.abort:
            await _abort(send, headers_sent=self.started)


async def _abort(send: Send, *, headers_sent: bool) -> None:
    # uvicorn's `send` is a bound method of its per-request cycle, which holds the transport.
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if isinstance(transport, asyncio.Transport):
        transport.abort()
        for _ in range(_ABORT_SPINS):
            # Let uvicorn see the closed socket, so it does not answer a 500 in our place.
            if getattr(cycle, "disconnected", True):
                break
            await asyncio.sleep(0)
        return
    logger.debug("no transport to abort; ending the response unfinished instead")
    if not headers_sent:
        start = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1024")]}
        await send(start)
