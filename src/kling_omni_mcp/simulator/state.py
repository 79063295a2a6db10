"""Simulated tasks, their lifecycle over time, and the counters tests read.

A task's status is a pure function of the clock: ``submitted`` for the first 15 % of its
duration, then ``processing``, then ``succeed`` (or ``failed`` when a fault says so). Queries
compute it on the spot; the callback sender walks the same timeline to post each change.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .contract import units_per_image
from .validation import CreateSpec

__all__ = ["FINAL_STATUSES", "CallbackRecord", "Counters", "TaskRecord", "TaskStore", "now_ms"]

#: Share of a task's duration spent ``submitted`` before it turns ``processing``.
SUBMITTED_SHARE = 0.15
_MAX_CALLBACK_RECORDS = 10_000
FINAL_STATUSES = ("succeed", "failed")


@dataclass
class TaskRecord:
    """One simulated task: what was asked, when, and how it will end.

    ``body`` is the create body as parsed (integers exact), so tests can check element ids.
    """

    task_id: str
    spec: CreateSpec
    body: dict[str, Any] = field(repr=False)
    created_ms: int
    created_mono: float
    duration: float
    output_size: tuple[int, int]
    fail_message: str | None = None
    #: Seconds after creation when the task ends; a forced failure can bring it forward.
    done_offset: float = 0.0

    def __post_init__(self) -> None:
        self.done_offset = self.duration

    @property
    def external_task_id(self) -> str | None:
        """The caller's own id, if one was given."""
        return self.spec.external_task_id

    @property
    def element_ids(self) -> tuple[int, ...]:
        """The ``element_list`` ids exactly as received."""
        return self.spec.element_ids

    @property
    def slots(self) -> int:
        """Concurrency slots held while unfinished: one per result image."""
        return self.spec.image_count

    @property
    def processing_offset(self) -> float:
        """Seconds after creation when the task turns ``processing``."""
        return min(self.duration * SUBMITTED_SHARE, self.done_offset)

    def status_at(self, now: float) -> str:
        """The status at monotonic time ``now``."""
        elapsed = now - self.created_mono
        if elapsed < self.processing_offset:
            return "submitted"
        if elapsed < self.done_offset:
            return "processing"
        return "failed" if self.fail_message is not None else "succeed"

    def next_change_at(self, now: float) -> float | None:
        """Monotonic time of the next status change after ``now``, or None when finished."""
        for offset in (self.processing_offset, self.done_offset):
            if self.created_mono + offset > now:
                return self.created_mono + offset
        return None

    def _updated_ms(self, status: str) -> int:
        offset = {"submitted": 0.0, "processing": self.processing_offset}.get(status, self.done_offset)
        return self.created_ms + round(offset * 1000)

    def image_path(self, index: int, *, watermark: bool = False) -> str:
        """Path (on the simulator) of one result file."""
        return f"/results/{self.task_id}/{index}{'-watermark' if watermark else ''}.png"

    def create_data(self) -> dict[str, Any]:
        """``data`` of the create answer, exactly the fields the vendor documents."""
        return {
            "task_id": self.task_id,
            "task_info": {"external_task_id": self.external_task_id},
            "task_status": "submitted",
            "created_at": self.created_ms,
            "updated_at": self.created_ms,
        }

    def to_data(self, base_url: str, now: float) -> dict[str, Any]:
        """``data`` of a query answer, list item or callback body at time ``now``."""
        status = self.status_at(now)
        base = base_url.rstrip("/")
        images: list[dict[str, Any]] = []
        units = "0"
        if status == "succeed":
            images = [
                {
                    "index": i,
                    "url": base + self.image_path(i),
                    "watermark_url": base + self.image_path(i, watermark=True),
                }
                for i in range(self.spec.image_count)
            ]
            per_image = units_per_image(self.spec.model_name, self.spec.resolution)
            units = str(per_image * self.spec.image_count)
        series = self.spec.result_type == "series"
        return {
            "task_id": self.task_id,
            "task_status": status,
            "task_status_msg": self.fail_message if status == "failed" else "",
            "task_info": {"external_task_id": self.external_task_id},
            "task_result": {
                "result_type": self.spec.result_type,
                "images": [] if series else images,
                "series_images": images if series else [],
            },
            "watermark_info": {"enabled": bool(self.spec.watermark_enabled)},
            "final_unit_deduction": units,
            "created_at": self.created_ms,
            "updated_at": self._updated_ms(status),
        }


