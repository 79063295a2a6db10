"""The behaviour users see, in one place: prepare inputs → create → watch → save results.

``KlingService`` knows nothing of MCP: the tools, the CLI and the HTTP callback route all call
it. Refusals are ``ServiceError`` (or a ``KlingError`` / ``MediaError`` from a lower layer); each
message says what was wrong and what to do, so the MCP layer can pass it through verbatim.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import httpx2

from kling_omni_mcp.account import AccountReader
from kling_omni_mcp.answers import TaskAnswer, TaskListAnswer, TaskSummary, iso_time, plain_status
from kling_omni_mcp.budget import ConfirmFn, Spending
from kling_omni_mcp.callback_urls import callback_url_problem
from kling_omni_mcp.config import Settings
from kling_omni_mcp.kling.callbacks import CallbackNotice
from kling_omni_mcp.kling.client import KlingClient, new_external_task_id
from kling_omni_mcp.kling.errors import KlingConfigError, KlingTaskNotFoundError
from kling_omni_mcp.kling.models import CreateImageRequest, ElementRef, ImageRef, TaskData, WatermarkInfo
from kling_omni_mcp.kling.rules import (
    MAX_REFERENCES,
    check_prompt_references,
    estimate_units,
    validate_create_request,
)
from kling_omni_mcp.media.errors import MediaError
from kling_omni_mcp.media.inputs import PreparedImage, prepare_image_input
from kling_omni_mcp.media.outputs import ResultStore, SavedImage
from kling_omni_mcp.watch import WatcherRegistry

__all__ = ["CreateImageParams", "KlingService", "ProgressFn", "ServiceError", "TaskFailedError"]

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, float, str], Awaitable[None]]


class ServiceError(Exception):
    """A refusal whose message tells the user what to change."""


class TaskFailedError(ServiceError):
    """The task ended in ``failed``; the message carries the vendor's reason and what to try."""

    def __init__(self, message: str, answer: TaskAnswer) -> None:
        super().__init__(message)
        self.answer = answer


@dataclass
class CreateImageParams:
    """What ``create_image`` was asked for, in the user's words (validated by the tool schema)."""

    prompt: str
    images: Sequence[str] = ()
    element_ids: Sequence[int] = ()
    model: Literal["kling-image-o1", "kling-v3-omni"] = "kling-image-o1"
    resolution: Literal["1k", "2k", "4k"] = "1k"
    aspect_ratio: str | None = None
    n: int = 1
    result_type: Literal["single", "series"] = "single"
    series_amount: int | Literal["auto"] | None = None
    watermark: bool | None = None
    external_task_id: str | None = None
    callback_url: str | None = None
    extra_notes: list[str] = field(default_factory=list)


def _wait_call(task_id: str) -> str:
    return f'wait_for_task(task_id="{task_id}")'


def _failure_advice(message: str | None) -> str:
    text = (message or "").lower()
    if any(word in text for word in ("policy", "safety", "sensitive", "risk", "refus", "violat")):
        return "Rephrase the prompt or use other reference images, then call create_image again."
    return "Check the prompt and inputs, then call create_image again (a failed task is not charged)."


