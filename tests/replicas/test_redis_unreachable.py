"""A server whose Redis is not there at all still serves every tool call, says so on /healthz,
and never shows the password in KLING_REDIS_URL."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx2
import pytest

from kling_omni_mcp._asgi import serve_asgi
from kling_omni_mcp.config import Settings
from kling_omni_mcp.server.http import build_http_app
from tests.conftest import SimHandle, free_port
from tests.replicas.cluster import mcp_client
from tests.replicas.conftest import until

pytestmark = pytest.mark.anyio

PASSWORD = "redis-pw-5c1e9a7d"


async def test_without_reachable_redis_tools_work_and_healthz_says_local(
    simulator: SimHandle, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    nobody = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    settings = make_settings(simulator.base_url, redis_url=nobody)
    async with serve_asgi(build_http_app(settings, stateless=True)) as url:
        async with httpx2.AsyncClient(timeout=10) as raw:

            async def says_local() -> bool:
                body = (await raw.get(f"{url}/healthz")).json()
                return bool(body.get("store") == "local (redis unreachable)")

            await until(says_local, 10, step=0.1)
            assert PASSWORD not in (await raw.get(f"{url}/healthz")).text
        async with mcp_client(url) as client:
            created = await client.call_tool("create_image", {"prompt": "No Redis today", "wait_seconds": 20})
        assert not created.is_error, created
        assert created.structured_content is not None
        assert created.structured_content["status"] == "succeeded"
    assert "Redis is unreachable" in caplog.text
    assert PASSWORD not in caplog.text
