"""``Simulator``: the state, faults and counters behind the simulated vendor app."""

from __future__ import annotations

import time
from collections.abc import Callable

from .account import SimAccount
from .callbacks import CallbackSender
from .config import SimulatorConfig
from .faults import Faults
from .render import RenderCache, render_png, result_size
from .state import FINAL_STATUSES, Counters, TaskRecord, TaskStore, now_ms
from .validation import CreateSpec

__all__ = ["DEFAULT_FAILURE_MESSAGE", "Simulator"]

DEFAULT_FAILURE_MESSAGE = "Failure to pass the risk control system: content policy violation (simulated)"


class Simulator:
    """A local stand-in for the Omni-Image API.

    ``app`` is the Starlette app to serve (see ``running_simulator``). ``tasks``, ``counters``
    and ``faults`` are for tests: read what happened, arm what should go wrong next.
    """

    def __init__(
        self, config: SimulatorConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        from .app import build_app  # app.py imports this module for typing only

        self.config = config or SimulatorConfig()
        self.clock = clock
        self.faults = Faults(self.config.concurrency_limit)
        self.counters = Counters()
        self.store = TaskStore(self.config.max_tasks)
        self.renders = RenderCache(self.config.render_cache_entries)
        self.account = SimAccount()
        self.callbacks = CallbackSender(
            self.counters,
            webhook_secret=self.config.webhook_secret,
            timeout=self.config.callback_timeout,
            max_workers=self.config.max_callback_workers,
            clock=clock,
        )
        self.app = build_app(self)

    @property
    def tasks(self) -> dict[str, TaskRecord]:
        """Every known task by task id, oldest first."""
        return self.store.tasks

    def task_count(self) -> int:
        """How many tasks exist."""
        return len(self.store)

    def get_task(self, task_or_external_id: str) -> TaskRecord | None:
        """A task by task id or external id."""
        return self.store.get(task_or_external_id)

    def status_of(self, task_or_external_id: str) -> str | None:
        """The task's status now, or None when there is no such task."""
        task = self.store.get(task_or_external_id)
        return None if task is None else task.status_at(self.clock())

    def create_task(self, spec: CreateSpec, body: dict[str, object], base_url: str) -> TaskRecord:
        """Record a validated create and start its callbacks."""
        now = self.clock()
        first = spec.images[0] if spec.images else None
        first_size = (first.width, first.height) if first and first.width and first.height else None
        task = TaskRecord(
            task_id=self.store.new_task_id(),
            spec=spec,
            body=body,
            created_ms=now_ms(),
            created_mono=now,
            duration=self.config.duration,
            output_size=result_size(
                spec.resolution, spec.aspect_ratio, first_input=first_size, scale=self.config.image_scale
            ),
            fail_message=self.faults.take_task_failure(),
        )
        self.store.add(task, now)
        self.counters.creates += 1
        if spec.callback_url:
            self.callbacks.schedule(task, base_url)
        return task

    def fail_task(
        self, task_or_external_id: str, message: str = DEFAULT_FAILURE_MESSAGE, *, immediately: bool = False
    ) -> TaskRecord:
        """Make an unfinished task end ``failed`` with ``message`` (now, or when it would have ended).

        Raises ``KeyError`` for an unknown id and ``ValueError`` for a task already finished.
        """
        task = self.store.get(task_or_external_id)
        if task is None:
            raise KeyError(f"no task with id or external id {task_or_external_id!r}")
        now = self.clock()
        if task.status_at(now) in FINAL_STATUSES:
            raise ValueError(f"task {task.task_id} has already finished")
        task.fail_message = message
        if immediately:
            task.done_offset = max(0.0, now - task.created_mono)
        return task

    async def render(self, task: TaskRecord, index: int, *, watermark: bool) -> bytes:
        """The PNG bytes of one result (rendered once, then cached)."""
        size = task.output_size
        return await self.renders.get(
            (task.task_id, index, watermark),
            lambda: render_png(task.task_id, index, size, watermark=watermark),
        )

    def reset(self) -> None:
        """Forget tasks, counters, rendered files and armed faults; stop pending callbacks."""
        self.callbacks.cancel_all()
        self.store.clear()
        self.counters.reset()
        self.faults.clear()
        self.renders.clear()
        self.account.reset()

    async def aclose(self) -> None:
        """Stop callback deliveries and close their HTTP client."""
        await self.callbacks.aclose()
