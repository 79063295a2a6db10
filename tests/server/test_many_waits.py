"""Many waits at once, over a real MCP client (in memory) against the simulator on loopback: 20 or
more tasks waited on are followed through list sweeps instead of one status query per poll, a few
keep their per-task queries, and the co-waiters of one task share its finished answer."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from kling_omni_mcp.config import Settings
from kling_omni_mcp.kling.status_sweep import SWEEP_FROM
from kling_omni_mcp.media.outputs import ResultStore
from kling_omni_mcp.server.app import build_server
from tests.conftest import serve_sim, text_of

pytestmark = pytest.mark.anyio

#: Long enough for every wait to have begun before the tasks end, on a loaded machine too.
DURATION = 4.0


async def _create_all(client: Client, count: int) -> list[str]:
    ids: list[str] = [""] * count

    async def create(n: int) -> None:
        result = await client.call_tool("create_image", {"prompt": f"Many waits {n}"})
        assert not result.is_error, text_of(result)
        assert result.structured_content is not None
        ids[n] = result.structured_content["task_id"]

    async with anyio.create_task_group() as tg:
        for n in range(count):
            tg.start_soon(create, n)
    return ids


async def _wait_all(client: Client, keys: list[str]) -> list[Any]:
    results: list[Any] = [None] * len(keys)

    async def wait(n: int, key: str) -> None:
        results[n] = await client.call_tool("wait_for_task", {"task_id": key, "timeout_seconds": 60})

    async with anyio.create_task_group() as tg:
        for n, key in enumerate(keys):
            tg.start_soon(wait, n, key)
    return results


@pytest.mark.parametrize(("tasks", "sweeps"), [(25, True), (3, False)], ids=["25-tasks", "3-tasks"])
async def test_concurrent_waits_all_finish_and_many_are_followed_by_list_sweeps(
    tasks: int, sweeps: bool, make_settings: Callable[..., Settings]
) -> None:
    assert (tasks >= SWEEP_FROM) == sweeps
    async with serve_sim(duration=DURATION) as sim:
        settings = make_settings(sim.base_url)  # polls every 0.1 to 0.3 s
        counters = sim.sim.counters
        async with Client(build_server(settings)) as client:
            ids = await _create_all(client, tasks)
            began = time.monotonic()
            with anyio.fail_after(60):
                results = await _wait_all(client, ids)
            took = time.monotonic() - began
    for task_id, result in zip(ids, results, strict=True):
        assert not result.is_error, text_of(result)
        data = result.structured_content
        assert data["task_id"] == task_id and data["status"] == "succeeded" and data["done"] is True
        [image] = data["images"]
        assert image["path"] and Path(image["path"]).is_file()
    assert counters.downloads == tasks  # each image saved once
    # A task the sweep saw end wakes its wait: no wait lingers far past the tasks' end.
    assert took < DURATION + 15
    if sweeps:
        # Polling every 0.1-0.3 s for 4 s would query each task over ten times. Here at most the
        # first poll of each task is a query (before 20 tasks are polled); the rest come from
        # the list, a page a second.
        assert counters.lists >= 1
        assert counters.queries < tasks, dict(counters.queries_by_id)
        assert max(counters.queries_by_id.values(), default=0) <= 1, dict(counters.queries_by_id)
    else:
        assert counters.lists == 0
        assert all(counters.queries_by_id[task_id] >= 2 for task_id in ids), dict(counters.queries_by_id)


async def test_co_waiters_of_one_task_share_its_answer(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reading the sidecar is the costly part of building a finished answer: count it.
    reads: list[str] = []
    original = ResultStore.read_sidecar

    def counted(self: ResultStore, task_id: str) -> dict[str, Any] | None:
        reads.append(task_id)
        return original(self, task_id)

    monkeypatch.setattr(ResultStore, "read_sidecar", counted)
    async with serve_sim(duration=3.0) as sim, Client(build_server(make_settings(sim.base_url))) as client:
        [task_id] = await _create_all(client, 1)
        results: list[Any] = []

        async def wait() -> None:
            results.append(
                await client.call_tool("wait_for_task", {"task_id": task_id, "timeout_seconds": 60})
            )

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(wait)
                await anyio.sleep(1.0)
                reads.clear()  # only what the end of the task costs
                for _ in range(5):  # five more a second later: they wait a second less
                    tg.start_soon(wait)
    assert len(results) == 10
    data = [r.structured_content for r in results]
    assert all(not r.is_error for r in results), [text_of(r) for r in results]
    assert all(d["status"] == "succeeded" for d in data)
    [images] = {tuple((img["index"], img["path"]) for img in d["images"]) for d in data}
    assert images and all(path and Path(path).is_file() for _, path in images)
    waited = sorted(d["waited_seconds"] for d in data)
    early, late = waited[5:], waited[:5]
    assert min(early) - max(late) >= 0.5, waited  # each answer carries its own wait
    assert sim.sim.counters.downloads == 1
    # One answer was built for the ten waiters (one read for it, one for recording the saved
    # file); building one each would read it at least ten times.
    assert len(reads) <= 3, reads
