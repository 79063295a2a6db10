"""Three replicas of the real HTTP server, one Redis, one round-robin proxy (issue 13).

Each test starts a real ``redis-server``, the simulator on loopback and three
``kling-omni-mcp --transport http --stateless`` processes sharing one output folder and one
``KLING_PUBLIC_URL`` (the proxy's, so the simulator's callbacks reach whichever replica the
proxy picks). MCP clients talk to the proxy only, except where a test needs one replica.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from redis.asyncio import Redis

from tests.conftest import serve_sim
from tests.replicas.cluster import Cluster, Replica, running_cluster
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


async def test_the_lease_stays_with_its_holder_while_any_replica_has_waiters(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A's waiter leads; B's waits on; A's waiter leaves: A goes on polling for B (no handover),
    and once every waiter has left, the lease is given up."""
    duration = 16.0
    async with (
        serve_sim(duration=duration) as sim,
        running_cluster(tmp_path, sim.base_url, redis_server.url) as c,
    ):
        a, b = c.replicas[0], c.replicas[1]
        async with c.client() as client:
            shared = await _create(client, "A kite over the dunes")  # A's waiter leaves, B's stays
            alone = await _create(client, "A kite over the sea")  # the same work for A alone
            dropped = await _create(client, "A kite in the rain")  # every waiter leaves early
        ends_at = time.monotonic() + duration - 0.5  # no task ends before this
        redis = Redis.from_url(redis_server.url, socket_timeout=2)
        answers: dict[str, dict[str, Any]] = {}
        left: dict[str, float] = {}
        tokens: dict[str, list[bytes]] = {shared: [], dropped: []}
        gone_at: dict[str, float] = {}

        heard = {name: anyio.Event() for name in ("b-shared", "b-dropped")}

        async def wait(name: str, replica: Replica, task_id: str, seconds: float) -> None:
            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                if name in heard:
                    heard[name].set()  # this waiter is in place: its replica told it how it goes

            arguments = {"task_id": task_id, "timeout_seconds": seconds}
            async with c.client(replica.url) as client:
                answer = await client.call_tool("wait_for_task", arguments, progress_callback=on_progress)
            left[name] = time.monotonic()
            assert not answer.is_error and answer.structured_content is not None, answer
            answers[name] = answer.structured_content

        polls_after_gone: list[int] = []

        async def lease_holder(task_id: str) -> bytes | None:
            token: bytes | None = await redis.get(f"kling-omni-mcp:lease:{task_id}")
            return token

        async def leased(task_id: str) -> bool:
            return await lease_holder(task_id) is not None

        async def record_holders(task_id: str, last: str) -> None:
            """Every holder of the lease, until it is gone after the waiter ``last`` left."""
            with anyio.fail_after(40):
                while True:
                    token = await lease_holder(task_id)
                    if token is not None:
                        tokens[task_id].append(token)
                    elif last in left:
                        gone_at[task_id] = time.monotonic()
                        break
                    await anyio.sleep(0.1)
            if task_id == dropped:  # does anyone still poll it?
                polls_after_gone.append(sim.sim.counters.queries_by_id[task_id])
                await anyio.sleep(2.0)
                polls_after_gone.append(sim.sim.counters.queries_by_id[task_id])

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait, "alone", a, alone, 40)
            tg.start_soon(wait, "a-shared", a, shared, 6)
            tg.start_soon(wait, "a-dropped", a, dropped, 6)
            for task_id in (shared, dropped):
                await until(partial(leased, task_id), 10)
            tg.start_soon(wait, "b-shared", b, shared, 40)
            tg.start_soon(wait, "b-dropped", b, dropped, 6)
            tg.start_soon(record_holders, shared, "b-shared")
            tg.start_soon(record_holders, dropped, "b-dropped")
            with anyio.fail_after(10):
                for event in heard.values():
                    await event.wait()
            b_waits_since = time.monotonic()
        await redis.aclose()

        # A's waiters left while B's waited on; the task then ended and B's wait saw it.
        assert not answers["a-shared"]["done"] and left["a-shared"] > b_waits_since
        assert left["a-dropped"] > b_waits_since
        assert answers["b-shared"]["status"] == "succeeded" and answers["alone"]["status"] == "succeeded"
        # One holder all along, A: no handover when A's own waiter left.
        for task_id in (shared, dropped):
            assert len(set(tokens[task_id])) == 1, (task_id, set(tokens[task_id]))
            assert c.holder_of(tokens[task_id][0].decode()) is a
        queries = sim.sim.counters.queries_by_id
        assert queries[shared] <= queries[alone] + 2, (queries[shared], queries[alone])
        # Once every waiter of the dropped task left, the lease was given up within seconds (well
        # before the task could have ended) and nobody polls it any more.
        last_left = max(left["a-dropped"], left["b-dropped"])
        assert not answers["b-dropped"]["done"]
        assert gone_at[dropped] - last_left < 6.0, gone_at[dropped] - last_left
        assert gone_at[dropped] < ends_at
        assert polls_after_gone[0] == polls_after_gone[1]
