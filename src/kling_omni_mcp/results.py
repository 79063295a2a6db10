"""What this server keeps of a task: its saved images and a typed sidecar, written off the loop.

``ResultRecorder`` owns every file a task leaves on disk. It saves a finished task's images
once (one save job per task, however many callers ask; at most ``DOWNLOAD_SLOTS`` downloads at
once), and keeps the task's ``Sidecar`` truthful. All file I/O runs in worker threads.

A save job runs in the task group of the server's lifespan, not in the request that started it,
so a caller may stop waiting (its time budget ran out) while the download goes on; the next
look finds the saved file. Without a task group (``attach`` not called) jobs run in the caller.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import httpx2
from anyio.abc import TaskGroup
from pydantic import BaseModel, ConfigDict, ValidationError

from kling_omni_mcp.answers import TaskAnswer, iso_time
from kling_omni_mcp.keyed_locks import KeyedLocks
from kling_omni_mcp.kling.models import CreateImageRequest, TaskData
from kling_omni_mcp.media.errors import MediaError
from kling_omni_mcp.media.inputs import PreparedImage
from kling_omni_mcp.media.outputs import ResultStore, SavedImage

__all__ = ["DOWNLOAD_SLOTS", "ResultRecorder", "Sidecar", "SidecarImage"]

logger = logging.getLogger(__name__)

#: Result downloads at once, across all tasks.
DOWNLOAD_SLOTS = 4


class SidecarImage(BaseModel):
    """One result image as the sidecar records it."""

    index: int
    url: str
    watermark_url: str | None = None
    path: str | None = None
    sha256: str | None = None
    bytes: int | None = None


class Sidecar(BaseModel):
    """``<task_id>.json``: what was asked (written at create) and what came of it (on each look).

    Merge rule (``merged``): a field the update sets to a value replaces the old one; a field the
    update leaves out or sets to null keeps what is known. So a later look never erases the
    prompt, and a failure after a create keeps the parameters. Unknown keys (from another
    version of this server) are kept as they are.
    """

    model_config = ConfigDict(extra="allow")

    task_id: str
    external_task_id: str | None = None
    #: Who created the task here (ownership.py); set once at create, never by a later look.
    owner: str | None = None
    simulated: bool | None = None
    model: str | None = None
    prompt: str | None = None
    parameters: dict[str, Any] | None = None
    #: Descriptions of the inputs only: Base64 payloads never go into the sidecar.
    inputs: list[dict[str, Any]] | None = None
    element_ids: list[int] | None = None
    estimated_units: int | None = None
    status: str | None = None
    status_message: str | None = None
    units_charged: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    images: list[SidecarImage] | None = None
    saved_at: str | None = None

    def merged(self, update: Sidecar) -> Sidecar:
        """This sidecar with ``update`` applied by the merge rule above."""
        data = self.model_dump(exclude_unset=True)
        for key, value in update.model_dump(exclude_unset=True).items():
            if value is not None or key not in data:
                data[key] = value
        return Sidecar.model_validate(data)


@dataclass
class _SaveJob:
    """One task's image saving, shared by every caller that asks while it runs."""

    done: anyio.Event = field(default_factory=anyio.Event)
    saved: dict[int, SavedImage] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def _now_iso() -> str | None:
    return iso_time(int(time.time() * 1000))


