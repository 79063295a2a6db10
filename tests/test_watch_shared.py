"""The watcher with a shared store: it polls only while it leads, follows published states
otherwise (marking that it has waiters), takes over a free lease, keeps leading while another
process has waiters, and a store that fails never ends a wait."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup

from kling_omni_mcp.kling.models import TaskData
from kling_omni_mcp.store import TaskEvent
from kling_omni_mcp.store.solo import SoloLease
from kling_omni_mcp.watch import WaitOutcome, WatcherRegistry
from tests.replicas.conftest import until
from tests.test_watch import Vendor, nothing

pytestmark = pytest.mark.anyio


class OtherLeads(SoloLease):
    """Another replica holds every lease until ``free`` is set; events go to ``handler``."""

    renew_seconds = 0.05

    def __init__(self) -> None:
        self.free = False
        self.handler: Callable[[TaskEvent], None] | None = None
        self.released: list[str] = []
        self.wants = 0
        self.unwanted: list[str] = []

    async def want(self, key: str) -> None:
        self.wants += 1

    async def unwant(self, key: str) -> None:
        self.unwanted.append(key)

    def on_event(self, handler: Callable[[TaskEvent], None]) -> None:
        self.handler = handler

    async def lead(self, key: str) -> bool:
        return self.free

    async def release(self, key: str) -> None:
        self.released.append(key)


class WaitedOnElsewhere(SoloLease):
    """This process leads; another process has waiters on every task while ``elsewhere``."""

    renew_seconds = 0.05

    def __init__(self) -> None:
        self.elsewhere = True
        self.asked = 0
        self.released: list[str] = []

    async def wanted_elsewhere(self, key: str) -> bool:
        self.asked += 1
        return self.elsewhere

    async def release(self, key: str) -> None:
        self.released.append(key)


class Broken(SoloLease):
    """A store whose every call fails (a bug, or a client library surprise)."""

    renew_seconds = 0.05

    async def lead(self, key: str) -> bool:
        raise RuntimeError("store bug")

    async def publish(self, event: TaskEvent) -> None:
        raise RuntimeError("store bug")

    async def put_task(self, task: TaskData) -> None:
        raise RuntimeError("store bug")

    async def wanted_elsewhere(self, key: str) -> bool:
        raise RuntimeError("store bug")

    async def release(self, key: str) -> None:
        raise RuntimeError("store bug")


class BrokenMarks(OtherLeads):
    """Another replica leads; marking this one's waiters fails."""

    async def want(self, key: str) -> None:
        raise RuntimeError("store bug")

    async def unwant(self, key: str) -> None:
        raise RuntimeError("store bug")


def fast_registry(vendor: Vendor, store: Any) -> WatcherRegistry:
    """A registry polling ``vendor`` every 0.05 s through ``store`` (a test double of the store)."""
    return WatcherRegistry(vendor.fetch, initial_interval=0.05, max_interval=0.05, shared=store)


def wait_in_background(tg: TaskGroup, registry: WatcherRegistry, key: str) -> list[WaitOutcome]:
    """Start a 10 s wait on ``key`` in ``tg``; its outcome lands in the returned list."""
    outcomes: list[WaitOutcome] = []

    async def wait() -> None:
        outcomes.append(await registry.wait(key, 10, nothing))

    tg.start_soon(wait)
    return outcomes


async def test_a_follower_never_polls_and_answers_from_the_leaders_state() -> None:
    vendor, store = Vendor(), OtherLeads()
    registry = fast_registry(vendor, store)
    async with anyio.create_task_group() as tg:
        registry.attach(tg)
        outcomes = wait_in_background(tg, registry, "t1")
        await anyio.sleep(0.3)
        assert vendor.polls == {}  # the other replica polls
        assert store.handler is not None
        store.handler(TaskEvent("t1", "state", TaskData(task_id="t1", task_status="succeed")))
    assert outcomes[0].done and outcomes[0].task is not None and outcomes[0].task.succeeded
    assert vendor.polls == {}
    # While it waited it kept its mark fresh (every renewal), and dropped it once done.
    assert store.wants >= 3 and store.unwanted == ["t1"]


async def test_the_leader_polls_on_for_waiters_elsewhere_then_gives_the_lease_up() -> None:
    vendor, store = Vendor(polls_needed=10_000), WaitedOnElsewhere()
    registry = fast_registry(vendor, store)
    async with anyio.create_task_group() as tg:
        registry.attach(tg)
        outcome = await registry.wait("t1", 0.3, nothing)
        assert not outcome.done
        assert store.asked == 0  # with a waiter here, the store is never asked about others
        polls = vendor.polls["t1"]
        await anyio.sleep(0.4)
        # No waiter here, one elsewhere: the same loop polls on and the lease is kept.
        assert vendor.polls["t1"] >= polls + 2 and store.released == []
        watcher = registry.find("t1")
        assert watcher is not None and watcher.running and watcher.waiters == 0
        # A new waiter here joins that loop (no second one: never two polls at once).
        await registry.wait("t1", 0.2, nothing)
        assert registry.find("t1") is watcher and vendor.max_in_flight == 1
        store.elsewhere = False  # the other process's waiters left
        await until(lambda: not watcher.running, 5)
        settled = vendor.polls["t1"]
        await anyio.sleep(0.3)
        assert vendor.polls["t1"] == settled
        assert store.released == ["t1"] and len(registry) == 0


async def test_a_follower_takes_a_free_lease_and_polls() -> None:
    vendor, store = Vendor(polls_needed=2), OtherLeads()
    registry = fast_registry(vendor, store)
    async with anyio.create_task_group() as tg:
        registry.attach(tg)
        outcomes = wait_in_background(tg, registry, "t1")
        await anyio.sleep(0.2)
        store.free = True  # the holder left or died
        assert store.handler is not None
        store.handler(TaskEvent("t1", "released"))
    assert outcomes[0].done and vendor.polls == {"t1": 2}
    assert store.released == ["t1"]  # given up once the task ended


async def test_a_failing_store_never_ends_a_wait() -> None:
    vendor = Vendor(polls_needed=3)
    registry = fast_registry(vendor, Broken())
    async with anyio.create_task_group() as tg:
        registry.attach(tg)
        outcome = await registry.wait("t1", 10, nothing)
    assert outcome.done and vendor.polls == {"t1": 3}  # it polled here instead


async def test_a_store_failing_on_the_waiting_marks_never_ends_a_wait() -> None:
    # The leader, asking about other waiters once its own left: the store fails, so it stops
    # as a lone process would (nothing escapes into the task group).
    vendor = Vendor(polls_needed=10_000)
    registry = fast_registry(vendor, Broken())
    async with anyio.create_task_group() as tg:
        registry.attach(tg)
        outcome = await registry.wait("t1", 0.2, nothing)
        assert not outcome.done and outcome.task is not None
        await until(lambda: len(registry) == 0, 5)
    # A follower whose marks fail still answers from the leader's states.
    follower = BrokenMarks()
    registry = fast_registry(vendor, follower)
    async with anyio.create_task_group() as tg:
        registry.attach(tg)
        outcomes = wait_in_background(tg, registry, "t2")
        await anyio.sleep(0.2)
        assert follower.handler is not None
        follower.handler(TaskEvent("t2", "state", TaskData(task_id="t2", task_status="succeed")))
    assert outcomes[0].done and "t2" not in vendor.polls
