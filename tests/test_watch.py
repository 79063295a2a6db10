"""The watcher on its own: one poll loop per task however many wait, woken by callbacks,
stopped when nobody waits, and a bug in one loop never takes the others down."""

from __future__ import annotations

import anyio
import pytest

from kling_omni_mcp.kling.errors import KlingServerError, KlingTaskNotFoundError
from kling_omni_mcp.kling.models import TaskData
from kling_omni_mcp.watch import WatcherRegistry

pytestmark = pytest.mark.anyio


class Vendor:
    """A task that finishes after ``polls_needed`` polls, counting them."""

    def __init__(self, polls_needed: int = 3) -> None:
        self.polls: dict[str, int] = {}
        self.polls_needed = polls_needed
        self.in_flight = 0
        self.max_in_flight = 0

    async def fetch(self, task_id: str) -> TaskData:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await anyio.sleep(0.01)
            count = self.polls[task_id] = self.polls.get(task_id, 0) + 1
            status = "succeed" if count >= self.polls_needed else "processing"
            return TaskData(task_id=task_id, task_status=status)
        finally:
            self.in_flight -= 1


async def nothing(_task: TaskData | None, _elapsed: float) -> None:
    return None


async def test_many_waiters_share_one_loop() -> None:
    vendor = Vendor(polls_needed=4)
    registry = WatcherRegistry(vendor.fetch, initial_interval=0.05, max_interval=0.05)
    outcomes = []
    async with anyio.create_task_group() as tg:
        registry.attach(tg)

        async def wait() -> None:
            outcomes.append(await registry.wait("t1", 10, nothing))

        for _ in range(20):
            tg.start_soon(wait)
    assert len(outcomes) == 20 and all(o.done for o in outcomes)
    assert vendor.polls["t1"] == 4  # one loop: exactly the polls the task needed
    assert vendor.max_in_flight == 1
    assert len(registry) == 0  # forgotten once nobody waits


async def test_budget_runs_out_then_loop_stops() -> None:
    vendor = Vendor(polls_needed=10_000)
    registry = WatcherRegistry(vendor.fetch, initial_interval=0.05, max_interval=0.05)
    async with anyio.create_task_group() as tg:
        registry.attach(tg)
        outcome = await registry.wait("slow", 0.3, nothing)
        assert not outcome.done and outcome.task is not None
        assert outcome.waited_seconds >= 0.3
        await anyio.sleep(0.2)
        settled = vendor.polls["slow"]
        await anyio.sleep(0.3)  # six intervals
        assert vendor.polls["slow"] == settled
        assert len(registry) == 0


async def test_wake_polls_at_once() -> None:
    vendor = Vendor(polls_needed=2)
    registry = WatcherRegistry(vendor.fetch, initial_interval=30, max_interval=30)
    async with anyio.create_task_group() as tg:
        registry.attach(tg)
        result = []
        finished = anyio.Event()

        async def wait() -> None:
            result.append(await registry.wait("cb", 60, nothing))
            finished.set()

        tg.start_soon(wait)
        await anyio.sleep(0.2)
        watcher = registry.find("cb")
        assert watcher is not None and vendor.polls["cb"] == 1
        with anyio.fail_after(5):  # the next poll would be 30 s away
            watcher.wake()
            await finished.wait()
    assert result[0].done


async def test_heartbeat_ticks_while_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    vendor = Vendor(polls_needed=10_000)
    registry = WatcherRegistry(vendor.fetch, initial_interval=30, max_interval=30)
    ticks: list[float] = []

    async def tick(_task: TaskData | None, elapsed: float) -> None:
        ticks.append(elapsed)

    monkeypatch.setattr("kling_omni_mcp.watch.HEARTBEAT_SECONDS", 0.1)
    async with anyio.create_task_group() as tg:
        registry.attach(tg)
        await registry.wait("quiet", 0.55, tick)
        tg.cancel_scope.cancel()
    assert len(ticks) >= 4  # one poll only, yet the waiter heard from the watcher every 0.1 s


