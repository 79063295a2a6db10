"""Serve MCP over streamable HTTP, safely, plus ``/healthz`` and the vendor callback route.

Layout of the Starlette app::

    GET  /healthz          no auth, no secrets: {"status": "ok", "version": ..., "simulated": ...}
    POST /callbacks/kling  vendor callbacks; Standard Webhooks signature when KLING_WEBHOOK_SECRET is set
    GET  /files/{task_id}/{index}  a saved image, for a signed link (server/links.py); no bearer token
    GET  /.well-known/oauth-protected-resource/mcp  with OAuth on (server/signin.py); no token
    *    /mcp              MCP streamable HTTP; static tokens and/or OAuth (server/signin.py);
                           Host/Origin checked against loopback + KLING_MCP_ALLOWED_HOSTS (DNS rebinding)

The parent app's lifespan runs the MCP session manager, which opens the service once per process.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.transport_security import TransportSecuritySettings
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from kling_omni_mcp import __version__
from kling_omni_mcp.config import Settings
from kling_omni_mcp.kling.models import TaskData
from kling_omni_mcp.server.app import ServiceSlot, build_server
from kling_omni_mcp.server.links import build_link_signer, link_routes, saved_image_finder
from kling_omni_mcp.server.signin import build_sign_in

__all__ = [
    "CALLBACK_BODY_LIMIT",
    "BearerGuard",
    "UnsafeBindError",
    "build_http_app",
    "check_bind_is_safe",
    "serve_http",
]

logger = logging.getLogger(__name__)

#: Callback bodies are small JSON documents; anything larger is refused unread.
CALLBACK_BODY_LIMIT = 256 * 1024
#: Standard Webhooks: a signature older or newer than this is refused.
WEBHOOK_TOLERANCE_SECONDS = 5 * 60


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
    for entry in settings.mcp_allowed_hosts:
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

    def _allowed(self, header: str | None) -> bool:
        if not header or header[:7].lower() != "bearer ":
            return False
        given = header[7:].strip().encode()
        ok = False
        for token in self._tokens:
            ok |= hmac.compare_digest(given, token)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._tokens:
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        header = headers.get("authorization")
        if self._allowed(header):
            await self._app(scope, receive, send)
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


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it grows past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _verify_signature(secret: str, body: bytes, headers: dict[str, str]) -> str | None:
    """None when the Standard Webhooks signature is valid and fresh; otherwise why not."""
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError as exc:
        return str(exc) or "invalid signature"
    except Exception:
        return "malformed signature headers"
    return None


def _callback_task(body: bytes) -> TaskData | None:
    try:
        payload: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(payload, dict) and isinstance(payload.get("data"), dict) and "task_id" not in payload:
        payload = payload["data"]  # tolerate an enveloped body
    try:
        return TaskData.model_validate(payload)
    except ValidationError:
        return None


def build_http_app(settings: Settings, *, host: str = "127.0.0.1", stateless: bool = False) -> Starlette:
    """The whole HTTP application (no socket is opened here)."""
    slot = ServiceSlot()
    signer = build_link_signer(settings)
    server = build_server(settings, slot=slot, remote=True, links=signer)
    mcp_app = server.streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=stateless,
        transport_security=transport_security(settings),
        host=host,
    )
    sign_in = build_sign_in(mcp_app, settings)
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None

    async def healthz(_request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "version": __version__,
                "simulated": settings.simulate,
                "ready": slot.current is not None,
            }
        )

    async def callback(request: Request) -> Response:
        body = await _read_limited(request, CALLBACK_BODY_LIMIT)
        if body is None:
            return JSONResponse({"error": f"body over {CALLBACK_BODY_LIMIT} bytes"}, status_code=413)
        if secret is not None:
            problem = _verify_signature(secret, body, {k.lower(): v for k, v in request.headers.items()})
            if problem is not None:
                logger.warning("Refused a callback: %s", problem)
                return JSONResponse({"error": "invalid signature"}, status_code=401)
        task = _callback_task(body)
        if task is None:
            return JSONResponse({"error": "not a task callback body"}, status_code=400)
        service = slot.current
        known = service.on_callback(task) if service is not None else False
        logger.info(
            "Callback for task %s (%s): %s",
            task.task_id,
            task.task_status,
            "woke its watcher" if known else "ignored",
        )
        return JSONResponse({"ok": True, "known": known})

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with server.session_manager.run():
            yield

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/callbacks/kling", callback, methods=["POST"]),
            *sign_in.public_routes,
            *(link_routes(signer, saved_image_finder(slot)) if signer is not None else []),
            Mount("/", app=sign_in.app),
        ],
        lifespan=lifespan,
    )


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
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=5)
    return 0
