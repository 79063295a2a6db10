"""A small round-robin reverse proxy for the replica tests: what a load balancer does, no more.

Each request goes to the next backend in turn (no session affinity; the replicas run
``--stateless``); a backend that refuses the connection is skipped for the next one, as a load
balancer's health checks would. Responses stream through (SSE answers arrive as they are sent).
``served`` records which backend answered each MCP ``tools/call``. Tool calls take turns among
themselves (other requests, such as the client's handshake or stream GETs, have their own turn),
so N tool calls in a row land on N different replicas whatever else the clients send.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import httpx2
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from kling_omni_mcp._asgi import serve_asgi

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}


class RoundRobinProxy:
    """Forwards to ``backends`` in turn; ``served`` lists (backend, JSON-RPC method) per request."""

    def __init__(self, backends: Sequence[str]) -> None:
        self.backends = list(backends)
        self._turns = {True: itertools.count(), False: itertools.count()}
        self.served: list[tuple[str, str | None]] = []
        self._http = httpx2.AsyncClient(timeout=httpx2.Timeout(10, read=120))

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/{path:path}", self._forward, methods=["GET", "POST", "DELETE", "PUT"])]
        )

    async def _forward(self, request: Request) -> Response:
        body = await request.body()
        method = _rpc_method(body)
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        start = next(self._turns[method == "tools/call"])
        for attempt in range(len(self.backends)):
            backend = self.backends[(start + attempt) % len(self.backends)]
            url = f"{backend}{request.url.path}" + (f"?{request.url.query}" if request.url.query else "")
            outgoing = self._http.build_request(request.method, url, headers=headers, content=body)
            try:
                upstream = await self._http.send(outgoing, stream=True)
            except httpx2.ConnectError:
                continue  # that replica is down: the next one answers
            self.served.append((backend, method))
            kept = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            return StreamingResponse(
                upstream.aiter_raw(),
                status_code=upstream.status_code,
                headers=kept,
                background=BackgroundTask(upstream.aclose),
            )
        return JSONResponse({"error": "no replica answered"}, status_code=502)

    async def aclose(self) -> None:
        await self._http.aclose()


def _rpc_method(body: bytes) -> str | None:
    try:
        message = json.loads(body)
    except ValueError:
        return None
    return message.get("method") if isinstance(message, dict) else None


@asynccontextmanager
async def running_proxy(proxy: RoundRobinProxy, port: int = 0) -> AsyncIterator[str]:
    """Serve ``proxy`` on loopback and yield its base URL."""
    try:
        async with serve_asgi(proxy.app(), port=port) as url:
            yield url
    finally:
        await proxy.aclose()