@dataclass(frozen=True)
class CallbackRecord:
    """One callback POST attempt: where, for which status, and how it went."""

    url: str
    task_id: str
    task_status: str
    http_status: int | None
    error: str | None = None
    signed: bool = False


@dataclass
class Counters:
    """What the simulator has seen, for tests and ``GET /admin/counters``.

    ``create_requests`` counts every POST to the create route (refused and faulted ones too);
    ``creates`` counts tasks actually created; ``creates_by_external_id`` counts create requests
    per ``external_task_id`` they carried, so a test can tell whether a create was re-sent.
    """

    create_requests: int = 0
    creates: int = 0
    creates_by_external_id: Counter[str] = field(default_factory=Counter)
    queries: int = 0
    queries_by_id: Counter[str] = field(default_factory=Counter)
    lists: int = 0
    downloads: int = 0
    downloads_by_path: Counter[str] = field(default_factory=Counter)
    faults_served: int = 0
    callbacks: deque[CallbackRecord] = field(default_factory=lambda: deque(maxlen=_MAX_CALLBACK_RECORDS))

    def reset(self) -> None:
        """Back to zero."""
        fresh = Counters()
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        return {
            "create_requests": self.create_requests,
            "creates": self.creates,
            "creates_by_external_id": dict(self.creates_by_external_id),
            "queries": self.queries,
            "queries_by_id": dict(self.queries_by_id),
            "lists": self.lists,
            "downloads": self.downloads,
            "downloads_by_path": dict(self.downloads_by_path),
            "faults_served": self.faults_served,
            "callbacks": [r.__dict__ for r in self.callbacks],
        }


class TaskStore:
    """Tasks of the one simulated account, oldest first, with the external-id index."""

    def __init__(self, max_tasks: int) -> None:
        self.tasks: dict[str, TaskRecord] = {}
        self._by_external: dict[str, str] = {}
        self._max_tasks = max_tasks
        # Vendor task ids are long digit strings; a prefix plus a sequence keeps ours unique.
        self._sequence = itertools.count(1)
        self._prefix = str(random.randint(100_000, 999_999))

    def __len__(self) -> int:
        return len(self.tasks)

    def new_task_id(self) -> str:
        """A fresh task id, digits only like the vendor's."""
        return f"{self._prefix}{next(self._sequence):013d}"

    def external_id_taken(self, external_task_id: str) -> bool:
        """True when a task already carries this external id."""
        return external_task_id in self._by_external

    def add(self, task: TaskRecord, now: float) -> None:
        """Keep a new task, forgetting the oldest finished ones past the bound."""
        self.tasks[task.task_id] = task
        if task.external_task_id:
            self._by_external[task.external_task_id] = task.task_id
        if len(self.tasks) > self._max_tasks:
            self._evict(now)

    def _evict(self, now: float) -> None:
        excess = len(self.tasks) - self._max_tasks
        victims = [t for t in self.tasks.values() if t.status_at(now) in FINAL_STATUSES][:excess]
        if len(victims) < excess:  # all unfinished: drop the oldest anyway, the bound wins
            chosen = {t.task_id for t in victims}
            victims += [t for t in self.tasks.values() if t.task_id not in chosen][: excess - len(victims)]
        for task in victims:
            del self.tasks[task.task_id]
            if task.external_task_id:
                self._by_external.pop(task.external_task_id, None)

    def get(self, task_or_external_id: str) -> TaskRecord | None:
        """A task by its task id or, failing that, by its external id."""
        task = self.tasks.get(task_or_external_id)
        if task is None and task_or_external_id in self._by_external:
            task = self.tasks.get(self._by_external[task_or_external_id])
        return task

    def newest_first(self) -> Iterator[TaskRecord]:
        """Every task, newest first."""
        return reversed(list(self.tasks.values()))

    def unfinished_slots(self, now: float) -> int:
        """Concurrency slots held by tasks that have not finished."""
        return sum(t.slots for t in self.tasks.values() if t.status_at(now) not in FINAL_STATUSES)

    def clear(self) -> None:
        """Forget every task."""
        self.tasks.clear()
        self._by_external.clear()


def now_ms() -> int:
    """Wall-clock time in milliseconds, as the vendor's timestamps."""
    return time.time_ns() // 1_000_000
