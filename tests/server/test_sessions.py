"""MCP sessions over real loopback HTTP: bound to the token that opened them, capped per token,
closed when idle."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import httpx2
import pytest

from kling_omni_mcp.config import Settings
from tests.conftest import SimHandle
from tests.server.test_http import http_server

pytestmark = pytest.mark.anyio

TOKEN_A = "token-alice-6b1f0c9d2e"
TOKEN_B = "token-bob-0a7e3d5c41"
VERSION = "2025-06-18"
BASE_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


def headers(token: str, session: str | None = None) -> dict[str, str]:
    out = {**BASE_HEADERS, "Authorization": f"Bearer {token}", "mcp-protocol-version": VERSION}
    if session:
        out["mcp-session-id"] = session
    return out


async def open_session(raw: httpx2.AsyncClient, url: str, token: str) -> httpx2.Response:
    return await raw.post(f"{url}/mcp", json=INIT, headers=headers(token))


async def ping(raw: httpx2.AsyncClient, url: str, token: str, session: str) -> int:
    response = await raw.post(
        f"{url}/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "ping"}, headers=headers(token, session)
    )
    return response.status_code


async def test_session_is_bound_to_the_token_that_opened_it(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(simulator.base_url, mcp_auth_tokens=[TOKEN_A, TOKEN_B])
    async with http_server(settings) as url, httpx2.AsyncClient(timeout=10) as raw:
        opened = await open_session(raw, url, TOKEN_A)
        assert opened.status_code == 200
        session = opened.headers["mcp-session-id"]
        assert await ping(raw, url, TOKEN_A, session) == 200
        assert await ping(raw, url, TOKEN_B, session) == 404
        deleted = await raw.delete(f"{url}/mcp", headers=headers(TOKEN_B, session))
        assert deleted.status_code == 404
        assert await ping(raw, url, TOKEN_A, session) == 200  # still alive for its owner
        assert (await raw.delete(f"{url}/mcp", headers=headers(TOKEN_A, session))).status_code == 200
        assert await ping(raw, url, TOKEN_A, session) == 404


async def test_sessions_per_token_are_capped(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(simulator.base_url, mcp_auth_tokens=[TOKEN_A, TOKEN_B], mcp_max_sessions=2)
    async with http_server(settings) as url, httpx2.AsyncClient(timeout=10) as raw:
        first = (await open_session(raw, url, TOKEN_A)).headers["mcp-session-id"]
        assert (await open_session(raw, url, TOKEN_A)).status_code == 200
        refused = await open_session(raw, url, TOKEN_A)
        assert refused.status_code == 429
        assert "KLING_MCP_MAX_SESSIONS" in refused.json()["error"]["message"]
        assert (await open_session(raw, url, TOKEN_B)).status_code == 200  # another token is not held up
        await raw.delete(f"{url}/mcp", headers=headers(TOKEN_A, first))
        assert (await open_session(raw, url, TOKEN_A)).status_code == 200  # room again


async def test_idle_sessions_expire_and_free_their_slot(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        simulator.base_url, mcp_auth_tokens=[TOKEN_A], mcp_session_idle_seconds=1, mcp_max_sessions=1
    )
    async with http_server(settings) as url, httpx2.AsyncClient(timeout=10) as raw:
        session = (await open_session(raw, url, TOKEN_A)).headers["mcp-session-id"]
        assert (await open_session(raw, url, TOKEN_A)).status_code == 429
        await anyio.sleep(2.5)
        assert await ping(raw, url, TOKEN_A, session) == 404
        assert (await open_session(raw, url, TOKEN_A)).status_code == 200
