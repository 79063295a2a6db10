"""``StatusSweeper`` against the simulator over loopback HTTP, in a real task group: a few polled
tasks are queried one by one; 20 or more are answered from list sweeps (tasks that end are
reported at once, tasks the pages do not show are queried on their own, a failing list falls back
to queries); and sweeps stop once nobody asks any more."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import pytest
from anyio.abc import TaskGroup

from kling_omni_mcp.kling import ApiKeyAuth, CreateImageRequest, KlingClient, RetryPolicy, status_sweep
from kling_omni_mcp.kling.models import TaskData
from kling_omni_mcp.kling.status_sweep import SWEEP_FROM, StatusSweeper
from kling_omni_mcp.simulator import Simulator
from tests.conftest import TEST_API_KEY, serve_sim

pytestmark = pytest.mark.anyio

#: Fast retries: a failing list gives up within a fraction of a second.
QUICK = RetryPolicy(max_attempts=2, base_delay=0.02, max_delay=0.05, deadline=5.0, concurrency_min_delay=0.05)
#: Long enough that no task ends on its own during a test (tests end tasks with ``fail_task``).
LONG_TASKS = 120.0
#: Generous bound for "about one sweep" on a loaded machine.
MARGIN = 4.0


@dataclass
class Rig:
    sim: Simulator
    client: KlingClient
    sweeper: StatusSweeper
    task_group: TaskGroup
    finals: list[TaskData] = field(default_factory=list)
    final_seen: anyio.Event = field(default_factory=anyio.Event)

    async def create(self, count: int, prefix: str) -> list[str]:
        """``count`` new tasks (external ids ``<prefix>-<n>``), oldest first; their task ids."""
        ids = []
        for n in range(count):
            request = CreateImageRequest.model_validate(
                {"prompt": f"sweep test {n}", "external_task_id": f"{prefix}-{n}"}
            )
            ids.append((await self.client.create_task(request)).task_id)
        return ids

    async def poll_all(self, keys: list[str]) -> dict[str, TaskData]:
        """One ``get`` per key, all at once, as concurrent watchers would."""
        found: dict[str, TaskData] = {}

        async def one(key: str) -> None:
            found[key] = await self.sweeper.get(key)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for key in keys:
                    tg.start_soon(one, key)
        return found

    def assert_states(self, found: dict[str, TaskData]) -> None:
        """Each answer is the task asked about, in the state the simulator has for it now
        (one sweep may lag a change by about a second: compare with the final ones only)."""
        for key, task in found.items():
            record = self.sim.get_task(key)
            assert record is not None
            assert task.task_id == record.task_id, key
            if self.sim.status_of(key) in ("succeed", "failed") and task.is_final:
                assert task.task_status == self.sim.status_of(key)


@asynccontextmanager
async def rig(*, attach: bool = True, **sim_config: object) -> AsyncIterator[Rig]:
    """A simulator, a real client, and a sweeper running sweeps in a real task group."""
    async with (
        serve_sim(**{"duration": LONG_TASKS, **sim_config}) as handle,
        KlingClient(handle.base_url, ApiKeyAuth(TEST_API_KEY), retry=QUICK, timeout=10) as client,
        anyio.create_task_group() as tg,
    ):
        holder: list[Rig] = []

        def on_final(task: TaskData) -> None:
            holder[0].finals.append(task)
            holder[0].final_seen.set()

        sweeper = StatusSweeper(lambda: client, on_final=on_final)
        if attach:
            sweeper.attach(tg)
        holder.append(Rig(handle.sim, client, sweeper, tg))
        yield holder[0]
        tg.cancel_scope.cancel()


async def warm_up(r: Rig, keys: list[str]) -> None:
    """Ask for every key once (the first ``SWEEP_FROM - 1`` are queried before sweeps begin),
    then start counting afresh."""
    r.assert_states(await r.poll_all(keys))
    assert r.sweeper.sweeping
    r.sim.counters.reset()


@pytest.mark.parametrize(
    ("tasks", "attach"),
    [(3, True), (SWEEP_FROM - 1, True), (25, False)],
    ids=["few", "just-below-threshold", "many-without-task-group"],
)
async def test_without_sweeps_every_poll_is_one_status_query(tasks: int, attach: bool) -> None:
    async with rig(attach=attach) as r:
        ids = await r.create(tasks, "few")
        for _ in range(3):
            r.assert_states(await r.poll_all(ids))
        assert not r.sweeper.sweeping
        counters = r.sim.counters
        assert counters.lists == 0
        assert counters.queries == 3 * tasks
        assert all(counters.queries_by_id[task_id] == 3 for task_id in ids)
        assert r.sweeper.sweeps == 0


async def test_many_polled_tasks_are_answered_from_list_sweeps() -> None:
    async with rig() as r:
        ids = await r.create(25, "many")
        # Five tasks are asked about by their external id, as a wait by external id polls.
        keys = ids[:20] + [f"many-{n}" for n in range(20, 25)]
        first = await r.poll_all(keys)
        r.assert_states(first)
        # Below the threshold the first polls were queries; from the 20th on, a sweep answered.
        assert r.sim.counters.queries == SWEEP_FROM - 1
        assert r.sim.counters.lists >= 1
        r.sim.counters.reset()
        began = time.monotonic()
        for _ in range(3):
            await anyio.sleep(0.4)
            found = await r.poll_all(keys)
            r.assert_states(found)
            assert {task.task_id for task in found.values()} == set(ids)
        counters = r.sim.counters
        assert counters.queries == 0, dict(counters.queries_by_id)
        # 75 polls cost a handful of one-page lists: one per sweep, at most one sweep a second.
        elapsed = time.monotonic() - began
        assert 1 <= counters.lists <= elapsed / status_sweep.SWEEP_SECONDS + 2, elapsed
        assert r.sweeper.sweeps >= 1
        assert r.finals == []  # nothing ended


async def test_a_task_that_ends_is_reported_within_about_one_sweep() -> None:
    async with rig() as r:
        ids = await r.create(25, "ends")
        await warm_up(r, ids)
        stop = anyio.Event()

        async def keep_polling() -> None:
            # Watchers poll every second or so; the sweep, not these polls, must find the end.
            while not stop.is_set():
                await r.poll_all(ids)
                with anyio.move_on_after(1.0):
                    await stop.wait()

        r.task_group.start_soon(keep_polling)
        await anyio.sleep(0.3)
        ended = ids[7]
        r.sim.fail_task(ended, "Refused (test)", immediately=True)
        began = time.monotonic()
        with anyio.fail_after(status_sweep.SWEEP_SECONDS + MARGIN):
            await r.final_seen.wait()
        delay = time.monotonic() - began
        await anyio.sleep(1.5)  # more sweeps see it final again: it is reported only once
        stop.set()
        assert [task.task_id for task in r.finals] == [ended], delay
        assert r.finals[0].task_status == "failed"
        assert r.finals[0].task_status_msg == "Refused (test)"
        # The poll of the ended task is answered from the sweep too, final.
        assert (await r.sweeper.get(ended)).task_status == "failed"
        assert r.sim.counters.queries == 0


async def test_polled_tasks_behind_newer_ones_are_found_on_later_pages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Small pages stand in for 500-row ones: the 25 polled tasks sit behind 12 newer ones
    # (another client's), on pages 3 to 8 of 5 rows each.
    monkeypatch.setattr(status_sweep, "PAGE_SIZE", 5)
    monkeypatch.setattr(status_sweep, "MAX_PAGES", 10)
    async with rig() as r:
        ids = await r.create(25, "behind")
        await r.create(12, "newer")
        await warm_up(r, ids)
        await anyio.sleep(1.1)
        found = await r.poll_all(ids)
        r.assert_states(found)
        counters = r.sim.counters
        assert counters.queries == 0, dict(counters.queries_by_id)
        assert counters.lists >= 8  # one sweep read pages 1 to 8


async def test_tasks_the_pages_do_not_show_are_queried_on_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # Four pages of five rows: 10 newer tasks, then the 10 newest polled ones. The 15 oldest
    # polled tasks are further back than a sweep reads.
    monkeypatch.setattr(status_sweep, "PAGE_SIZE", 5)
    monkeypatch.setattr(status_sweep, "MAX_PAGES", 4)
    async with rig() as r:
        ids = await r.create(25, "old")
        await r.create(10, "newer")
        await warm_up(r, ids)
        unlisted, listed = ids[:15], ids[15:]
        for _ in range(2):
            await anyio.sleep(1.1)
            r.assert_states(await r.poll_all(ids))
        counters = r.sim.counters
        assert all(counters.queries_by_id[task_id] >= 1 for task_id in unlisted), dict(counters.queries_by_id)
        assert all(counters.queries_by_id[task_id] == 0 for task_id in listed), dict(counters.queries_by_id)
        # A sweep never reads more than MAX_PAGES pages.
        assert r.sweeper.pages <= 4 * max(1, r.sweeper.sweeps)


async def test_a_failing_list_falls_back_to_status_queries() -> None:
    async with rig() as r:
        ids = await r.create(25, "fails")
        await warm_up(r, ids)
        sweeps = r.sweeper.sweeps
        r.sim.faults.fail_next(1000, http_status=503, code=5001, message="List down (test)", kind="list")
        await anyio.sleep(1.1)
        for _ in range(2):
            found = await r.poll_all(ids)  # no exception: every poll is answered
            r.assert_states(found)
            assert set(found) == set(ids)
        counters = r.sim.counters
        assert counters.lists >= 1 and counters.faults_served >= 1  # sweeps were tried, and failed
        assert all(counters.queries_by_id[task_id] >= 1 for task_id in ids)
        assert r.sweeper.sweeps == sweeps  # no sweep completed
        # The list is back: sweeps answer the polls again (the sweep loop survived the failures).
        r.sim.faults.clear()
        await anyio.sleep(1.1)
        r.sim.counters.reset()
        await anyio.sleep(1.1)
        r.assert_states(await r.poll_all(ids))
        assert r.sim.counters.queries == 0
        assert r.sweeper.sweeps > sweeps


async def test_sweeps_stop_once_nobody_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_sweep, "INTEREST_SECONDS", 0.5)
    async with rig() as r:
        ids = await r.create(25, "stops")
        await warm_up(r, ids)
        # Nobody polls any more (every watcher ended): within a few seconds sweeps stop...
        with anyio.fail_after(MARGIN + 2):
            while r.sweeper.sweeping:  # noqa: ASYNC110 - the sweeper has no event to wait on
                await anyio.sleep(0.1)
        await anyio.sleep(status_sweep.SWEEP_SECONDS + 0.5)  # a sweep under way finishes
        lists = r.sim.counters.lists
        await anyio.sleep(2.0)  # two sweep periods
        assert r.sim.counters.lists == lists  # ...and the list is no longer read
        # A few tasks polled again are queried one by one.
        r.sim.counters.reset()
        r.assert_states(await r.poll_all(ids[:3]))
        assert r.sim.counters.queries == 3 and r.sim.counters.lists == 0
