"""Three replicas of the real HTTP server, one Redis, one round-robin proxy (issue 13).

Each test starts a real ``redis-server``, the simulator on loopback and three
``kling-omni-mcp --transport http --stateless`` processes sharing one output folder and one
``KLING_PUBLIC_URL`` (the proxy's, so the simulator's callbacks reach whichever replica the
proxy picks). MCP clients talk to the proxy only, except where a test needs one replica.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from redis.asyncio import Redis

from tests.conftest import serve_sim
from tests.replicas.cluster import Cluster, running_cluster
from tests.replicas.conftest import RedisServer, until

pytestmark = pytest.mark.anyio


async def _create(client: Client, prompt: str) -> str:
    created = await client.call_tool("create_image", {"prompt": prompt, "wait_seconds": 0})
    assert not created.is_error, created
    assert created.structured_content is not None
    return str(created.structured_content["task_id"])


async def _wait(client: Client, task_id: str, seconds: float) -> dict[str, Any]:
    answer = await client.call_tool("wait_for_task", {"task_id": task_id, "timeout_seconds": seconds})
    assert not answer.is_error, answer
    assert answer.structured_content is not None
    return answer.structured_content


async def _wait_through_each_replica(cluster: Cluster, task_id: str, seconds: float) -> list[dict[str, Any]]:
    """One wait per replica, through the proxy: three tool calls in a row take three turns of
    the round robin, one per replica."""
    answers: list[dict[str, Any]] = []
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(cluster.client()) for _ in cluster.replicas]
        first = len(cluster.proxy.served)

        async def wait(client: Client) -> None:
            answers.append(await _wait(client, task_id, seconds))

        async with anyio.create_task_group() as tg:
            for client in clients:
                tg.start_soon(wait, client)
    waits = [b for b, m in cluster.proxy.served[first:] if m == "tools/call"]
    assert sorted(waits) == sorted(r.url for r in cluster.replicas)  # every replica waited once
    return answers


async def test_waits_through_three_replicas_poll_the_vendor_once_and_download_once(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with serve_sim(duration=4.0) as sim, running_cluster(tmp_path, sim.base_url, redis_server.url) as c:
        async with c.client() as client:
            shared = await _create(client, "A lighthouse at dusk")
            alone = await _create(client, "A lighthouse at dawn")  # the same work for one replica

        async def wait_alone() -> None:
            async with c.client(c.replicas[0].url) as direct:
                assert (await _wait(direct, alone, 30))["status"] == "succeeded"

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_alone)
            answers = await _wait_through_each_replica(c, shared, 30)
        assert [a["status"] for a in answers] == ["succeeded"] * 3
        # Over HTTP an answer names its file by a signed link; each replica's link works through
        # the proxy (whichever replica serves it) and gives the one file in the shared folder.
        links = [img["link"] for a in answers for img in a["images"]]
        assert len(links) == 3 and all(link and f"/files/{shared}/" in link for link in links)
        saved = [p for p in c.output.rglob("*") if p.is_file() and shared in p.name and p.suffix != ".json"]
        assert len(saved) == 1, saved
        async with httpx2.AsyncClient(timeout=10) as raw:
            for link in links:
                path = link.split("://", 1)[1].split("/", 1)[1]
                got = await raw.get(f"{c.url}/{path}")
                assert got.status_code == 200 and got.content == saved[0].read_bytes()
        queries = sim.sim.counters.queries_by_id
        print(f"vendor queries: three replicas {queries[shared]}, one replica {queries[alone]}")
        assert queries[shared] <= queries[alone] + 2, (queries[shared], queries[alone])
        downloads = sum(n for path, n in sim.sim.counters.downloads_by_path.items() if shared in path)
        assert downloads == 1


async def test_a_callback_to_one_replica_ends_the_waits_on_all_three(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    duration = 3.0
    slow = {"poll_initial_seconds": "20", "poll_max_seconds": "20"}  # only a callback can end a wait
    async with (
        serve_sim(duration=duration) as sim,
        running_cluster(tmp_path, sim.base_url, redis_server.url, **slow) as c,
    ):
        async with c.client() as client:
            task_id = await _create(client, "A fox in the snow")
        finished_at = time.monotonic() - 0.2 + duration  # no earlier than this
        waits_began = time.monotonic()
        answers = await _wait_through_each_replica(c, task_id, 30)
        answered_at = time.monotonic()
        assert [a["status"] for a in answers] == ["succeeded"] * 3
        # Each replica saw the end (before saving the image) within a fraction of a second...
        seen = [waits_began + a["waited_seconds"] - finished_at for a in answers]
        assert max(seen) < 0.9, seen
        # ...and answered, the image saved once and found by the others, soon after.
        assert answered_at - finished_at < 4.0
        delivered = [
            cb for cb in sim.sim.counters.callbacks if cb.task_id == task_id and cb.http_status == 200
        ]
        assert any(cb.task_status == "succeed" for cb in delivered)


async def test_killing_the_polling_replica_does_not_stop_the_other_waits(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with (
        serve_sim(duration=12.0) as sim,
        running_cluster(tmp_path, sim.base_url, redis_server.url) as c,
    ):
        async with c.client() as client:
            task_id = await _create(client, "A storm over the sea")
        redis = Redis.from_url(redis_server.url, socket_timeout=2)
        results: list[str] = []

        async def wait_until_done() -> None:
            began = time.monotonic()
            while time.monotonic() - began < 60:
                try:
                    async with c.client() as client:
                        answer = await _wait(client, task_id, 20)
                except Exception:
                    continue  # the call was on the killed replica: ask again (the proxy skips it now)
                if answer["done"]:
                    results.append(answer["status"])
                    return

        async with anyio.create_task_group() as tg:
            for _ in c.replicas:
                tg.start_soon(wait_until_done)
            token: bytes | None = None

            async def lease_taken() -> bool:
                nonlocal token
                token = await redis.get(f"kling-omni-mcp:lease:{task_id}")
                return token is not None

            await until(lease_taken, 10)
            await anyio.sleep(1.0)
            assert token is not None
            victim = c.holder_of(token.decode())
            victim.kill()
            killed_at = time.monotonic()
            queries_before = sim.sim.counters.queries_by_id[task_id]
        await redis.aclose()
        assert results == ["succeeded"] * 3
        assert time.monotonic() - killed_at < 30
        # Another replica took the lease and went on polling.
        assert sim.sim.counters.queries_by_id[task_id] > queries_before


async def test_without_redis_the_waits_finish_by_local_polling_and_the_replicas_rejoin(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with serve_sim(duration=5.0) as sim, running_cluster(tmp_path, sim.base_url, redis_server.url) as c:
        assert [(await r.health())["store"] for r in c.replicas] == ["redis"] * 3
        async with c.client() as client:
            task_id = await _create(client, "A quiet harbour")

        async def stop_redis_soon() -> None:
            await anyio.sleep(1.0)
            redis_server.stop()

        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_redis_soon)
            answers = await _wait_through_each_replica(c, task_id, 30)
        assert [a["status"] for a in answers] == ["succeeded"] * 3
        stores = [(await r.health())["store"] for r in c.replicas]
        assert stores == ["local (redis unreachable)"] * 3
        redis_server.start()

        async def all_rejoined() -> bool:
            return [(await r.health())["store"] for r in c.replicas] == ["redis"] * 3

        await until(all_rejoined, 20, step=0.25)
        for replica in c.replicas:
            assert "Redis is unreachable" in replica.log.read_text()
