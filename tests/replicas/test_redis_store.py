"""``RedisStore`` against a real redis-server: one lease holder, the marks of replicas with
waiters, shared records, replay memory, ledger and save lock, and the fallback to in-process
state while Redis is away."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis

from kling_omni_mcp.kling.models import TaskData
from kling_omni_mcp.store import TaskEvent
from kling_omni_mcp.store.memory import MemoryStore
from kling_omni_mcp.store.redis_store import LEASE_SECONDS, RedisStore
from tests.replicas.conftest import RedisServer, until

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def two_stores(url: str, folder: Path) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(RedisStore.open(url, fallback=MemoryStore(folder / "a")))
        b = await stack.enter_async_context(RedisStore.open(url, fallback=MemoryStore(folder / "b")))
        yield a, b


def _task(task_id: str, status: str = "processing", external: str | None = None) -> TaskData:
    return TaskData.model_validate(
        {"task_id": task_id, "task_status": status, "task_info": {"external_task_id": external}}
    )


async def test_one_replica_leads_a_task_and_the_other_hears_when_it_is_free(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with two_stores(redis_server.url, tmp_path) as (a, b):
        heard: list[TaskEvent] = []
        b.on_event(heard.append)
        await anyio.sleep(0.3)  # b's subscription is in place
        assert await a.lead("task-1") is True
        assert await a.lead("task-1") is True  # renewing
        assert await b.lead("task-1") is False
        assert await b.lead("task-2") is True  # other tasks are free
        await a.release("task-1")
        await until(lambda: any(e.kind == "released" and e.key == "task-1" for e in heard), 3)
        assert await b.lead("task-1") is True
        assert await a.lead("task-1") is False


async def test_a_lease_nobody_renews_lapses_within_its_lifetime(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with two_stores(redis_server.url, tmp_path) as (a, b):
        assert await a.lead("task-1")
        a._leases.clear()  # a "dies": it neither renews nor releases
        took = await until(lambda: b.lead("task-1"), LEASE_SECONDS + 2, step=0.1)
        assert LEASE_SECONDS - 1 < took <= LEASE_SECONDS + 1


async def test_a_replica_knows_while_another_has_waiters_on_a_task(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with two_stores(redis_server.url, tmp_path) as (a, b):
        assert await a.wanted_elsewhere("task-1") is False
        await b.want("task-1")
        assert await a.wanted_elsewhere("task-1") is True
        assert await b.wanted_elsewhere("task-1") is False  # its own mark does not count
        assert await a.wanted_elsewhere("task-2") is False  # marks are per task
        await a.want("task-1")
        await b.want("task-1")  # refreshing
        await b.unwant("task-1")
        assert await a.wanted_elsewhere("task-1") is False
        assert await b.wanted_elsewhere("task-1") is True
        await a.unwant("task-1")
        redis = Redis.from_url(redis_server.url, socket_timeout=2)
        try:
            assert await redis.exists("kling-omni-mcp:waiting:task-1") == 0  # nothing lingers
        finally:
            await redis.aclose()


async def test_a_waiting_mark_nobody_refreshes_lapses_within_its_lifetime(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    redis = Redis.from_url(redis_server.url, socket_timeout=2)
    try:
        async with two_stores(redis_server.url, tmp_path) as (a, b):
            await b.want("task-1")  # b then "dies": it neither refreshes nor removes its mark
            began = anyio.current_time()
            # The set expires with its newest mark, even if nobody asks about it again.
            assert 0 < await redis.pttl("kling-omni-mcp:waiting:task-1") <= LEASE_SECONDS * 1000
            await anyio.sleep(1.0)
            assert await a.wanted_elsewhere("task-1") is True

            async def lapsed() -> bool:
                return not await a.wanted_elsewhere("task-1")

            await until(lapsed, LEASE_SECONDS + 2, step=0.1)
            assert LEASE_SECONDS - 1 < anyio.current_time() - began <= LEASE_SECONDS + 2
            assert await redis.exists("kling-omni-mcp:waiting:task-1") == 0
    finally:
        await redis.aclose()


async def test_states_published_by_one_replica_reach_the_other_with_the_task(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with two_stores(redis_server.url, tmp_path) as (a, b):
        heard: list[TaskEvent] = []
        b.on_event(heard.append)
        mine: list[TaskEvent] = []
        a.on_event(mine.append)
        await anyio.sleep(0.3)
        await a.publish(TaskEvent("task-1", "state", _task("task-1", "succeed")))
        await until(lambda: bool(heard), 3)
        assert heard[0].task is not None and heard[0].task.is_final
        assert mine == []  # a replica does not hear itself


async def test_task_records_and_aliases_are_shared(redis_server: RedisServer, tmp_path: Path) -> None:
    async with two_stores(redis_server.url, tmp_path) as (a, b):
        await a.put_task(_task("task-9", "succeed", external="mine-9"))
        assert await b.resolve("mine-9") == "task-9"
        assert await b.resolve("unknown") == "unknown"
        recorded = await b.get_task("mine-9")
        assert recorded is not None and recorded.task_id == "task-9" and recorded.is_final


async def test_replay_memory_is_shared(redis_server: RedisServer, tmp_path: Path) -> None:
    async with two_stores(redis_server.url, tmp_path) as (a, b):
        assert await a.remember_once("msg_1", 60) is True
        assert await b.remember_once("msg_1", 60) is False
        assert await b.remember_once("msg_2", 60) is True


async def test_the_daily_ceiling_counts_every_replica(redis_server: RedisServer, tmp_path: Path) -> None:
    async with two_stores(redis_server.url, tmp_path) as (a, b):
        day = "2026-11-30"
        first = await anyio.to_thread.run_sync(a.ledger.reserve, day, "k1", 6, 10)
        second = await anyio.to_thread.run_sync(b.ledger.reserve, day, "k2", 6, 10)
        assert first.accepted and not second.accepted and second.spent_before == 6
        await anyio.to_thread.run_sync(a.ledger.release, day, "k1")
        assert await anyio.to_thread.run_sync(b.ledger.spent, day) == 0


async def test_the_save_lock_lets_one_replica_save_at_a_time(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with two_stores(redis_server.url, tmp_path) as (a, b):
        order: list[str] = []

        async def save(store: RedisStore, name: str) -> None:
            async with store.save_lock("task-1"):
                order.append(f"{name} in")
                await anyio.sleep(0.3)
                order.append(f"{name} out")

        async with anyio.create_task_group() as tg:
            tg.start_soon(save, a, "a")
            await anyio.sleep(0.05)
            tg.start_soon(save, b, "b")
        assert order == ["a in", "a out", "b in", "b out"]


async def test_without_redis_every_replica_leads_and_rejoins_when_it_is_back(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with two_stores(redis_server.url, tmp_path) as (a, b):
        assert await a.lead("task-1") and not await b.lead("task-1")
        assert a.status() == "redis"
        redis_server.stop()
        with anyio.fail_after(10):
            # Each call answers at once from this process: nothing waits on the dead server.
            assert await b.lead("task-1") is True
            assert await b.remember_once("msg_1", 60) is True
            assert b.status() == "local (redis unreachable)"
            await b.want("task-1")
            assert await b.wanted_elsewhere("task-1") is False  # as a lone process answers
        redis_server.start()
        await until(lambda: b.status() == "redis", 15)
        assert await b.lead("task-7") is True and await a.lead("task-7") is False
        # The restarted server lost the marks' script: the client loads it again.
        await until(lambda: a.status() == "redis", 15)
        await a.want("task-7")
        assert await b.wanted_elsewhere("task-7") is True
