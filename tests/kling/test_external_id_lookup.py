"""``external_task_id`` look-ups only return a task whose external id really matches.

The vendor's ``GET /{id}`` accepts a task id *or* an external id, so an external id equal to some
other task's task id would find that other task; the server must create a new one instead.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from kling_omni_mcp.config import Settings
from kling_omni_mcp.kling.auth import ApiKeyAuth
from kling_omni_mcp.kling.client import KlingClient
from tests.conftest import TEST_API_KEY, SimHandle, text_of
from tests.reliability.helpers import mcp_session

pytestmark = pytest.mark.anyio


async def test_an_external_id_equal_to_another_tasks_id_creates_a_new_task(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    async with mcp_session(make_settings(simulator.base_url)) as client:
        first = await client.call_tool("create_image", {"prompt": "A fox", "wait_seconds": 0})
        assert not first.is_error, text_of(first)
        other_id = first.structured_content["task_id"]
        second = await client.call_tool(
            "create_image", {"prompt": "An owl", "wait_seconds": 0, "external_task_id": other_id}
        )
        assert not second.is_error, text_of(second)
        assert second.structured_content["task_id"] != other_id
        assert "already exists" not in text_of(second)
        again = await client.call_tool(
            "create_image", {"prompt": "An owl", "wait_seconds": 0, "external_task_id": other_id}
        )
        # A real match still returns the existing task (no second charge).
        assert again.structured_content["task_id"] == second.structured_content["task_id"]
        assert "already exists" in text_of(again)
    assert len(simulator.sim.tasks) == 2


async def test_find_by_external_id(simulator: SimHandle) -> None:
    async with KlingClient(simulator.base_url, ApiKeyAuth(TEST_API_KEY)) as client:
        assert await client.find_by_external_id("never-used") is None
        from kling_omni_mcp.kling.models import CreateImageRequest

        task = await client.create_task(CreateImageRequest(prompt="A cat", external_task_id="mine-1"))
        found = await client.find_by_external_id("mine-1")
        assert found is not None and found.task_id == task.task_id
        assert await client.find_by_external_id(task.task_id) is None  # a task id, not an external id
