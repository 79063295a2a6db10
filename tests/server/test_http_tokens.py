"""Every configured ``KLING_MCP_AUTH_TOKENS`` entry opens the HTTP transport; nothing else does.

Over real loopback HTTP: a real MCP client for the accepted tokens, raw requests for the refused.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from kling_omni_mcp._asgi import serve_asgi
from kling_omni_mcp.config import Settings
from kling_omni_mcp.server.http import build_http_app

pytestmark = pytest.mark.anyio

TOKENS = ["tok-first-7c1e94d2b8a0", "tok-second-3f6a0b9e51cd", "tok-third-a48d27e6f013"]
LIST_TOOLS = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}

REFUSED = [
    ("unknown token", "Bearer tok-unknown-000000000000"),
    ("a configured token with a character more", f"Bearer {TOKENS[1]}x"),
    ("a configured token cut short", f"Bearer {TOKENS[1][:-1]}"),
    ("the tokens glued together", f"Bearer {TOKENS[0]}{TOKENS[1]}"),
    ("no Bearer scheme", TOKENS[1]),
    ("Basic scheme", f"Basic {TOKENS[1]}"),
]


async def test_every_configured_token_is_accepted_and_no_other(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(mcp_auth_tokens=TOKENS)
    async with serve_asgi(build_http_app(settings)) as url:
        for token in TOKENS:  # the second and third, not only the first
            http = httpx2.AsyncClient(
                headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=60)
            )
            async with Client(
                streamable_http_client(f"{url}/mcp", http_client=http), mode="legacy"
            ) as client:
                tools = await client.list_tools()
            assert "create_image" in {tool.name for tool in tools.tools}, token
        async with httpx2.AsyncClient(timeout=10) as raw:
            for label, header in REFUSED:
                refused = await raw.post(f"{url}/mcp", json=LIST_TOOLS, headers={"Authorization": header})
                assert refused.status_code == 401, label
                assert 'error="invalid_token"' in refused.headers["www-authenticate"], label
                assert not any(token in refused.text for token in TOKENS), label
