"""Task states for the poll loops: one query per poll for a few tasks, one list sweep for many.

Each watched task's poll loop asks for its task's state every 1 to 2.5 s. For a handful of tasks
that is one ``GET /v1/images/omni-image/{id}`` each, as it always was. For hundreds it is
hundreds of requests a second: the vendor's rate limits (1302/1303) answer them, and the
server spends its CPU on HTTP (profiled with 1,000 watched tasks: about a core on polling
alone). So once ``SWEEP_FROM`` tasks or more are being polled, the states come from the list
endpoint instead: every ``SWEEP_SECONDS`` one sweep reads the newest tasks 500 at a time
(``pageNum`` 1, 2, ... until every polled task is found) and answers every poll from it. A poll
then waits at most one sweep, and a task the sweep sees end wakes its watcher at once
(``on_final``), so an answer comes at most about a sweep after the task ends.

A task the list does not show (older than the pages read) is queried on its own, as is every
task while a sweep fails: a sweep never makes a poll fail that a query would have answered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup

from kling_omni_mcp.kling.client import KlingClient
from kling_omni_mcp.kling.errors import KlingError
from kling_omni_mcp.kling.models import TaskData

__all__ = ["SWEEP_FROM", "SWEEP_SECONDS", "StatusSweeper"]

logger = logging.getLogger(__name__)

#: Tasks polled at once from which the list sweep replaces per-task queries.
SWEEP_FROM = 20
#: Seconds between sweeps (a poll in sweep mode waits at most about this long).
SWEEP_SECONDS = 1.0
#: The list endpoint's largest page.
PAGE_SIZE = 500
#: Pages one sweep reads at most (5,000 tasks); tasks further back are queried one by one.
MAX_PAGES = 10
#: A task not asked about for this long is no longer polled (its watcher ended).
INTEREST_SECONDS = 8.0
#: A task the list did not show is queried on its own for this long before the list is tried again.
UNLISTED_SECONDS = 60.0


@dataclass
class _Sweep:
    """One sweep's outcome, awaited by the polls that wait for it."""

    done: anyio.Event = field(default_factory=anyio.Event)
    found: dict[str, TaskData] = field(default_factory=dict)


class StatusSweeper:
    """``get(key)``: the state of a task by id or external id, from a query or from a sweep."""

    def __init__(
        self,
        client: Callable[[], KlingClient],
        *,
        on_final: Callable[[TaskData], None] | None = None,
        sweep_from: int = SWEEP_FROM,
        sweep_seconds: float = SWEEP_SECONDS,
    ) -> None:
        self._client = client
        self._on_final = on_final
        self._sweep_from = sweep_from
        self._period = sweep_seconds
        #: key → when a poll last asked for it.
        self._interest: dict[str, float] = {}
        #: key → the latest state a sweep found, and when.
        self._seen: dict[str, tuple[float, TaskData]] = {}
        self._unlisted: dict[str, float] = {}
        #: key → its raw list row last sweep (only compared, never shown): unchanged rows are reused.
        self._raw: dict[str, object] = {}
        self._pruned = 0.0
        self._next = _Sweep()
        self._running = False
        self._task_group: TaskGroup | None = None
        #: Sweeps made and list pages read (for tests and benchmarks).
        self.sweeps = 0
        self.pages = 0

    def attach(self, task_group: TaskGroup) -> None:
        """Run sweeps in ``task_group`` (the server lifespan's). Without it, every poll queries."""
        self._task_group = task_group

    @property
    def sweeping(self) -> bool:
        """Whether enough tasks are polled for sweeps to answer them."""
        return len(self._interest) >= self._sweep_from and self._task_group is not None

    async def get(self, key: str) -> TaskData:
        """The task's current state (at most about one sweep old in sweep mode)."""
        now = time.monotonic()
        self._interest[key] = now
        self._forget_stale(now)
        if not self.sweeping or self._unlisted.get(key, 0.0) > now:
            return await self._client().get_task(key)
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self._period:
            return seen[1]
        self._start()
        sweep = self._next
        await sweep.done.wait()
        found = sweep.found.get(key)
        if found is not None:
            return found
        return await self._client().get_task(key)

    def _forget_stale(self, now: float) -> None:
        if now - self._pruned < 1.0:
            return  # at most once a second: not a scan of every task on every poll
        self._pruned = now
        for key in [k for k, at in self._interest.items() if now - at > INTEREST_SECONDS]:
            del self._interest[key]
            self._seen.pop(key, None)
            self._raw.pop(key, None)
        for key in [k for k, until in self._unlisted.items() if until <= now]:
            del self._unlisted[key]

    def _start(self) -> None:
        if not self._running and self._task_group is not None:
            self._running = True
            self._task_group.start_soon(self._sweep_loop, name="status-sweep")

    async def _sweep_loop(self) -> None:
        """Sweep every ``SWEEP_SECONDS`` while enough tasks are polled."""
        try:
            # Prune here too: once the watchers end nobody calls ``get``, and their tasks must
            # stop counting, or sweeps would go on for ever.
            while True:
                self._forget_stale(time.monotonic())
                if not self.sweeping:
                    break
                began = anyio.current_time()
                sweep, self._next = self._next, _Sweep()
                try:
                    await self._sweep(sweep)
                except Exception as exc:  # the polls waiting on it query on their own
                    what = exc.message if isinstance(exc, KlingError) else type(exc).__name__
                    logger.info("Task list sweep failed (%s): querying tasks one by one", what)
                finally:
                    sweep.done.set()
                await anyio.sleep(max(0.0, began + self._period - anyio.current_time()))
        finally:
            self._running = False
            # Polls that arrived after the last sweep must not wait for one that never comes.
            self._next.done.set()
            self._next = _Sweep()

    async def _sweep(self, sweep: _Sweep) -> None:
        wanted = set(self._interest) - {k for k, until in self._unlisted.items() if until > time.monotonic()}
        client = self._client()
        # Up to MAX_PAGES, not a count guessed from len(wanted): other clients' newer tasks (other
        # replicas, other apps on the account) can push the polled ones further back.
        for page in range(1, MAX_PAGES + 1):
            match = await client.list_matching(wanted, page=page, page_size=PAGE_SIZE, previous=self._raw)
            self.pages += 1
            for task in match.tasks:
                for key in (task.task_id, task.external_task_id):
                    if key and key in wanted:
                        wanted.discard(key)
                        self._record(key, task, sweep)
            for key in match.unchanged:
                seen = self._seen.get(key)
                if seen is not None and key in wanted:
                    # The same row as last sweep: the same state, not cleaned and checked again.
                    wanted.discard(key)
                    self._record(key, seen[1], sweep)
            self._raw.update(match.raw)
            if not wanted or match.held < PAGE_SIZE:
                break
        self.sweeps += 1
        until = time.monotonic() + UNLISTED_SECONDS
        for key in wanted:
            self._unlisted[key] = until

    def _record(self, key: str, task: TaskData, sweep: _Sweep) -> None:
        before = self._seen.get(key)
        self._seen[key] = (time.monotonic(), task)
        sweep.found[key] = task
        if task.is_final and (before is None or not before[1].is_final) and self._on_final is not None:
            self._on_final(task)
