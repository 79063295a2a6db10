"""The watcher with a shared store: it polls only while it leads, follows published states
otherwise, takes over a free lease, and a store that fails never ends a wait."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from kling_omni_mcp.kling.models import TaskData
from kling_omni_mcp.store import TaskEvent
from kling_omni_mcp.store.solo import SoloLease
from kling_omni_mcp.watch import WatcherRegistry
from tests.test_watch import Vendor, nothing

pytestmark = pytest.mark.anyio


class OtherLeads(SoloLease):
    """Another replica holds every lease until ``free`` is set; events go to ``handler``."""

    renew_seconds = 0.05

    def __init__(self) -> None:
        self.free = False
        self.handler: Callable[[TaskEvent], None] | None = None
        self.released: list[str] = []

    def on_event(self, handler: Callable[[TaskEvent], None]) -> None:
        self.handler = handler

    async def lead(self, key: str) -> bool:
        return self.free

    async def release(self, key: str) -> None:
        self.released.append(key)


class Broken(SoloLease):
    """A store whose every call fails (a bug, or a client library surprise)."""

    async def lead(self, key: str) -> bool:
        raise RuntimeError("store bug")

    async def publish(self, event: TaskEvent) -> None:
        raise RuntimeError("store bug")

    async def put_task(self, task: TaskData) -> None:
        raise RuntimeError("store bug")


async def test_a_follower_never_polls_and_answers_from_the_leaders_state() -> None:
    vendor, store = Vendor(), OtherLeads()
    registry = WatcherRegistry(vendor.fetch, initial_interval=0.05, max_interval=0.05, shared=store)
    async with anyio.create_task_group() as tg:
        registry.attach(tg)
        outcomes = []

        async def wait() -> None:
            outcomes.append(await registry.wait("t1", 10, nothing))

        tg.start_soon(wait)
        await anyio.sleep(0.3)
        assert vendor.polls == {}  # the other replica polls
        assert store.handler is not None
        store.handler(TaskEvent("t1", "state", TaskData(task_id="t1", task_status="succeed")))
    assert outcomes[0].done and outcomes[0].task is not None and outcomes[0].task.succeeded
    assert vendor.polls == {}


async def test_a_follower_takes_a_free_lease_and_polls() -> None:
    vendor, store = Vendor(polls_needed=2), OtherLeads()
    registry = WatcherRegistry(vendor.fetch, initial_interval=0.05, max_interval=0.05, shared=store)
    async with anyio.create_task_group() as tg:
        registry.attach(tg)
        outcomes = []

        async def wait() -> None:
            outcomes.append(await registry.wait("t1", 10, nothing))

        tg.start_soon(wait)
        await anyio.sleep(0.2)
        store.free = True  # the holder left or died
        assert store.handler is not None
        store.handler(TaskEvent("t1", "released"))
    assert outcomes[0].done and vendor.polls == {"t1": 2}
    assert store.released == ["t1"]  # given up once the task ended


async def test_a_failing_store_never_ends_a_wait() -> None:
    vendor = Vendor(polls_needed=3)
    registry = WatcherRegistry(vendor.fetch, initial_interval=0.05, max_interval=0.05, shared=Broken())
    async with anyio.create_task_group() as tg:
        registry.attach(tg)
        outcome = await registry.wait("t1", 10, nothing)
    assert outcome.done and vendor.polls == {"t1": 3}  # it polled here instead
