"""Serve MCP over streamable HTTP, safely, plus ``/healthz`` and the vendor callback route.

Layout of the Starlette app::

    GET  /healthz          no auth, no secrets: {"status": "ok", "version": ..., "simulated": ...}
    POST /callbacks/kling  vendor callbacks (server/callback_route.py); only with KLING_PUBLIC_URL
    GET  /files/{task_id}/{index}  a saved image, for a signed link (server/links.py); no bearer token
    GET  /.well-known/oauth-protected-resource/mcp  with OAuth on (server/signin.py); no token
    *    /mcp              MCP streamable HTTP; static tokens and/or OAuth (server/signin.py);
                           sessions bound to the caller and capped per caller (server/sessions.py)

Host/Origin are checked against loopback, the host of KLING_PUBLIC_URL and KLING_MCP_ALLOWED_HOSTS
(DNS rebinding) on /mcp and the callback route. Every request's body must arrive within a
deadline, and its headers too (server/limits.py).

The parent app's lifespan runs the MCP session manager, which opens the service once per process.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from kling_omni_mcp import __version__
from kling_omni_mcp.config import Settings
from kling_omni_mcp.runtime import simulator_webhook_secret
from kling_omni_mcp.server.app import ServiceSlot, build_server
from kling_omni_mcp.server.callback_route import CALLBACK_BODY_LIMIT, callback_endpoint
from kling_omni_mcp.server.disconnect import CancelOnDisconnect
from kling_omni_mcp.server.limits import BodyDeadline, HttpLimits, uvicorn_options
from kling_omni_mcp.server.links import build_link_signer, link_routes, saved_image_finder
from kling_omni_mcp.server.sessions import SessionQuota
from kling_omni_mcp.server.signin import build_sign_in

__all__ = [
    "CALLBACK_BODY_LIMIT",
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
    signed_in = settings.mcp_auth_tokens or settings.mcp_oauth_issuer
    if is_loopback(host) or signed_in or allow_unauthenticated:
        return
    raise UnsafeBindError(
        f"Refusing to listen on {host} without access tokens: anyone who can reach this address could "
        "spend your Kling credits. Set KLING_MCP_AUTH_TOKENS (comma-separated bearer tokens), or listen "
        "on 127.0.0.1 behind a reverse proxy that authenticates, or pass --allow-unauthenticated if "
        "the network itself is trusted."
    )


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """DNS-rebinding protection: loopback names, plus each KLING_MCP_ALLOWED_HOSTS entry."""
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
    signer = build_link_signer(settings)
    server = build_server(settings, slot=slot, remote=True, links=signer)
    security = transport_security(settings)
    mcp_app: ASGIApp = server.streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=stateless,
        transport_security=security,
        host=host,
        session_idle_timeout=settings.mcp_session_idle_seconds,
    )
    if not stateless:
        # Inside sign-in, so both see the caller (scope["user"]).
        quota = SessionQuota(mcp_app, limit=settings.mcp_max_sessions, manager=server.session_manager)
        mcp_app = CancelOnDisconnect(quota)
    sign_in = build_sign_in(mcp_app, settings)
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
                # "local", "redis", or "local (redis unreachable)": replicas share state only via Redis.
                "store": slot.current.shared.status() if slot.current and slot.current.shared else "local",
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
            *sign_in.public_routes,
            *(link_routes(signer, saved_image_finder(slot)) if signer is not None else []),
            Mount("/", app=sign_in.app),
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
    if settings.mcp_oauth_issuer:
        auth = f"OAuth sign-in with {settings.mcp_oauth_issuer}"
        auth += " or bearer tokens" if settings.mcp_auth_tokens else ""
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