class ResultRecorder:
    """Saves results and sidecars for tasks; every disk access runs in a worker thread."""

    def __init__(
        self,
        store: ResultStore,
        http: httpx2.AsyncClient,
        *,
        simulated: bool,
        save_lock: Callable[[str], AbstractAsyncContextManager[None]] | None = None,
    ) -> None:
        self.store = store
        # Held around a task's save, so one replica downloads and the others find the files.
        self._save_lock = save_lock or (lambda _task_id: contextlib.nullcontext())
        self._http = http
        self._simulated = simulated
        self._download_slots = anyio.CapacityLimiter(DOWNLOAD_SLOTS)
        self._sidecar_locks = KeyedLocks()
        self._jobs: dict[str, _SaveJob] = {}
        self._task_group: TaskGroup | None = None

    def attach(self, task_group: TaskGroup) -> None:
        """Run save jobs in ``task_group`` (the lifespan's), so they outlive a caller's wait."""
        self._task_group = task_group

    # --- answers -----------------------------------------------------------------------------

    async def answer_for(self, task: TaskData, **extra: Any) -> TaskAnswer:
        """The task in plain words, with what only this server knows (model, estimated cost)."""
        sidecar = await self._read(task.task_id)
        known: dict[str, Any] = {"simulated": self._simulated}
        if sidecar is not None:
            known["model"] = sidecar.model
            if sidecar.estimated_units is not None:
                known["estimated_units"] = sidecar.estimated_units
        known.update(extra)
        return TaskAnswer.from_task(task, **known)

    async def saved_paths(self, task_id: str) -> list[str]:
        """The files already saved for a task (no download)."""
        found = await anyio.to_thread.run_sync(self.store.find_saved_images, task_id)
        return [str(p) for p in found]

    async def owner_record(self, task_id: str) -> tuple[str | None, str | None] | None:
        """``(owner, external_task_id)`` from the task's sidecar; None when there is none."""
        sidecar = await self._read(task_id)
        return None if sidecar is None else (sidecar.owner, sidecar.external_task_id)

    # --- sidecars ----------------------------------------------------------------------------

    async def record_created(
        self,
        task: TaskData,
        request: CreateImageRequest,
        inputs: Sequence[PreparedImage],
        units: int,
        *,
        owner: str | None = None,
    ) -> None:
        """The sidecar of a task just created here: its owner, the prompt, the parameters, the inputs."""
        await self._merge(
            Sidecar(
                task_id=task.task_id,
                external_task_id=task.external_task_id or request.external_task_id,
                owner=owner,
                simulated=self._simulated,
                model=request.model_name,
                prompt=request.prompt,
                parameters={
                    "resolution": request.resolution,
                    "aspect_ratio": request.aspect_ratio,
                    "n": request.n,
                    "result_type": request.result_type,
                    "series_amount": request.series_amount,
                    "watermark": request.watermark_info.enabled if request.watermark_info else None,
                    "callback_url": request.callback_url,
                },
                inputs=[{"kind": p.source_kind, "source": p.source, "note": p.note} for p in inputs],
                element_ids=[e.element_id for e in request.element_list or []],
                estimated_units=units,
                status=task.plain_status,
                created_at=iso_time(task.created_at) or _now_iso(),
            )
        )

    async def record_failure(self, task: TaskData) -> None:
        """Keep the sidecar of a task made here truthful: it failed, and why (foreign tasks get none)."""
        if await self._read(task.task_id) is None:
            return
        await self._merge(
            Sidecar(
                task_id=task.task_id,
                status=task.plain_status,
                status_message=task.status_message,
                units_charged=task.units_charged,
                updated_at=iso_time(task.updated_at),
            )
        )

    # --- images ------------------------------------------------------------------------------

    async def save_results(self, task: TaskData, answer: TaskAnswer, *, within: float | None = None) -> None:
        """Save every image of a finished task once, and fill ``answer`` with what is on disk.

        Waits at most ``within`` seconds (no limit when None): if the downloads take longer,
        ``answer`` lists the images by URL with a note, and saving goes on in the background.
        """
        job = self._jobs.get(task.task_id)
        if job is None:
            job = self._jobs[task.task_id] = _SaveJob()
            if self._task_group is not None:
                self._task_group.start_soon(self._run_job, task, job, name=f"save:{task.task_id}")
            else:
                await self._run_job(task, job)
        with anyio.move_on_after(within if within is not None else float("inf")):
            await job.done.wait()
        if not job.done.is_set():
            answer.notes.append(
                "The images are still downloading and will be saved in the background: call "
                f'get_task(task_id="{task.task_id}") in a moment for the file paths (the URLs work now).'
            )
            return
        for info in answer.images:
            item = job.saved.get(info.index)
            if item is not None:
                info.path = str(item.path)
                info.mime_type = item.mime_type
                info.width, info.height = item.width, item.height
        answer.notes.extend(sorted(job.failures))

    async def _run_job(self, task: TaskData, job: _SaveJob) -> None:
        try:
            async with self._save_lock(task.task_id):
                async with anyio.create_task_group() as tg:
                    for img in task.result_images:
                        tg.start_soon(self._save_one, task.task_id, img.index, img.url, job)
                await self._record_saved(task, job.saved)
        except Exception:
            # A bug must not take down the lifespan's task group that every other job runs in.
            logger.exception("Saving the results of task %s failed unexpectedly", task.task_id)
            job.failures.append("Saving the images failed unexpectedly; call get_task again to retry.")
        finally:
            job.done.set()
            if self._jobs.get(task.task_id) is job:
                del self._jobs[task.task_id]

    async def _save_one(self, task_id: str, index: int, url: str, job: _SaveJob) -> None:
        async with self._download_slots:
            try:
                job.saved[index] = await self.store.save_image(self._http, url, task_id, index)
            except MediaError as exc:
                job.failures.append(
                    f"Image {index} could not be saved ({exc}); call get_task again to retry."
                )

    async def _record_saved(self, task: TaskData, saved: dict[int, SavedImage]) -> None:
        images = []
        for img in task.result_images:
            item = saved.get(img.index)
            images.append(
                SidecarImage(
                    index=img.index,
                    url=img.url,
                    watermark_url=img.watermark_url,
                    path=str(item.path) if item else None,
                    sha256=item.sha256 if item else None,
                    bytes=item.byte_size if item else None,
                )
            )
        await self._merge(
            Sidecar(
                task_id=task.task_id,
                external_task_id=task.external_task_id,
                simulated=self._simulated,
                status=task.plain_status,
                status_message=task.status_message,
                units_charged=task.units_charged,
                created_at=iso_time(task.created_at),
                updated_at=iso_time(task.updated_at),
                images=images,
                saved_at=_now_iso(),
            )
        )

    # --- disk --------------------------------------------------------------------------------

    async def _read(self, task_id: str) -> Sidecar | None:
        raw = await anyio.to_thread.run_sync(self.store.read_sidecar, task_id)
        if raw is None:
            return None
        try:
            return Sidecar.model_validate(raw)
        except ValidationError:
            logger.warning("The sidecar of task %s does not have the expected shape; ignoring it", task_id)
            return None

    async def _merge(self, update: Sidecar) -> None:
        """Read, merge and write one task's sidecar, one writer per task at a time."""
        async with self._sidecar_locks.hold(update.task_id):
            current = await self._read(update.task_id)
            merged = current.merged(update) if current is not None else update
            data = merged.model_dump(mode="json", exclude_unset=True)
            try:
                await anyio.to_thread.run_sync(self.store.write_sidecar, update.task_id, data)
            except MediaError as exc:
                # The images matter more than their notes: report, don't fail the call.
                logger.warning("Could not write the sidecar for task %s: %s", update.task_id, exc)
