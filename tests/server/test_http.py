"""Streamable HTTP over real loopback: tokens, Host checks, safe binding, /healthz, callbacks."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from standardwebhooks.webhooks import Webhook

from kling_omni_mcp._asgi import serve_asgi
from kling_omni_mcp.config import Settings
from kling_omni_mcp.server.http import UnsafeBindError, build_http_app, check_bind_is_safe
from tests.conftest import SimHandle, command, free_port, sim_with

pytestmark = pytest.mark.anyio

TOKEN = "tok-3b9d7e21c4a8f0aa"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@asynccontextmanager
async def http_server(settings: Settings, port: int = 0) -> AsyncIterator[str]:
    async with serve_asgi(build_http_app(settings), port=port) as url:
        yield url


def client_for(url: str, token: str | None, mode: str = "auto") -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60))
    return Client(streamable_http_client(f"{url}/mcp", http_client=http), mode=mode)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_tokens_guard_mcp(
    mode: str, simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(simulator.base_url, mcp_auth_tokens=[TOKEN, "another-token-xyz"])
    async with http_server(settings) as url:
        async with httpx2.AsyncClient(timeout=10) as raw:
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
            missing = await raw.post(f"{url}/mcp", json=body)
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"].startswith("Bearer")
            wrong = await raw.post(f"{url}/mcp", json=body, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
            assert TOKEN not in wrong.text

        async with client_for(url, TOKEN, mode) as client:
            tools = await client.list_tools()
            assert {t.name for t in tools.tools} >= {"create_image", "wait_for_task"}
            created = await client.call_tool("create_image", {"prompt": "Over HTTP", "wait_seconds": 20})
            assert not created.is_error
            assert created.structured_content is not None
            assert created.structured_content["status"] == "succeeded"


async def test_stateless_mode_serves_tools(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(simulator.base_url, mcp_auth_tokens=[TOKEN])
    async with serve_asgi(build_http_app(settings, stateless=True)) as url:
        for _ in range(2):  # each connection is independent: no session to keep
            async with client_for(url, TOKEN, "legacy") as client:
                created = await client.call_tool("create_image", {"prompt": "Stateless", "wait_seconds": 20})
                assert not created.is_error
                assert created.structured_content["status"] == "succeeded"  # type: ignore[index]


async def test_foreign_host_header_refused(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(simulator.base_url, mcp_allowed_hosts=["mcp.example.com"])
    async with http_server(settings) as url, httpx2.AsyncClient(timeout=10) as raw:
        body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        evil = await raw.post(f"{url}/mcp", json=body, headers={**headers, "Host": "evil.example"})
        assert evil.status_code in (403, 421)
        allowed = await raw.post(f"{url}/mcp", json=body, headers={**headers, "Host": "mcp.example.com"})
        assert allowed.status_code not in (403, 421)
        origin = await raw.post(f"{url}/mcp", json=body, headers={**headers, "Origin": "http://evil.example"})
        assert origin.status_code in (403, 421)


def test_non_loopback_bind_without_tokens_refused(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    with pytest.raises(UnsafeBindError, match="KLING_MCP_AUTH_TOKENS"):
        check_bind_is_safe(settings, "0.0.0.0", allow_unauthenticated=False)
    check_bind_is_safe(settings, "127.0.0.1", allow_unauthenticated=False)
    check_bind_is_safe(settings, "::1", allow_unauthenticated=False)
    check_bind_is_safe(settings, "0.0.0.0", allow_unauthenticated=True)
    check_bind_is_safe(make_settings(mcp_auth_tokens=[TOKEN]), "0.0.0.0", allow_unauthenticated=False)


def test_cli_refuses_unsafe_bind(tmp_path: Any) -> None:
    proc = subprocess.run(
        [*command(), "--simulate", "--transport", "http", "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 2
    assert "KLING_MCP_AUTH_TOKENS" in proc.stderr and "--allow-unauthenticated" in proc.stderr


async def test_healthz_needs_no_auth_and_shows_no_secret(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(simulator.base_url, mcp_auth_tokens=[TOKEN], webhook_secret=WEBHOOK_SECRET)
    async with http_server(settings) as url, httpx2.AsyncClient(timeout=10) as raw:
        response = await raw.get(f"{url}/healthz")
        assert response.status_code == 200
        assert response.json()["status"] == "ok"
        for secret in (TOKEN, WEBHOOK_SECRET, settings.api_key.get_secret_value()):  # type: ignore[union-attr]
            assert secret not in response.text


def signed(
    body: bytes, *, secret: str = WEBHOOK_SECRET, at: float | None = None, msg_id: str = "msg_1"
) -> dict[str, str]:
    from datetime import UTC, datetime

    timestamp = datetime.fromtimestamp(at if at is not None else time.time(), tz=UTC)
    signature = Webhook(secret).sign(msg_id, timestamp, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


@sim_with(duration=1.0, webhook_secret=WEBHOOK_SECRET)
async def test_callback_ends_wait_long_before_next_poll(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    port = free_port()
    settings = make_settings(
        simulator.base_url,
        poll_initial_seconds=30,
        poll_max_seconds=30,
        public_url=f"http://127.0.0.1:{port}",
        webhook_secret=WEBHOOK_SECRET,
    )
    async with http_server(settings, port=port) as url, client_for(url, None) as client:
        created = await client.call_tool("create_image", {"prompt": "Call me back"})
        assert not created.is_error
        task_id = created.structured_content["task_id"]  # type: ignore[index]
        record = simulator.sim.tasks[task_id]
        assert record.body["callback_url"] == f"{url}/callbacks/kling"
        started = time.monotonic()
        waited = await client.call_tool("wait_for_task", {"task_id": task_id, "timeout_seconds": 60})
        elapsed = time.monotonic() - started
        assert not waited.is_error
        assert waited.structured_content["status"] == "succeeded"  # type: ignore[index]
        # Polling every 30 s could only have finished at 30 s: the callback did it.
        assert elapsed < 20, elapsed
        delivered = [c for c in simulator.sim.counters.callbacks if c.task_id == task_id]
        assert delivered and all(c.http_status == 200 for c in delivered)


@sim_with(duration=30.0)
async def test_bad_callbacks_rejected_and_change_nothing(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    port = free_port()
    settings = make_settings(
        simulator.base_url,
        poll_initial_seconds=30,
        poll_max_seconds=30,
        webhook_secret=WEBHOOK_SECRET,
        public_url=f"http://127.0.0.1:{port}",
    )
    async with http_server(settings, port=port) as url, client_for(url, None) as client:
        created = await client.call_tool("create_image", {"prompt": "Waiting quietly"})
        task_id = created.structured_content["task_id"]  # type: ignore[index]
        body = json.dumps({"task_id": task_id, "task_status": "succeed"}).encode()
        other = json.dumps({"task_id": task_id, "task_status": "failed"}).encode()
        cases: list[tuple[str, bytes, dict[str, str]]] = [
            ("unsigned", body, {"content-type": "application/json"}),
            ("forged", body, signed(body, secret="whsec_" + base64.b64encode(b"x" * 32).decode())),
            ("stale", body, signed(body, at=time.time() - 600)),
            ("replayed with other body", other, signed(body)),
        ]
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "wait_for_task", {"task_id": task_id, "timeout_seconds": 4})
            await anyio.sleep(0.5)  # the watcher made its first poll and now sleeps 30 s
            queries = simulator.sim.counters.queries_by_id[task_id]
            async with httpx2.AsyncClient(timeout=10) as raw:
                for name, payload, headers in cases:
                    response = await raw.post(f"{url}/callbacks/kling", content=payload, headers=headers)
                    assert response.status_code == 401, name
                await anyio.sleep(0.5)
                assert simulator.sim.counters.queries_by_id[task_id] == queries  # nothing woke the watcher
                big = b"{" + b" " * (300 * 1024) + b"}"
                assert (
                    await raw.post(f"{url}/callbacks/kling", content=big, headers=signed(big))
                ).status_code == 413
                good = await raw.post(
                    f"{url}/callbacks/kling", content=body, headers=signed(body, msg_id="msg_2")
                )
                assert good.status_code == 200
                await anyio.sleep(0.5)
                assert simulator.sim.counters.queries_by_id[task_id] == queries + 1  # re-queried at once
                unknown = json.dumps({"task_id": "nobody-watches", "task_status": "succeed"}).encode()
                ignored = await raw.post(f"{url}/callbacks/kling", content=unknown, headers=signed(unknown))
                # Same status, same bytes: the route says nothing about which tasks are watched.
                assert (ignored.status_code, ignored.content) == (good.status_code, good.content)
