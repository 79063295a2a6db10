"""Progress notifications for a wait: strictly increasing, never past the total until done.

MCP hosts drop (or complain about) progress that goes backwards or beyond ``total``, and the
watcher's heartbeat may tick twice within a millisecond, so the values are shaped here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from kling_omni_mcp.kling.models import TaskData

__all__ = ["ProgressFn", "WaitProgress"]

#: ``(progress, total, message)``, as ``Context.report_progress`` takes them.
ProgressFn = Callable[[float, float, str], Awaitable[None]]


class WaitProgress:
    """Reports a wait of ``budget`` seconds on ``task_id`` to ``report`` (or to nobody)."""

    def __init__(self, task_id: str, budget: float, report: ProgressFn | None) -> None:
        self._task_id = task_id
        self._budget = budget
        self._report = report
        self._reported = -1.0

    async def tick(self, task: TaskData | None, elapsed: float) -> None:
        """The watcher's news after ``elapsed`` seconds: the latest state, if any."""
        if self._report is None:
            return
        value = min(max(elapsed, self._reported + 0.001), self._budget)
        if value <= self._reported:
            return
        self._reported = value
        status = task.plain_status if task else "waiting"
        await self._report(value, self._budget, f"Task {self._task_id}: {status} after {elapsed:.0f} s")

    async def finish(self, task: TaskData) -> None:
        """The task ended: report the full total once."""
        if self._report is not None and self._budget > self._reported:
            self._reported = self._budget
            await self._report(self._budget, self._budget, f"Task {self._task_id}: {task.plain_status}")