async def test_waiters_keep_hearing_while_the_vendor_is_slow_to_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A poll that takes long (a dripping vendor, retries) must not silence the progress a host
    needs to keep the call alive: the heartbeat does not wait for the poll loop."""

    async def slow(task_id: str) -> TaskData:
        await anyio.sleep(1.0)
        return TaskData(task_id=task_id, task_status="processing")

    registry = WatcherRegistry(slow, initial_interval=30, max_interval=30)
    ticks: list[float] = []

    async def tick(_task: TaskData | None, elapsed: float) -> None:
        ticks.append(elapsed)

    monkeypatch.setattr("kling_omni_mcp.watch.HEARTBEAT_SECONDS", 0.1)
    async with anyio.create_task_group() as tg:
        registry.attach(tg)
        await registry.wait("slow", 0.75, tick)
        tg.cancel_scope.cancel()
    # The first poll never answered within the wait, yet the waiter heard every ~0.1 s.
    assert len(ticks) >= 4, ticks
    assert max(b - a for a, b in zip([0.0, *ticks], ticks, strict=False)) < 0.5, ticks


async def test_final_errors_reach_waiters_and_bugs_stay_contained() -> None:
    async def missing(task_id: str) -> TaskData:
        raise KlingTaskNotFoundError("no such task", code=1201)

    async def buggy(task_id: str) -> TaskData:
        raise ZeroDivisionError("a bug")

    flaky_calls = 0

    async def flaky(task_id: str) -> TaskData:
        nonlocal flaky_calls
        flaky_calls += 1
        if flaky_calls < 3:
            raise KlingServerError("down", retryable=True)
        return TaskData(task_id=task_id, task_status="succeed")

    async with anyio.create_task_group() as tg:
        for fetch, expected in ((missing, KlingTaskNotFoundError), (buggy, ZeroDivisionError)):
            registry = WatcherRegistry(fetch, initial_interval=0.02, max_interval=0.02)
            registry.attach(tg)
            with pytest.raises(expected):
                await registry.wait("x", 5, nothing)
        registry = WatcherRegistry(flaky, initial_interval=0.02, max_interval=0.02)
        registry.attach(tg)
        outcome = await registry.wait("y", 5, nothing)
        assert outcome.done and flaky_calls == 3  # transient errors are waited through


class TwoIdVendor:
    """One task known by its task id ``T`` and its external id ``E``; finishes after N polls."""

    def __init__(self, polls_needed: int) -> None:
        self.polls: dict[str, int] = {"T": 0, "E": 0}
        self.polls_needed = polls_needed

    async def fetch(self, key: str) -> TaskData:
        await anyio.sleep(0.01)
        self.polls[key] += 1
        done = sum(self.polls.values()) >= self.polls_needed
        return TaskData.model_validate(
            {
                "task_id": "T",
                "task_status": "succeed" if done else "processing",
                "task_info": {"external_task_id": "E"},
            }
        )


@pytest.mark.parametrize("first", ["T", "E"])
async def test_waiters_on_either_id_share_one_loop(first: str) -> None:
    vendor = TwoIdVendor(polls_needed=6)
    registry = WatcherRegistry(vendor.fetch, initial_interval=0.03, max_interval=0.03)
    outcomes = []

    async def wait(key: str) -> None:
        outcomes.append(await registry.wait(key, 10, nothing))

    async with anyio.create_task_group() as tg:
        registry.attach(tg)
        tg.start_soon(wait, first)
        tg.start_soon(wait, "E" if first == "T" else "T")
    assert len(outcomes) == 2 and all(o.done and o.task is not None for o in outcomes)
    # The second id cost at most its first poll; the rest was one loop.
    assert min(vendor.polls.values()) <= 1, vendor.polls
    assert len(registry) == 0


async def test_after_the_first_poll_the_other_id_finds_the_same_watcher() -> None:
    vendor = TwoIdVendor(polls_needed=10_000)
    registry = WatcherRegistry(vendor.fetch, initial_interval=30, max_interval=30)
    async with anyio.create_task_group() as tg:
        registry.attach(tg)
        tg.start_soon(registry.wait, "E", 60, nothing)
        await anyio.sleep(0.2)  # the first poll answered with both ids
        watcher = registry.find("T")
        assert watcher is not None and watcher is registry.find("E")
        assert registry.get("T") is watcher  # a new wait by task id joins it
        tg.cancel_scope.cancel()
