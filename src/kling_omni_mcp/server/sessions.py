"""Who is calling, and how many MCP sessions they hold.

Identity is carried the way the SDK expects it: ``scope["user"]`` is an ``AuthenticatedUser``
whose ``AccessToken`` names the principal. The SDK's session manager already binds each session
to the principal that opened it (another principal gets 404 for that ``mcp-session-id``, DELETE
included) and closes idle sessions; this module adds what it lacks, a per-identity session cap.

The sign-in layer (server/signin.py: static tokens and OAuth through the SDK's bearer
middleware) puts an ``AuthenticatedUser`` in ``scope["user"]`` before these middlewares run;
``scope_identity`` names it as server/identity.py does (``token:<fingerprint>``, ``oauth:<sub>``).
"""

from __future__ import annotations

import logging
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kling_omni_mcp.server.identity import identity_of

__all__ = ["SessionQuota", "scope_identity"]

logger = logging.getLogger(__name__)

#: The identity of requests that carry no credential (a server without tokens).
ANONYMOUS = "anonymous"


def scope_identity(scope: Scope) -> str:
    """One string per principal: the key sessions are counted (and, by the SDK, bound) by."""
    user = scope.get("user")
    if isinstance(user, AuthenticatedUser):
        return identity_of(user.access_token)
    return ANONYMOUS


class SessionQuota:
    """ASGI middleware: one identity may hold at most ``limit`` open MCP sessions.

    A request without ``mcp-session-id`` opens a session; when the identity already holds
    ``limit`` live ones it is refused with 429 and a JSON-RPC error saying what to do. Sessions
    are learnt from the ``mcp-session-id`` of successful opening answers and forgotten once the
    SDK's session manager no longer has them (closed by DELETE, idle timeout or shutdown).
    """

    def __init__(self, app: ASGIApp, *, limit: int, manager: Any) -> None:
        self._app = app
        self._limit = limit
        self._manager = manager
        self._sessions: dict[str, set[str]] = {}
        self._opening: dict[str, int] = {}

    def _live(self, identity: str) -> int:
        # The SDK keeps no public list of open sessions; its private table is the only truth
        # about which ones idle expiry or DELETE ended (checked by tests/server/test_sessions.py).
        alive = getattr(self._manager, "_server_instances", None)
        held = self._sessions.get(identity, set())
        if alive is not None:
            held.intersection_update(alive.keys())
        if not held:
            self._sessions.pop(identity, None)
        return len(held) + self._opening.get(identity, 0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(k == MCP_SESSION_ID_HEADER.encode() for k, _ in scope["headers"]):
            await self._app(scope, receive, send)
            return
        identity = scope_identity(scope)
        if self._live(identity) >= self._limit:
            logger.warning("Refused a new MCP session: the identity already holds %d", self._limit)
            response = JSONResponse(
                {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {
                        "code": -32600,
                        "message": (
                            f"Too many open sessions for this credential (limit {self._limit}, "
                            "KLING_MCP_MAX_SESSIONS). Close unused ones (HTTP DELETE /mcp with their "
                            "mcp-session-id) or wait for idle ones to expire."
                        ),
                    },
                },
                status_code=429,
            )
            await response(scope, receive, send)
            return

        opening = True

        def opened() -> None:
            # Counted as "opening" until its answer starts (then as a session, if it made one):
            # the app may still be winding down after the client has its answer.
            nonlocal opening
            if opening:
                opening = False
                self._opening[identity] -= 1
                if not self._opening[identity]:
                    del self._opening[identity]

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] < 400:
                    for key, value in message.get("headers", []):
                        if key.lower() == MCP_SESSION_ID_HEADER.encode():
                            self._sessions.setdefault(identity, set()).add(value.decode("latin-1"))
                opened()
            await send(message)

        self._opening[identity] = self._opening.get(identity, 0) + 1
        try:
            await self._app(scope, receive, record)
        finally:
            opened()
