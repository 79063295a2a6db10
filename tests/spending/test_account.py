"""get_account against the simulator: the packs, the 12-hour caveat, the 60 s cache, and never
more than one vendor query per second however many callers ask (counted at the simulator)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client

from kling_omni_mcp.account import AccountReader
from kling_omni_mcp.budget import Spending
from kling_omni_mcp.config import Settings
from kling_omni_mcp.kling.auth import ApiKeyAuth
from kling_omni_mcp.kling.client import KlingClient
from kling_omni_mcp.server.app import build_server
from tests.conftest import TEST_API_KEY, SimHandle, text_of

pytestmark = pytest.mark.anyio


async def test_get_account_shows_packs_and_the_delay(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(simulator.base_url, max_units_per_day=100)
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("get_account", {})
        assert not result.is_error, text_of(result)
        data = result.structured_content
        assert data is not None
        image = next(p for p in data["packs"] if p["name"].startswith("Image pack"))
        assert (image["remaining_units"], image["total_units"], image["status"]) == (1000, 1000, "active")
        assert image["expires_at"].endswith("Z")
        assert data["remaining_units_active"] == 1100
        assert data["units_today"] == 0 and data["daily_budget_left"] == 100
        text = text_of(result)
        assert "up to 12 hours late" in text
        assert "1000 of 1000 units left" in text
        assert "0 of 100 units used today, 100 left" in text
    start, end = simulator.sim.account.last_window
    now_ms = time.time() * 1000
    assert abs(end - now_ms) < 60_000 and start < end  # milliseconds, as the vendor requires


async def test_twenty_concurrent_calls_make_one_vendor_query(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    answers: list[Any] = []
    async with Client(build_server(make_settings(simulator.base_url))) as client:

        async def ask() -> None:
            answers.append(await client.call_tool("get_account", {}))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(ask)
        assert all(not a.is_error for a in answers)
        assert len({a.structured_content["fetched_at"] for a in answers}) == 1
    assert simulator.sim.account.queries == 1
    assert simulator.sim.account.refused_too_fast == 0


async def test_without_cache_queries_are_spaced_one_second_apart(simulator: SimHandle) -> None:
    """Even with the cache off, concurrent callers never pass the vendor's 1 query/s."""
    async with httpx2.AsyncClient(timeout=10) as http:
        client = KlingClient(simulator.base_url, ApiKeyAuth(TEST_API_KEY), http=http)
        reader = AccountReader(lambda: client, Spending(None), cache_seconds=0)
        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(reader.get)
        elapsed = time.monotonic() - started
    assert simulator.sim.account.queries == reader.queries == 3
    assert simulator.sim.account.refused_too_fast == 0  # the simulator refuses faster queries
    assert elapsed >= 2.0


async def test_simulated_packs_fall_as_tasks_succeed(simulator: SimHandle) -> None:
    async with httpx2.AsyncClient(timeout=10) as http:
        client = KlingClient(simulator.base_url, ApiKeyAuth(TEST_API_KEY), http=http)
        from kling_omni_mcp.kling.models import CreateImageRequest

        task = await client.create_task(CreateImageRequest(prompt="two foxes", n=2))
        for _ in range(100):  # the task takes 0.8 s
            if (await client.get_task(task.task_id)).task_status == "succeed":
                break
            await anyio.sleep(0.2)
        now = int(time.time() * 1000)
        costs = await client.get_account_costs(now - 86_400_000, now)
    image = next(p for p in costs.resource_pack_subscribe_infos if p.resource_pack_name.startswith("Image"))
    assert (image.total_quantity, image.remaining_quantity) == (1000, 984)


async def test_account_costs_requires_the_time_window(simulator: SimHandle) -> None:
    async with httpx2.AsyncClient(timeout=10) as http:
        answer = await http.get(
            f"{simulator.base_url}/account/costs", headers={"Authorization": f"Bearer {TEST_API_KEY}"}
        )
    assert answer.status_code == 400
    assert "start_time is required" in answer.json()["message"]
