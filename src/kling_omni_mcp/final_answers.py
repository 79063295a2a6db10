"""One answer for every waiter of a task that has just ended.

When a task ends, every ``wait_for_task`` on it wakes at once: ten waits on one task would each
read the sidecar, check the saved files and build the same answer (profiled with 10,000 waits
over 1,000 tasks: about a tenth of the server's CPU went there). The first waiter builds it; the
others, arriving while it builds or shortly after, take a copy with their own ``waited_seconds``.

The key is the very ``TaskData`` object the task's watcher published, not just the task id, so
an answer built from one state is never handed out for another. Only complete answers are
shared: when an image is still downloading or failed to save, each waiter builds its own (and so
retries the save, as before).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio

from kling_omni_mcp.answers import TaskAnswer
from kling_omni_mcp.kling.models import TaskData

__all__ = ["FinalAnswers"]

#: How long a built answer is handed to late co-waiters (they woke in the same burst).
KEEP_SECONDS = 10.0
#: Answers kept at once; the oldest go first beyond this (bounded memory).
LIMIT = 5_000


@dataclass
class _Entry:
    task: TaskData
    ready: anyio.Event = field(default_factory=anyio.Event)
    answer: TaskAnswer | None = None
    expires: float = float("inf")


def _complete(answer: TaskAnswer) -> bool:
    """Whether every waiter may get this very answer: nothing left to save or retry."""
    return answer.status != "succeeded" or all(img.path for img in answer.images)


class FinalAnswers:
    """Single-flight answers for the waiters of a finished task (see the module docstring)."""

    def __init__(self, *, keep_seconds: float = KEEP_SECONDS, limit: int = LIMIT) -> None:
        self._keep = keep_seconds
        self._limit = limit
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def answer(
        self, task: TaskData, waited_seconds: float, build: Callable[[], Awaitable[TaskAnswer]]
    ) -> TaskAnswer:
        """The answer for ``task`` with ``waited_seconds``: built by ``build`` once per state."""
        now = self._forget_expired()
        entry = self._entries.get(task.task_id)
        # An expired entry can outlive the sweep below (it stops at a build still running).
        if entry is not None and entry.task is task and entry.expires > now:
            await entry.ready.wait()
            if entry.answer is not None:
                return entry.answer.model_copy(update={"waited_seconds": waited_seconds})
            return await build()
        entry = _Entry(task)
        self._entries[task.task_id] = entry
        self._entries.move_to_end(task.task_id)
        try:
            built = await build()
            if _complete(built):
                entry.answer = built.model_copy()
                entry.expires = time.monotonic() + self._keep
            return built
        finally:
            entry.ready.set()
            if entry.answer is None and self._entries.get(task.task_id) is entry:
                del self._entries[task.task_id]

    def _forget_expired(self) -> float:
        """Drop expired entries (and the oldest beyond ``limit``); returns the time it used."""
        now = time.monotonic()
        # Built entries are kept in insertion order, so the expired ones are at the front
        # (an entry still being built has no expiry yet and stops the sweep).
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.expires > now and len(self._entries) < self._limit:
                break
            del self._entries[key]
        return now
