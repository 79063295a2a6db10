"""An authorization server that cannot be reached: tokens are refused quickly with 401, the
server keeps answering, and static tokens keep working."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx2
import jwt
import pytest

from kling_omni_mcp._asgi import serve_asgi
from kling_omni_mcp.config import Settings
from kling_omni_mcp.server.http import build_http_app
from tests.conftest import SimHandle, free_port
from tests.oauth.conftest import new_key
from tests.oauth.test_resource_server import MCP_BODY, MCP_HEADERS

pytestmark = pytest.mark.anyio


async def test_unreachable_issuer_refuses_tokens_without_failing(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    port, dead = free_port(), free_port()
    issuer = f"http://127.0.0.1:{dead}"  # nothing listens there
    settings = make_settings(
        simulator.base_url,
        public_url=f"http://127.0.0.1:{port}",
        mcp_oauth_issuer=issuer,
        mcp_auth_tokens="static-tok-issuer-down-1",
    )
    jwk, key = new_key()
    claims = {"iss": issuer, "aud": f"http://127.0.0.1:{port}/mcp", "exp": int(time.time()) + 300}
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": jwk["kid"]})
    async with serve_asgi(build_http_app(settings), port=port) as url, httpx2.AsyncClient(timeout=30) as raw:
        for _ in range(3):
            started = time.monotonic()
            refused = await raw.post(
                f"{url}/mcp", json=MCP_BODY, headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"}
            )
            assert refused.status_code == 401
            assert time.monotonic() - started < 12
        static = await raw.post(
            f"{url}/mcp",
            json=MCP_BODY,
            headers={**MCP_HEADERS, "Authorization": "Bearer static-tok-issuer-down-1"},
        )
        assert static.status_code == 200
