"""Cancel a request whose HTTP client went away before its answer was sent.

The SDK's streamable HTTP transport notices a dropped connection (its SSE response ends on
``http.disconnect``) but leaves the request running: a ``wait_for_task`` whose client was killed
would go on polling the vendor until its budget ran out. A killed client sends nothing, so this
middleware sends for it: when a POST carrying JSON-RPC requests ends without its response
having been completed, it hands the same session a ``notifications/cancelled`` for each of
them, through the SDK's own cancellation path. Cancelled requests end their waits, and a
watcher with no waiter left stops polling within one interval.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CancelOnDisconnect"]

logger = logging.getLogger(__name__)

#: Requests in one POST body looked at; JSON-RPC batches are rare and small.
_MAX_IDS = 32
#: Longest time spent telling the session about a vanished client.
_CANCEL_SECONDS = 5.0


def _request_ids(body: bytes) -> list[Any]:
    """The ids of the JSON-RPC requests (not notifications) in a POST body."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return []
    items = payload if isinstance(payload, list) else [payload]
    return [
        item["id"]
        for item in items[:_MAX_IDS]
        if isinstance(item, dict) and "method" in item and isinstance(item.get("id"), str | int)
    ]


class CancelOnDisconnect:
    """ASGI middleware around the MCP app (inside authentication, so the scope has the user)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = MCP_SESSION_ID_HEADER.encode()
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not any(k == session for k, _ in scope["headers"])
        ):
            await self._app(scope, receive, send)
            return
        chunks: list[bytes] = []
        completed = False

        async def reading() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
            return message

        async def sending(message: Message) -> None:
            nonlocal completed
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                completed = True
            await send(message)

        await self._app(scope, reading, sending)
        if not completed:
            # Shielded and bounded: this runs as the request ends, and must neither be cut short
            # by the connection's own teardown nor hold it up.
            with anyio.CancelScope(shield=True), anyio.move_on_after(_CANCEL_SECONDS):
                for request_id in _request_ids(b"".join(chunks)):
                    await self._cancel(scope, request_id)

    async def _cancel(self, scope: Scope, request_id: Any) -> None:
        """Tell the session the client cancelled ``request_id`` (as the client would have)."""
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": request_id, "reason": "The client disconnected."},
            }
        ).encode()
        keep = {b"host", b"authorization", b"mcp-session-id", b"mcp-protocol-version", b"origin"}
        headers = [(k, v) for k, v in scope["headers"] if k in keep]
        headers += [
            (b"content-type", b"application/json"),
            (b"accept", b"application/json, text/event-stream"),
            (b"content-length", str(len(body)).encode()),
        ]
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        async def discard(_message: Message) -> None:
            return None

        logger.info("The client of request %r went away: cancelling it", request_id)
        try:
            await self._app({**scope, "headers": headers}, receive, discard)
        except Exception:
            logger.warning(
                "Could not cancel request %r after its client went away", request_id, exc_info=True
            )
