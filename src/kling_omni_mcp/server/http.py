"""Serve MCP over streamable HTTP, safely, plus ``/healthz`` and the vendor callback route.

Layout of the Starlette app::

    GET  /healthz          no auth, no secrets: {"status": "ok", "version": ..., "simulated": ...}
    POST /callbacks/kling  vendor callbacks (server/callback_route.py); only with KLING_PUBLIC_URL
    *    /mcp              MCP streamable HTTP; Bearer token when KLING_MCP_AUTH_TOKENS is set;
                           sessions bound to that identity and capped per identity (server/sessions.py)

Host/Origin are checked against loopback, the host of KLING_PUBLIC_URL and KLING_MCP_ALLOWED_HOSTS
(DNS rebinding) on /mcp and the callback route. Every request's body must arrive within a
deadline, and its headers too (server/limits.py). The parent app's lifespan runs the MCP session
manager, which opens the service once per process.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from kling_omni_mcp import __version__
from kling_omni_mcp.config import Settings
from kling_omni_mcp.runtime import simulator_webhook_secret
from kling_omni_mcp.server.app import ServiceSlot, build_server
from kling_omni_mcp.server.callback_route import CALLBACK_BODY_LIMIT, callback_endpoint
from kling_omni_mcp.server.disconnect import CancelOnDisconnect
from kling_omni_mcp.server.limits import BodyDeadline, HttpLimits, uvicorn_options
from kling_omni_mcp.server.sessions import SessionQuota, static_token_user

__all__ = [
    "CALLBACK_BODY_LIMIT",
    "BearerGuard",
    "UnsafeBindError",
    "build_http_app",
    "check_bind_is_safe",
    "serve_http",
]

logger = logging.getLogger(__name__)


class UnsafeBindError(ValueError):
    """Listening on a network address without tokens was refused; the message says what to do."""


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind_is_safe(settings: Settings, host: str, *, allow_unauthenticated: bool) -> None:
    """Refuse a non-loopback bind without access tokens, unless explicitly allowed."""
    if is_loopback(host) or settings.mcp_auth_tokens or allow_unauthenticated:
        return
    raise UnsafeBindError(
        f"Refusing to listen on {host} without access tokens: anyone who can reach this address could "
        "spend your Kling credits. Set KLING_MCP_AUTH_TOKENS (comma-separated bearer tokens), or listen "
        "on 127.0.0.1 behind a reverse proxy that authenticates, or pass --allow-unauthenticated if "
        "the network itself is trusted."
    )


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """DNS-rebinding protection: loopback, KLING_PUBLIC_URL's host, each KLING_MCP_ALLOWED_HOSTS entry."""
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"]
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    public = [urlsplit(settings.public_url).netloc] if settings.public_url else []
    for entry in [*public, *settings.mcp_allowed_hosts]:
        name = entry.split("://", 1)[-1].rstrip("/")
        hosts += [name] if ":" in name.rsplit("]", 1)[-1] else [name, f"{name}:*"]
        origins += [f"https://{name}", f"http://{name}"]
        if ":" not in name.rsplit("]", 1)[-1]:
            origins += [f"https://{name}:*", f"http://{name}:*"]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


class BearerGuard:
    """ASGI middleware: every request needs ``Authorization: Bearer <one of the tokens>``.

    Tokens are compared in constant time (``hmac.compare_digest``) against every configured
    token, so the time taken says nothing about how much of a guess was right.
    """

    def __init__(self, app: ASGIApp, tokens: Sequence[str]) -> None:
        self._app = app
        self._tokens = [t.encode() for t in tokens if t]
        self._users = {t: static_token_user(t.decode()) for t in self._tokens}

    def _match(self, header: str | None) -> bytes | None:
        """The configured token the header carries, or None."""
        if not header or header[:7].lower() != "bearer ":
            return None
        given = header[7:].strip().encode()
        found = None
        for token in self._tokens:  # no early exit: every token is compared
            if hmac.compare_digest(given, token):
                found = token
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._tokens or isinstance(scope.get("user"), AuthenticatedUser):
            # No tokens configured, or an outer layer (OAuth) already authenticated the caller.
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        header = headers.get("authorization")
        token = self._match(header)
        if token is not None:
            # The identity sessions are bound to (an OAuth layer sets its own user instead).
            await self._app({**scope, "user": self._users[token]}, receive, send)
            return
        challenge = 'Bearer realm="kling-omni-mcp"'
        if header:
            challenge += ', error="invalid_token", error_description="The bearer token is not accepted."'
        response = JSONResponse(
            {
                "error": "unauthorized",
                "error_description": "Send Authorization: Bearer <token> (KLING_MCP_AUTH_TOKENS).",
            },
            status_code=401,
            headers={"WWW-Authenticate": challenge},
        )
        await response(scope, receive, send)


def callback_secret(settings: Settings) -> str | None:
    """The secret callback signatures must match: in simulate mode the embedded simulator's own."""
    if settings.simulate:
        return simulator_webhook_secret()
    return settings.webhook_secret.get_secret_value() if settings.webhook_secret else None


def build_http_app(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    stateless: bool = False,
    limits: HttpLimits | None = None,
) -> Starlette:
    """The whole HTTP application (no socket is opened here)."""
    limits = limits or HttpLimits()
    slot = ServiceSlot()
    server = build_server(settings, slot=slot)
    security = transport_security(settings)
    mcp_app: ASGIApp = server.streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=stateless,
        transport_security=security,
        host=host,
        session_idle_timeout=settings.mcp_session_idle_seconds,
    )
    if not stateless:
        quota = SessionQuota(mcp_app, limit=settings.mcp_max_sessions, manager=server.session_manager)
        mcp_app = CancelOnDisconnect(quota)
    tokens = [t.get_secret_value() for t in settings.mcp_auth_tokens]
    callback = callback_endpoint(
        enabled=settings.public_url is not None,
        secret=callback_secret(settings),
        security=security,
        slot=slot,
    )

    async def healthz(_request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "version": __version__,
                "simulated": settings.simulate,
                "ready": slot.current is not None,
            }
        )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with server.session_manager.run():
            yield

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/callbacks/kling", callback, methods=["POST"]),
            Mount("/", app=BearerGuard(mcp_app, tokens)),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(BodyDeadline, seconds=limits.body_seconds, max_bytes=limits.max_body_bytes)
    return app


def serve_http(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    stateless: bool = False,
    allow_unauthenticated: bool = False,
) -> int:
    """Serve until interrupted. Returns a process exit code (2 when the bind is refused)."""
    import uvicorn

    try:
        check_bind_is_safe(settings, host, allow_unauthenticated=allow_unauthenticated)
    except UnsafeBindError as exc:
        logger.error("%s", exc)
        return 2
    app = build_http_app(settings, host=host, stateless=stateless)
    auth = "bearer tokens required" if settings.mcp_auth_tokens else "NO authentication"
    logger.info("kling-omni-mcp %s serving MCP on http://%s:%d/mcp (%s)", __version__, host, port, auth)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        **uvicorn_options(HttpLimits()),
    )
    return 0
