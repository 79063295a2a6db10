"""Slow and vanished HTTP clients, over real loopback sockets against the real HTTP server.

A client that drips its headers or its body is cut off; a wait whose client is gone (cancelled,
session deleted, or the connection simply dropped) stops polling the vendor within one interval.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest

from kling_omni_mcp._asgi import serve_asgi
from kling_omni_mcp.config import Settings
from kling_omni_mcp.server.http import build_http_app
from kling_omni_mcp.server.limits import HttpLimits, uvicorn_options
from tests.conftest import SimHandle, sim_with
from tests.reliability.helpers import record_result

pytestmark = pytest.mark.anyio

LIMITS = HttpLimits(header_seconds=1.0, body_seconds=1.0)
VERSION = "2025-06-18"
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
POLL = 0.5


@asynccontextmanager
async def real_server(settings: Settings, *, stateless: bool = False) -> AsyncIterator[str]:
    app = build_http_app(settings, limits=LIMITS, stateless=stateless)
    async with serve_asgi(app, **uvicorn_options(LIMITS)) as url:
        yield url


def host_port(url: str) -> tuple[str, int]:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    return host, int(port)


async def drip(sock: socket.socket, data: bytes, every: float, budget: float) -> tuple[bool, float]:
    """Send ``data`` a byte at a time; (True, seconds) once the server closed the connection."""
    started = time.monotonic()
    sock.setblocking(False)
    for byte in data:
        if time.monotonic() - started > budget:
            break
        try:
            sock.send(bytes([byte]))
            chunk = sock.recv(4096)
            if chunk == b"":
                return True, time.monotonic() - started
            return True, time.monotonic() - started  # the server answered (and will close)
        except BlockingIOError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            return True, time.monotonic() - started
        await anyio.sleep(every)
    return False, time.monotonic() - started


@pytest.mark.parametrize("part", ["headers", "body"])
async def test_dripping_client_is_cut(
    part: str, simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(simulator.base_url, public_url="http://127.0.0.1")
    async with real_server(settings) as url:
        host, port = host_port(url)
        body = json.dumps({"task_id": "1", "task_status": "succeed"}).encode()
        head = (
            f"POST /callbacks/kling HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Padding: {'a' * 200}\r\n\r\n"
        ).encode()
        with socket.create_connection((host, port), timeout=5) as sock:
            if part == "headers":
                cut, seconds = await drip(sock, head + body, every=0.05, budget=8)
            else:
                sock.sendall(head)
                cut, seconds = await drip(sock, body, every=0.2, budget=8)
                sock.setblocking(True)
        assert cut, f"the server still listened after {seconds:.1f} s of dripped {part}"
        assert seconds < LIMITS.header_seconds + 2
    record_result(f"drip_{part}", {"limit_seconds": 1.0, "cut_after_seconds": round(seconds, 2)})


async def initialize(raw: httpx2.AsyncClient, url: str) -> dict[str, str]:
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": VERSION,
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    opened = await raw.post(f"{url}/mcp", json=init, headers=MCP_HEADERS)
    headers = {
        **MCP_HEADERS,
        "mcp-session-id": opened.headers["mcp-session-id"],
        "mcp-protocol-version": VERSION,
    }
    await raw.post(
        f"{url}/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers
    )
    return headers


def first_result(sse: str) -> Any:
    data = next(line[6:] for line in sse.splitlines() if line.startswith("data: ") and '"result"' in line)
    return json.loads(data)["result"]


async def start_wait(url: str, headers: dict[str, str], task_id: str) -> socket.socket:
    """POST wait_for_task on a raw socket and leave it open (its answer is minutes away)."""
    host, port = host_port(url)
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "wait_for_task", "arguments": {"task_id": task_id, "timeout_seconds": 120}},
        }
    ).encode()
    lines = ["POST /mcp HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    sock = socket.create_connection((host, port), timeout=5)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return sock


@sim_with(duration=120.0)
@pytest.mark.parametrize(
    "how",
    ["dropped connection", "notifications/cancelled", "session deleted", "stateless dropped connection"],
)
async def test_wait_stops_polling_when_its_client_is_gone(
    how: str, simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(simulator.base_url, poll_initial_seconds=POLL, poll_max_seconds=POLL)
    stateless = how.startswith("stateless")
    async with real_server(settings, stateless=stateless) as url, httpx2.AsyncClient(timeout=10) as raw:
        plain = {**MCP_HEADERS, "mcp-protocol-version": VERSION}
        headers = plain if stateless else await initialize(raw, url)
        created = await raw.post(
            f"{url}/mcp",
            json={
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "create_image", "arguments": {"prompt": "Left behind"}},
            },
            headers=headers,
        )
        task_id = first_result(created.text)["structuredContent"]["task_id"]
        sock = await start_wait(url, headers, task_id)
        await anyio.sleep(3 * POLL)
        queries = simulator.sim.counters.queries_by_id
        assert queries[task_id] >= 2  # the wait is polling
        if how.endswith("dropped connection"):
            sock.close()  # a killed client: nothing is sent
        elif how == "notifications/cancelled":
            cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}
            await raw.post(f"{url}/mcp", json=cancel, headers=headers)
        else:
            await raw.delete(f"{url}/mcp", headers=headers)
        gone = time.monotonic()
        await anyio.sleep(POLL + 0.3)  # the poll already in flight may land
        settled = queries[task_id]
        await anyio.sleep(6 * POLL)
        sock.close()
        assert queries[task_id] == settled, f"{queries[task_id] - settled} polls after the client left"
        record_result(
            f"wait_client_gone_{how.replace(' ', '_').replace('/', '_')}",
            {
                "poll_seconds": POLL,
                "polls_after_settling": queries[task_id] - settled,
                "checked_seconds": round(time.monotonic() - gone, 1),
            },
        )