class KlingService:
    """Create, query, wait for and list Omni-Image tasks; save results to disk once."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: KlingClient | None,
        http: httpx2.AsyncClient,
        store: ResultStore,
        simulated: bool = False,
        spending: Spending | None = None,
    ) -> None:
        self.settings = settings
        self.spending = spending or Spending(None)
        self.account = AccountReader(lambda: self.client, self.spending, simulated=simulated)
        self._client = client
        self._http = http
        self.store = store
        self.simulated = simulated
        self.watchers = WatcherRegistry(
            self._fetch,
            initial_interval=settings.poll_initial_seconds,
            max_interval=settings.poll_max_seconds,
        )
        # Per-task locks so two waiters never download the same images twice.
        self._save_locks: dict[str, anyio.Lock] = {}
        self._create_locks: dict[str, anyio.Lock] = {}
        self._download_slots = anyio.CapacityLimiter(4)

    # --- plumbing ------------------------------------------------------------------------------
    @property
    def client(self) -> KlingClient:
        if self._client is None:
            problem = self.settings.credentials_problem() or "The Kling client is not configured."
            raise KlingConfigError(problem)
        return self._client

    async def _fetch(self, task_id: str) -> TaskData:
        return await self.client.get_task(task_id)

    def _lock(self, table: dict[str, anyio.Lock], key: str) -> AbstractAsyncContextManager[Any]:
        lock = table.get(key)
        if lock is None:
            lock = table[key] = anyio.Lock()
        return lock

    # --- create --------------------------------------------------------------------------------
    async def create_image(
        self,
        params: CreateImageParams,
        *,
        wait_seconds: float = 0,
        progress: ProgressFn | None = None,
        confirm: ConfirmFn | None = None,
    ) -> TaskAnswer:
        """Check everything that can be checked locally, then create one task (never two)."""
        client = self.client  # refuse early when there are no credentials
        if problem := callback_url_problem(params.callback_url, self.settings):
            raise ServiceError(problem)
        notes = list(params.extra_notes)
        total_inputs = len(params.images) + len(params.element_ids)
        if total_inputs > MAX_REFERENCES:
            raise ServiceError(
                f"{len(params.images)} images + {len(params.element_ids)} elements = {total_inputs} inputs; "
                f"at most {MAX_REFERENCES} together are allowed. Remove {total_inputs - MAX_REFERENCES}."
            )
        # The count and the prompt references are checked before any file is read (the rules
        # check them again on the request): cheap mistakes first.
        check_prompt_references(params.prompt, images=len(params.images), elements=len(params.element_ids))
        prepared = await self._prepare_images(params.images)
        aspect_ratio = params.aspect_ratio
        if aspect_ratio is None:
            text_only = not prepared and not params.element_ids
            if params.model == "kling-v3-omni" and text_only:
                aspect_ratio = "1:1"
                notes.append("aspect_ratio defaulted to 1:1: kling-v3-omni needs one for text-only prompts.")
            else:
                aspect_ratio = "auto"
        request = CreateImageRequest(
            model_name=params.model,
            prompt=params.prompt,
            image_list=[ImageRef(image=p.payload) for p in prepared] or None,
            element_list=[ElementRef(element_id=e) for e in params.element_ids] or None,
            resolution=params.resolution,
            result_type=params.result_type,
            n=params.n,
            series_amount=params.series_amount if params.result_type == "series" else None,
            aspect_ratio=aspect_ratio,  # type: ignore[arg-type]
            watermark_info=WatermarkInfo(enabled=params.watermark) if params.watermark is not None else None,
            callback_url=params.callback_url or self._default_callback_url(),
            external_task_id=params.external_task_id or new_external_task_id(),
        )
        validate_create_request(request)
        units = estimate_units(request)
        external_id = request.external_task_id or ""
        async with self._lock(self._create_locks, external_id):
            existing = await self._existing_task(external_id) if params.external_task_id else None
            if existing is not None:
                notes.append(
                    f"A task with external_task_id {external_id!r} already exists: returned it instead of "
                    "creating another (no second charge)."
                )
                answer = await self._answer(existing, notes=notes)
            else:
                async with self.spending.guard(request, units, confirm) as spending_notes:
                    task = await client.create_task(request)
                notes.extend(spending_notes)
                self._write_create_sidecar(task, request, prepared, units)
                answer = self._plain(task, estimated_units=units, model=request.model_name, notes=notes)
                if not answer.done:
                    answer.next_call = _wait_call(task.task_id)
        self._create_locks.pop(external_id, None)
        if wait_seconds > 0 and not answer.done:
            waited = await self.wait_for_task(answer.task_id, wait_seconds, progress)
            waited.estimated_units = units
            waited.notes = notes + waited.notes
            return waited
        return answer

    def _default_callback_url(self) -> str | None:
        if self.settings.public_url:
            return f"{self.settings.public_url}/callbacks/kling"
        return None

    async def _existing_task(self, external_id: str) -> TaskData | None:
        try:
            return await self.client.get_task(external_id)
        except KlingTaskNotFoundError:
            return None

    async def _prepare_images(self, images: Sequence[str]) -> list[PreparedImage]:
        out: list[PreparedImage] = []
        dirs = self.settings.allowed_input_dirs
        for position, value in enumerate(images, start=1):
            try:
                prepare = functools.partial(prepare_image_input, value, allowed_dirs=dirs)
                out.append(await anyio.to_thread.run_sync(prepare))
            except MediaError as exc:
                raise ServiceError(f"images[{position - 1}] (<<<image_{position}>>>): {exc}") from None
        return out

    # --- query ---------------------------------------------------------------------------------
    async def get_task(self, task_id: str) -> TaskAnswer:
        """The task's state; a finished task's images are saved locally on first sight."""
        task = await self.client.get_task(task_id)
        watcher = self.watchers.find(task_id, task.task_id, task.external_task_id)
        if watcher is not None:
            watcher.observe(task)
        answer = await self._answer(task)
        if answer.status == "failed":
            raise TaskFailedError(self._failure_message(answer), answer)
        return answer

    async def wait_for_task(
        self, task_id: str, budget: float, progress: ProgressFn | None = None
    ) -> TaskAnswer:
        """Wait up to ``budget`` seconds; return the finished task, or a resumable answer."""
        reported = -1.0

        async def on_tick(task: TaskData | None, elapsed: float) -> None:
            nonlocal reported
            if progress is None:
                return
            # Progress must strictly increase; never report past the total until done.
            value = min(max(elapsed, reported + 0.001), budget)
            if value <= reported:
                return
            reported = value
            status = plain_status(task.task_status) if task else "waiting"
            await progress(value, budget, f"Task {task_id}: {status} after {elapsed:.0f} s")

        outcome = await self.watchers.wait(task_id, budget, on_tick)
        if outcome.task is None:
            raise ServiceError(
                f"No answer about task {task_id} within {budget:g} s: the Kling API did not answer in "
                f"time (it may be slow or unreachable; get_task shows its error). "
                f"Call {_wait_call(task_id)} again."
            )
        if outcome.done:
            if progress is not None and budget > reported:
                await progress(budget, budget, f"Task {task_id}: {plain_status(outcome.task.task_status)}")
            answer = await self._answer(outcome.task, waited_seconds=round(outcome.waited_seconds, 1))
            if answer.status == "failed":
                raise TaskFailedError(self._failure_message(answer), answer)
            return answer
        answer = self._plain(outcome.task, waited_seconds=round(outcome.waited_seconds, 1))
        answer.next_call = _wait_call(answer.task_id)
        answer.notes.append(
            f"Not finished yet: this is not an error. Call {answer.next_call} to keep waiting."
        )
        return answer

    async def list_tasks(self, page: int = 1, page_size: int = 20) -> TaskListAnswer:
        """A page of recent tasks with their status and any files already saved."""
        tasks = await self.client.list_tasks(page=page, page_size=page_size)
        rows = []
        for task in tasks:
            rows.append(
                TaskSummary(
                    task_id=task.task_id,
                    external_task_id=task.external_task_id,
                    status=plain_status(task.task_status),
                    created_at=iso_time(task.created_at),
                    image_count=len(task.result_images),
                    paths=[str(p) for p in self.store.find_saved_images(task.task_id)],
                )
            )
        return TaskListAnswer(page=page, page_size=page_size, simulated=self.simulated, tasks=rows)

    # --- callbacks -----------------------------------------------------------------------------
    def on_callback(self, notice: CallbackNotice) -> bool:
        """A vendor callback arrived: wake that task's watcher. False when nobody watches it."""
        watcher = self.watchers.find(*notice.keys)
        if watcher is None:
            return False
        # Re-query rather than trust the body: callbacks may lack series_images.
        watcher.wake()
        return True

    # --- results -------------------------------------------------------------------------------
    def _plain(self, task: TaskData, **extra: Any) -> TaskAnswer:
        sidecar = self.store.read_sidecar(task.task_id) or {}
        defaults: dict[str, Any] = {"simulated": self.simulated, "model": sidecar.get("model")}
        if "estimated_units" in sidecar:
            defaults["estimated_units"] = sidecar["estimated_units"]
        defaults.update(extra)
        return TaskAnswer.from_task(task, **defaults)

    async def _answer(self, task: TaskData, **extra: Any) -> TaskAnswer:
        answer = self._plain(task, **extra)
        if answer.status == "succeeded":
            await self._save_results(task, answer)
        elif answer.status == "failed":
            self._record_failure(task, answer)
        elif not answer.done:
            answer.next_call = _wait_call(task.task_id)
        return answer

    async def _save_results(self, task: TaskData, answer: TaskAnswer) -> None:
        """Save every image once (single-flight per task); record what happened in the sidecar."""
        async with self._lock(self._save_locks, task.task_id):
            saved: dict[int, SavedImage] = {}
            failures: list[str] = []

            async def save_one(index: int, url: str) -> None:
                async with self._download_slots:
                    try:
                        saved[index] = await self.store.save_image(self._http, url, task.task_id, index)
                    except MediaError as exc:
                        failures.append(
                            f"Image {index} could not be saved ({exc}); call get_task again to retry."
                        )

            async with anyio.create_task_group() as tg:
                for img in task.result_images:
                    tg.start_soon(save_one, img.index, img.url)
            self._save_locks.pop(task.task_id, None)
        for info in answer.images:
            item = saved.get(info.index)
            if item is not None:
                info.path = str(item.path)
                info.mime_type = item.mime_type
                info.width, info.height = item.width, item.height
        answer.notes.extend(sorted(failures))
        self._write_result_sidecar(task, answer, saved)

    def _record_failure(self, task: TaskData, answer: TaskAnswer) -> None:
        """Keep the sidecar of a task made here truthful: it failed, and why (foreign tasks get none)."""
        if self.store.read_sidecar(task.task_id) is None:
            return
        self._merge_sidecar(
            task.task_id,
            {
                "status": answer.status,
                "status_message": answer.status_message,
                "units_charged": task.final_unit_deduction,
                "updated_at": answer.updated_at,
            },
        )

    def _failure_message(self, answer: TaskAnswer) -> str:
        reason = answer.status_message or "no reason given"
        return f"Task {answer.task_id} failed: {reason}. {_failure_advice(answer.status_message)}"

    # --- sidecars ------------------------------------------------------------------------------
    def _write_create_sidecar(
        self, task: TaskData, request: CreateImageRequest, prepared: list[PreparedImage], units: int
    ) -> None:
        data: dict[str, Any] = {
            "task_id": task.task_id,
            "external_task_id": task.external_task_id or request.external_task_id,
            "simulated": self.simulated,
            "model": request.model_name,
            "prompt": request.prompt,
            "parameters": {
                "resolution": request.resolution,
                "aspect_ratio": request.aspect_ratio,
                "n": request.n,
                "result_type": request.result_type,
                "series_amount": request.series_amount,
                "watermark": request.watermark_info.enabled if request.watermark_info else None,
                "callback_url": request.callback_url,
            },
            # Descriptions only: Base64 payloads never go into the sidecar.
            "inputs": [{"kind": p.source_kind, "source": p.source, "note": p.note} for p in prepared],
            "element_ids": [e.element_id for e in request.element_list or []],
            "estimated_units": units,
            "status": plain_status(task.task_status),
            "created_at": iso_time(task.created_at) or iso_time(int(time.time() * 1000)),
        }
        self._merge_sidecar(task.task_id, data)

    def _write_result_sidecar(self, task: TaskData, answer: TaskAnswer, saved: dict[int, SavedImage]) -> None:
        images = []
        for img in task.result_images:
            item = saved.get(img.index)
            images.append(
                {
                    "index": img.index,
                    "url": img.url,
                    "watermark_url": img.watermark_url,
                    "path": str(item.path) if item else None,
                    "sha256": item.sha256 if item else None,
                    "bytes": item.byte_size if item else None,
                }
            )
        self._merge_sidecar(
            task.task_id,
            {
                "task_id": task.task_id,
                "external_task_id": task.external_task_id,
                "simulated": self.simulated,
                "status": answer.status,
                "status_message": answer.status_message,
                "units_charged": task.final_unit_deduction,
                "created_at": answer.created_at,
                "updated_at": answer.updated_at,
                "images": images,
                "saved_at": iso_time(int(time.time() * 1000)),
            },
        )

    def _merge_sidecar(self, task_id: str, data: dict[str, Any]) -> None:
        try:
            current = self.store.read_sidecar(task_id) or {}
            current.update({k: v for k, v in data.items() if v is not None or k not in current})
            self.store.write_sidecar(task_id, current)
        except MediaError as exc:
            # The images matter more than their notes: report, don't fail the call.
            logger.warning("Could not write the sidecar for task %s: %s", task_id, exc)
