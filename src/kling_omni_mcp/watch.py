"""One watcher per task, shared by every waiter.

A ``TaskWatcher`` polls one task while at least one caller waits on it, backing off from
``initial_interval`` to ``max_interval``. Any number of waiters (two ``wait_for_task`` calls,
the CLI, a callback) share its single poll loop: a task is never polled twice at once. A vendor
callback calls ``wake()`` so the next poll happens at once instead of at the end of the interval.

The poll loops run in a task group owned by ``WatcherRegistry`` (opened by the server's
lifespan), not in any waiter's request, so a waiter that is cancelled or times out never takes
the loop down with it; the loop ends by itself when the last waiter leaves or the task ends.
The registry keeps a watcher while its loop runs, so a new waiter joins that loop.

A task has two ids (``task_id`` and the caller's ``external_task_id``) and a waiter may use
either. The first answer of a poll tells both, so the registry then records the other id as an
alias; if a second watcher was started under the other id meanwhile, the one not keyed by the
``task_id`` hands its waiters over to the one that is, and stops polling. Either way one loop
polls the task, and a callback naming either id wakes it.

Across replicas (``store``): a watcher polls only while it holds the task's poll lease
(``StateStore.lead``, renewed every ``renew_seconds`` while it sleeps), and shares each state it
sees; a watcher that does not hold it follows, answering its waiters from the states the
leader publishes, marking that its process has waiters (``want``, refreshed as often; the mark
lapses if its process dies) and taking the lease when it falls free (its holder gave it up or
died). The lease is given up when the last waiter *anywhere* leaves: when the leader's own last
waiter leaves, it asks whether another process still has waiters (``wanted_elsewhere``, asked
only then, so the common case costs nothing) and goes on polling for them, with no waiter of
its own, until their marks are gone. So a waiter leaving one replica never hands the polling to
another. In one process the store always grants the lease and nobody else waits, so this is
the plain loop described above.

(Longer than most modules: the watcher, its registry and the lease rules are one mechanism.)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup

from kling_omni_mcp.kling.errors import KlingError, KlingResponseError, KlingTransportError
from kling_omni_mcp.kling.models import TaskData
from kling_omni_mcp.store import TaskEvent
from kling_omni_mcp.store.solo import SoloLease

if TYPE_CHECKING:
    from kling_omni_mcp.store import StateStore

__all__ = ["TaskWatcher", "WaitOutcome", "WatcherRegistry"]

logger = logging.getLogger(__name__)

#: How often a waiter hears from the watcher even when nothing changed (progress heartbeat).
HEARTBEAT_SECONDS = 4.0
#: Longest wait for the shared store when a poll loop ends (it then lapses by itself).
_RELEASE_TIMEOUT = 2.0

# No answer, or a garbled one, is worth waiting through even when the client gave up on it:
# the task itself is still running at the vendor.
_TRANSIENT = (KlingTransportError, KlingResponseError)

Fetch = Callable[[str], Awaitable[TaskData]]
OnTick = Callable[[TaskData | None, float], Awaitable[None]]
#: Told of every task state a watcher sees; returns the watcher to hand over to, if any.
OnSeen = Callable[["TaskWatcher", TaskData], "TaskWatcher | None"]


@dataclass(frozen=True)
class WaitOutcome:
    """What a wait ended with: the latest task state, whether it is final, and the time waited."""

    task: TaskData | None
    done: bool
    waited_seconds: float


class TaskWatcher:
    """Polls one task until it ends or nobody waits; wakes every waiter on each new state."""

    def __init__(
        self,
        key: str,
        fetch: Fetch,
        *,
        initial_interval: float,
        max_interval: float,
        on_idle: Callable[[TaskWatcher], None],
        on_seen: OnSeen | None = None,
        shared: StateStore | SoloLease | None = None,
    ) -> None:
        self.key = key
        self._shared: StateStore | SoloLease = shared or SoloLease()
        self._fetch = fetch
        self._initial = max(0.05, initial_interval)
        self._max = max(self._initial, max_interval)
        self._on_idle = on_idle
        self._on_seen = on_seen
        self.latest: TaskData | None = None
        #: A final error (e.g. the task does not exist, or a bug); waiters raise it.
        self.error: Exception | None = None
        #: The watcher of the same task under its other id, once known: waiters move there.
        self.handed_to: TaskWatcher | None = None
        self._waiters = 0
        self._running = False
        self._changed = anyio.Event()
        self._published_at = 0.0
        self._wake = anyio.Event()

    @property
    def waiters(self) -> int:
        return self._waiters

    @property
    def running(self) -> bool:
        return self._running

    @property
    def finished(self) -> bool:
        return self.error is not None or (self.latest is not None and self.latest.is_final)

    def wake(self) -> None:
        """Poll now (a callback said the task changed)."""
        self._wake.set()

    def observe(self, task: TaskData) -> None:
        """Record a state seen elsewhere (e.g. a get_task call) and wake the waiters."""
        self.latest = task
        self._publish()

    def _publish(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        self._published_at = anyio.current_time()
        changed.set()

    def heartbeat(self) -> None:
        """Wake the waiters if they have heard nothing for ``HEARTBEAT_SECONDS`` (their progress)."""
        if anyio.current_time() - self._published_at >= HEARTBEAT_SECONDS:
            self._publish()

    async def run(self) -> None:
        """The poll loop. Ends when the task is final or nobody waits on it: here, or (while this
        process leads) in another process."""
        interval = self._initial
        leading = False
        marked = False  # this process's "waiters here" mark may be in the store
        next_mark = anyio.current_time()
        try:
            while not self.finished and self.handed_to is None and await self._wanted(leading):
                leading = await self._lead()
                if not leading:
                    # Another replica polls and publishes; keep its lease alive for our waiters
                    # (even once its own left), and look for a free lease now and then.
                    now = anyio.current_time()
                    if now >= next_mark:
                        marked = True
                        await self._want()
                        next_mark = now + self._shared.renew_seconds
                    with anyio.move_on_after(next_mark - anyio.current_time()):
                        await self._wake.wait()
                    self._wake = anyio.Event()
                    continue
                before = self.latest
                try:
                    self.latest = await self._fetch(self.key)
                    if self._on_seen is not None:
                        self.handed_to = self._on_seen(self, self.latest)
                except KlingError as exc:
                    if exc.retryable or isinstance(exc, _TRANSIENT):
                        # The client already retried within its own deadline; keep watching.
                        logger.info("Task %s: poll failed, will retry: %s", self.key, exc.message)
                    else:
                        self.error = exc
                except Exception as exc:
                    # A bug must end this task's wait with an error, never take down the task
                    # group that every other watcher (and the server's lifespan) runs in.
                    logger.exception("Task %s: unexpected error while polling", self.key)
                    self.error = exc
                # Only news wakes the waiters and the other replicas: with thousands of waiters, a
                # wake per unchanged poll cost more CPU than the polls (the heartbeat still ticks).
                if self.error is not None or (self.latest is not before and self.latest != before):
                    self._publish()
                    if self.error is None and self.latest is not None:
                        await self._share(self.latest)
                if self.finished or self.handed_to is not None:
                    break
                leading = await self._sleep(interval)
                interval = min(self._max, interval * 1.6)
        finally:
            await self._leave(marked)
            self._running = False
            self._publish()
            if self._waiters == 0:
                self._on_idle(self)

    async def _leave(self, marked: bool) -> None:
        """The loop ended: drop this process's mark, and give the lease up unless a waiter here
        still needs it (a loop cancelled under its waiters lets the lease lapse instead)."""
        steps = [self._shared.unwant] if marked else []
        if self._waiters == 0 or self.finished or self.handed_to is not None:
            steps.append(self._shared.release)
        with anyio.CancelScope(shield=True), anyio.move_on_after(_RELEASE_TIMEOUT):
            for step in steps:
                try:
                    await step(self.key)
                except Exception:
                    logger.exception("Task %s: %s failed (it lapses by itself)", self.key, step.__name__)

    async def _wanted(self, leading: bool) -> bool:
        """Whether to go on: a waiter here, or, while this process leads, one in another process
        (the store is asked only when none is here)."""
        return self._waiters > 0 or (leading and await self._wanted_elsewhere())

    async def _lead(self) -> bool:
        """Whether to poll now. A store that fails (a bug; Redis outages it handles itself)
        must not end the wait, nor the task group every watcher runs in: poll here then."""
        try:
            return await self._shared.lead(self.key)
        except Exception:
            logger.exception("Task %s: the shared store failed; polling in this process", self.key)
            return True

    async def _want(self) -> None:
        """Mark (or refresh) that this process has waiters; a store failure must not end them."""
        try:
            await self._shared.want(self.key)
        except Exception:
            logger.exception("Task %s: marking this process's waiters in the shared store failed", self.key)

    async def _wanted_elsewhere(self) -> bool:
        """Whether another process has waiters; as a lone process would answer if the store fails."""
        try:
            return await self._shared.wanted_elsewhere(self.key)
        except Exception:
            logger.exception("Task %s: asking the shared store for other waiters failed", self.key)
            return False

    async def _share(self, task: TaskData) -> None:
        """Tell the other replicas (their watchers follow this one) and record the state."""
        try:
            await self._shared.put_task(task)
            for key in dict.fromkeys((self.key, task.task_id)):
                await self._shared.publish(TaskEvent(key, "state", task))
        except Exception:
            logger.exception("Task %s: sharing its state failed", self.key)

    async def _sleep(self, interval: float) -> bool:
        """Sleep for ``interval`` or until woken, renewing the lease. False when this process is
        to stop leading: the lease was lost, or no waiter is left anywhere (the loop then gives
        the lease up at once)."""
        end = anyio.current_time() + interval
        leading = True
        while not self._wake.is_set():
            remaining = end - anyio.current_time()
            if remaining <= 0:
                break
            with anyio.move_on_after(min(remaining, self._shared.renew_seconds)):
                await self._wake.wait()
            if self._wake.is_set() or anyio.current_time() >= end:
                break
            if not await self._wanted(True) or not await self._lead():
                leading = False
                break
        self._wake = anyio.Event()
        return leading

    async def wait(self, budget: float, on_tick: OnTick, start: Callable[[TaskWatcher], None]) -> WaitOutcome:
        """Wait up to ``budget`` seconds for the task to end, calling ``on_tick`` with the latest
        state and the seconds waited so far on every change, and at most ``HEARTBEAT_SECONDS`` (+ one
        check interval) apart when nothing changes (the registry's heartbeat)."""
        began = anyio.current_time()
        deadline = began + max(0.0, budget)
        self._waiters += 1
        try:
            if not self._running and not self.finished:
                self._running = True
                start(self)
            # One deadline for the whole wait: the ticks in between come from the registry's
            # heartbeat (``heartbeat``), not from a timer per waiter; with 10,000 waiters those
            # timers firing every few seconds cost most of a core.
            with anyio.CancelScope(deadline=deadline):
                while True:
                    if self.error is not None:
                        raise self.error
                    if self.handed_to is not None and not self.finished:
                        remaining = deadline - anyio.current_time()
                        return await self._follow(self.handed_to, began, remaining, on_tick, start)
                    if self.finished:
                        return WaitOutcome(self.latest, True, anyio.current_time() - began)
                    if not self._running:
                        # The loop ended (e.g. after a cancelled waiter left) but we still wait.
                        self._running = True
                        start(self)
                    await self._changed.wait()
                    await on_tick(self.latest, anyio.current_time() - began)
            if self.error is not None:
                raise self.error
            return WaitOutcome(self.latest, self.finished, anyio.current_time() - began)
        finally:
            self._waiters -= 1
            if self._waiters == 0 and not self._running:
                self._on_idle(self)

    @staticmethod
    async def _follow(
        other: TaskWatcher,
        began: float,
        remaining: float,
        on_tick: OnTick,
        start: Callable[[TaskWatcher], None],
    ) -> WaitOutcome:
        """Go on waiting on ``other`` with the time left, reporting time since ``began``."""
        offset = anyio.current_time() - began

        async def tick(task: TaskData | None, elapsed: float) -> None:
            await on_tick(task, offset + elapsed)

        outcome = await other.wait(max(0.0, remaining), tick, start)
        return WaitOutcome(outcome.task, outcome.done, offset + outcome.waited_seconds)


class WatcherRegistry:
    """Holds the live watchers, one per task key, and the task group their loops run in."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        initial_interval: float,
        max_interval: float,
        shared: StateStore | None = None,
    ) -> None:
        self._fetch = fetch
        self._shared: StateStore | SoloLease = shared or SoloLease()
        self._shared.on_event(self._on_event)
        self._initial = initial_interval
        self._max = max_interval
        self._watchers: dict[str, TaskWatcher] = {}
        self._aliases: dict[str, str] = {}
        self._task_group: TaskGroup | None = None
        self._beating = False

    def attach(self, task_group: TaskGroup) -> None:
        """Give the registry the task group its poll loops run in (opened by the lifespan)."""
        self._task_group = task_group

    def __len__(self) -> int:
        return len(self._watchers)

    @property
    def waiting(self) -> int:
        """Waits in progress in this process, on every task together."""
        return sum(watcher.waiters for watcher in self._watchers.values())

    def get(self, key: str) -> TaskWatcher:
        """The watcher for a task id or external id, created on first use."""
        canonical = self._aliases.get(key, key)
        watcher = self._watchers.get(canonical)
        if watcher is None:
            watcher = TaskWatcher(
                canonical,
                self._fetch,
                initial_interval=self._initial,
                max_interval=self._max,
                on_idle=self._forget,
                on_seen=self._seen,
                shared=self._shared,
            )
            self._watchers[canonical] = watcher
        return watcher

    def find(self, *keys: str | None) -> TaskWatcher | None:
        """The live watcher for any of these ids, if one exists (for callbacks)."""
        for key in keys:
            if key is None:
                continue
            canonical = self._aliases.get(key, key)
            if canonical in self._watchers:
                return self._watchers[canonical]
        return None

    def _seen(self, watcher: TaskWatcher, task: TaskData) -> TaskWatcher | None:
        """A poll answered: record the task's other id, or hand over to its other watcher."""
        if watcher.key != task.task_id:
            other = self._watchers.get(task.task_id)
            if other is not None and other is not watcher:
                # Two loops for one task: the one keyed by the task id stays.
                self._aliases[watcher.key] = other.key
                return other
        for key in (task.task_id, task.external_task_id):
            if key and key != watcher.key and key not in self._watchers:
                self._aliases[key] = watcher.key
        return None

    async def wait(self, key: str, budget: float, on_tick: OnTick) -> WaitOutcome:
        """Wait on the shared watcher for ``key`` (a task id or an external id)."""
        if key not in self._aliases and key not in self._watchers:
            key = await self._shared.resolve(key)
        watcher = self.get(key)
        if watcher.latest is None and not watcher.running:
            # Another replica may have seen it finish already: no need to ask the vendor again.
            recorded = await self._shared.get_task(key)
            if recorded is not None and recorded.is_final and watcher.latest is None:
                watcher.observe(recorded)
        return await watcher.wait(budget, on_tick, self._start)

    def wake_everywhere(self, *keys: str | None) -> bool:
        """A callback named these ids: poll now, here and in every replica. False when no
        watcher of this process watches the task."""
        local = self.find(*keys)
        if local is not None:
            local.wake()
        if self._task_group is not None:
            for key in dict.fromkeys(k for k in keys if k):
                self._task_group.start_soon(self._shared.publish, TaskEvent(key, "wake"))
        return local is not None

    def _on_event(self, event: TaskEvent) -> None:
        """Another replica published: follow its state, or poll now (a callback, a free lease)."""
        task = event.task
        watcher = self.find(event.key, *((task.task_id, task.external_task_id) if task else ()))
        if watcher is None:
            return
        if task is not None and not watcher.finished:
            watcher.observe(task)
        watcher.wake()

    def _start(self, watcher: TaskWatcher) -> None:
        if self._task_group is None:
            raise RuntimeError("WatcherRegistry.attach() was not called: no task group for poll loops")
        self._task_group.start_soon(watcher.run, name=f"watch:{watcher.key}")
        if not self._beating:
            self._beating = True
            self._task_group.start_soon(self._heartbeat, name="watch:heartbeat")

    async def _heartbeat(self) -> None:
        """Tick the waiters of every watcher that has been quiet for ``HEARTBEAT_SECONDS``,
        whatever its loop is doing (a slow vendor call included): one timer for them all."""
        try:
            while self._watchers:
                await anyio.sleep(HEARTBEAT_SECONDS / 8)
                for watcher in list(self._watchers.values()):
                    watcher.heartbeat()
        finally:
            self._beating = False

    def _forget(self, watcher: TaskWatcher) -> None:
        if self._watchers.get(watcher.key) is watcher and watcher.waiters == 0 and not watcher.running:
            del self._watchers[watcher.key]
            for alias in [a for a, k in self._aliases.items() if k == watcher.key]:
                del self._aliases[alias]
            if watcher.handed_to is not None and watcher.handed_to.key in self._watchers:
                # Its own key now leads to the watcher it handed over to, while that one lives.
                self._aliases[watcher.key] = watcher.handed_to.key
