"""Over a real MCP client (in memory) against the simulator on loopback: a failed task is a
result, waiters on both ids of a task share one poll loop that a callback wakes, and a wait
answers on time however slow the result download is."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from kling_omni_mcp.config import Settings
from kling_omni_mcp.kling.callbacks import CallbackNotice
from kling_omni_mcp.server.app import ServiceSlot, build_server
from tests.conftest import SimHandle, sim_with, text_of

pytestmark = pytest.mark.anyio


async def _create(client: Client, **args: Any) -> dict[str, Any]:
    result = await client.call_tool("create_image", args)
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


@sim_with(duration=0.3)
async def test_a_failed_task_is_a_result_with_the_reason_and_the_next_step(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    reason = "Prompt refused by content safety policy"
    simulator.sim.faults.fail_next_tasks(1, message=reason)
    async with Client(build_server(make_settings(simulator.base_url))) as client:
        task_id = (await _create(client, prompt="Something refused"))["task_id"]
        waited = await client.call_tool("wait_for_task", {"task_id": task_id, "timeout_seconds": 20})
        got = await client.call_tool("get_task", {"task_id": task_id})
    for result in (waited, got):
        assert result.is_error  # the host shows a failure...
        data = result.structured_content  # ...and the task is still there, in plain words
        assert data is not None
        assert data["task_id"] == task_id
        assert data["status"] == "failed" and data["done"] is True
        assert data["status_message"] == reason
        assert any("Rephrase the prompt" in note and "create_image" in note for note in data["notes"])
        assert reason in text_of(result)


@sim_with(duration=1.5)
async def test_waits_by_task_id_and_by_external_id_share_one_poll_loop(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(simulator.base_url, poll_initial_seconds=0.2, poll_max_seconds=0.2)
    counters = simulator.sim.counters
    async with Client(build_server(settings)) as client:
        created = await _create(client, prompt="Two waiters", external_task_id="shared-ext-1")
        task_id = created["task_id"]
        counters.reset()
        answers: dict[str, Any] = {}

        async def wait(key: str) -> None:
            answers[key] = await client.call_tool("wait_for_task", {"task_id": key, "timeout_seconds": 20})

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait, task_id)
            tg.start_soon(wait, "shared-ext-1")
    for result in answers.values():
        assert not result.is_error, text_of(result)
        assert result.structured_content["status"] == "succeeded"
        assert result.structured_content["task_id"] == task_id
    # One loop polls the task until it ends; the other id costs at most its very first poll
    # (before that answer tells the two ids belong together). Two loops would each poll the
    # task several times over its 1.5 s.
    by_id = [counters.queries_by_id[task_id], counters.queries_by_id["shared-ext-1"]]
    assert min(by_id) <= 1, by_id
    assert max(by_id) >= 2, by_id  # the loop really polled while the task ran


@sim_with(duration=1.0)
@pytest.mark.parametrize("wait_by", ["task_id", "external_task_id"])
async def test_a_callback_naming_the_other_id_wakes_the_wait(
    wait_by: str, simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    # Polls 30 s apart: only the callback can end this wait quickly.
    settings = make_settings(simulator.base_url, poll_initial_seconds=30, poll_max_seconds=30)
    slot = ServiceSlot()
    async with Client(build_server(settings, slot=slot)) as client:
        created = await _create(client, prompt="Woken", external_task_id="wake-ext-1")
        task_id = created["task_id"]
        key = task_id if wait_by == "task_id" else "wake-ext-1"
        result: list[Any] = []

        async def wait() -> None:
            result.append(await client.call_tool("wait_for_task", {"task_id": key, "timeout_seconds": 60}))

        began = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(1.5)  # the first poll has answered; the task is done at the vendor
            service = slot.current
            assert service is not None
            # The callback names only the id the waiter did NOT use.
            if wait_by == "task_id":
                body = CallbackNotice(
                    task_id="unrelated", external_id="wake-ext-1", status="succeed", final=True
                )
            else:
                body = CallbackNotice(task_id=task_id, external_id=None, status="succeed", final=True)
            assert service.on_callback(body) is True
        assert time.monotonic() - began < 10
    [answer] = result
    assert not answer.is_error, text_of(answer)
    assert answer.structured_content["status"] == "succeeded"


@sim_with(duration=0.3)
async def test_a_slow_download_does_not_hold_the_wait_past_its_budget(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(simulator.base_url)
    sim = simulator.sim
    sim.faults.delay_next(1, seconds=8, kind="download")  # the CDN takes 8 s to answer
    async with Client(build_server(settings)) as client:
        task_id = (await _create(client, prompt="Slow CDN"))["task_id"]
        began = time.monotonic()
        waited = await client.call_tool("wait_for_task", {"task_id": task_id, "timeout_seconds": 2})
        took = time.monotonic() - began
        assert took < 2 + 5, took
        assert not waited.is_error, text_of(waited)
        data = waited.structured_content
        assert data is not None and data["status"] == "succeeded" and data["done"] is True
        [image] = data["images"]
        assert image["url"].startswith("http") and image["path"] is None
        assert any("saved in the background" in note for note in data["notes"])
        # The download went on without the request; a later look finds the file, fetched once.
        got = await client.call_tool("get_task", {"task_id": task_id})
        [saved] = got.structured_content["images"]
        assert saved["path"] is not None and Path(saved["path"]).is_file()
    assert sim.counters.downloads == 1
    sidecar = json.loads((settings.output_dir / task_id / f"{task_id}.json").read_text())
    assert sidecar["images"][0]["path"] == saved["path"]
