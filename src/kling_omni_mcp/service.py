"""The behaviour users see, in one place: prepare inputs → create → watch → save results.

``KlingService`` orchestrates and knows nothing of MCP: the tools, the CLI and the HTTP callback
route all call it. Its helpers each do one job: ``request_builder`` (parameters → checked vendor
request, no I/O), ``results.ResultRecorder`` (saved images and sidecars, off the event loop),
``watch`` (one poll loop per task) and ``keyed_locks`` (one create per external id at a time).
Refusals are ``ServiceError`` (or a ``KlingError`` / ``MediaError`` from a lower layer) whose
message says what was wrong and what to do, so the MCP layer passes it through verbatim.
"""

from __future__ import annotations

import anyio
import anyio.to_thread
import httpx2
from anyio.abc import TaskGroup

from kling_omni_mcp.account import AccountReader
from kling_omni_mcp.answers import TaskAnswer, TaskListAnswer, TaskSummary, iso_time
from kling_omni_mcp.budget import ConfirmFn, Spending
from kling_omni_mcp.callback_urls import callback_url_problem
from kling_omni_mcp.config import Settings
from kling_omni_mcp.final_answers import FinalAnswers
from kling_omni_mcp.image_inputs import ImageInputs
from kling_omni_mcp.input_refs import (
    KLING_IMAGE_URI,
)
from kling_omni_mcp.keyed_locks import KeyedLocks
from kling_omni_mcp.kling.callbacks import CallbackNotice
from kling_omni_mcp.kling.client import KlingClient, new_external_task_id
from kling_omni_mcp.kling.errors import KlingConfigError, KlingTaskNotFoundError
from kling_omni_mcp.kling.models import TaskData
from kling_omni_mcp.kling.status_sweep import StatusSweeper
from kling_omni_mcp.media.outputs import ResultStore
from kling_omni_mcp.ownership import LOCAL_CALLER, Caller, TaskOwners, not_found_message
from kling_omni_mcp.progress import ProgressFn, WaitProgress
from kling_omni_mcp.request_builder import (
    CreateImageParams,
    ServiceError,
    build_create_request,
    check_before_reading,
)
from kling_omni_mcp.results import ResultRecorder
from kling_omni_mcp.store import StateStore
from kling_omni_mcp.watch import WatcherRegistry

__all__ = ["LOCAL_CALLER", "Caller", "CreateImageParams", "KlingService", "ProgressFn", "ServiceError"]

#: Extra seconds a finished wait may spend saving images before it answers with their URLs.
SAVE_GRACE_SECONDS = 2.0


def _wait_call(task_id: str) -> str:
    return f'wait_for_task(task_id="{task_id}")'


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
        shared: StateStore | None = None,
    ) -> None:
        self.settings = settings
        self.spending = spending or Spending(None)
        self.account = AccountReader(lambda: self.client, self.spending, simulated=simulated)
        self._client = client
        self.store = store
        self.simulated = simulated
        #: Task records, poll leases, replay memory: this process's, or the replicas' (Redis).
        self.shared = shared
        self.results = ResultRecorder(
            store, http, simulated=simulated, save_lock=shared.save_lock if shared else None
        )
        #: Polls query the vendor per task, or read list sweeps when many tasks are polled.
        self.sweeper = StatusSweeper(lambda: self.client, on_final=self._seen_final)
        self.watchers = WatcherRegistry(
            self._fetch,
            initial_interval=settings.poll_initial_seconds,
            max_interval=settings.poll_max_seconds,
            shared=shared,
        )
        self._create_locks = KeyedLocks()
        #: The waiters of a task that just ended share one answer.
        self._final_answers = FinalAnswers()
        self.owners = TaskOwners(self.results.owner_record, shared=settings.shared_tasks)
        self.image_inputs = ImageInputs(settings, store, self.owners)

    def attach(self, task_group: TaskGroup) -> None:
        """Run poll loops and background saves in ``task_group`` (the server lifespan's)."""
        self.watchers.attach(task_group)
        self.results.attach(task_group)
        self.sweeper.attach(task_group)

    @property
    def client(self) -> KlingClient:
        """The Kling client; ``KlingConfigError`` saying what to set when there are no credentials."""
        if self._client is None:
            problem = self.settings.credentials_problem() or "The Kling client is not configured."
            raise KlingConfigError(problem)
        return self._client

    async def _fetch(self, task_id: str) -> TaskData:
        return await self.sweeper.get(task_id)

    def _seen_final(self, task: TaskData) -> None:
        """A list sweep saw the task end: its watcher polls now (and finds it in the sweep)."""
        watcher = self.watchers.find(task.task_id, task.external_task_id)
        if watcher is not None:
            watcher.wake()

    # --- create --------------------------------------------------------------------------------
    async def create_image(
        self,
        params: CreateImageParams,
        *,
        wait_seconds: float = 0,
        progress: ProgressFn | None = None,
        confirm: ConfirmFn | None = None,
        caller: Caller = LOCAL_CALLER,
    ) -> TaskAnswer:
        """Check everything that can be checked locally, then create one task (never two)."""
        client = self.client  # refuse early when there are no credentials
        if problem := callback_url_problem(params.callback_url, self.settings):
            raise ServiceError(problem)
        check_before_reading(params)  # cheap mistakes before any file is read
        prepared = await self.image_inputs.prepare(params.images, caller)
        callback = f"{self.settings.public_url}/callbacks/kling" if self.settings.public_url else None
        built = build_create_request(
            params, prepared, external_task_id=new_external_task_id(), default_callback_url=callback
        )
        request, notes = built.request, built.notes
        external_id = request.external_task_id or ""
        async with self._create_locks.hold(external_id):
            existing = await self._existing_task(external_id) if params.external_task_id else None
            if existing is not None and not await self.owners.visible(existing.task_id, caller):
                raise ServiceError(
                    f"external_task_id {external_id!r} cannot be used: choose another one (or leave it "
                    "out and a unique one is made)."
                )
            if existing is not None:
                notes.append(
                    f"A task with external_task_id {external_id!r} already exists: returned it instead of "
                    "creating another (no second charge)."
                )
                answer = await self._answer(existing, notes=notes)
            else:
                async with self.spending.guard(request, built.units, confirm) as spending_notes:
                    task = await client.create_task(request)
                notes.extend(spending_notes)
                self.owners.record(caller.identity, task.task_id, task.external_task_id or external_id)
                await self.results.record_created(task, request, prepared, built.units, owner=caller.identity)
                answer = await self.results.answer_for(
                    task, estimated_units=built.units, model=request.model_name, notes=notes
                )
                if not answer.done:
                    answer.next_call = _wait_call(task.task_id)
        if wait_seconds > 0 and not answer.done:
            waited = await self.wait_for_task(answer.task_id, wait_seconds, progress, caller=caller)
            waited.estimated_units = built.units
            waited.notes = notes + waited.notes
            return waited
        return answer

    async def _existing_task(self, external_id: str) -> TaskData | None:
        try:
            return await self.client.find_by_external_id(external_id)
        except KlingTaskNotFoundError:
            return None

    # --- ownership -----------------------------------------------------------------------------
    async def visible_to(self, task_id: str, caller: Caller) -> bool:
        """True when ``caller`` may see ``task_id`` (its own, or shared tasks, or a local caller).

        Decided from what this server recorded; an external id not seen since a restart is looked
        up at the vendor once to find its task id.
        """
        if await self.owners.visible(task_id, caller):
            return True
        known, _owner = await self.owners.owner_of(task_id)
        if known:
            return False
        try:
            task = await self.client.get_task(task_id)
        except KlingTaskNotFoundError:
            return False
        return task.task_id != task_id and await self.owners.visible(task.task_id, caller)

    async def check_owner(self, task_id: str, caller: Caller) -> None:
        """Raise ``ServiceError`` (the unknown-task message) unless ``caller`` may see ``task_id``."""
        if not self.owners.isolates(caller):
            return
        if not await self.visible_to(task_id, caller):
            raise ServiceError(not_found_message(task_id))

    # --- query ---------------------------------------------------------------------------------
    async def get_task(self, task_id: str, *, caller: Caller = LOCAL_CALLER) -> TaskAnswer:
        """The task's state; a finished task's images are saved locally on first sight."""
        await self.check_owner(task_id, caller)
        task = await self.client.get_task(task_id)
        watcher = self.watchers.find(task_id, task.task_id, task.external_task_id)
        if watcher is not None:
            watcher.observe(task)
        return await self._answer(task)

    async def wait_for_task(
        self,
        task_id: str,
        budget: float,
        progress: ProgressFn | None = None,
        *,
        caller: Caller = LOCAL_CALLER,
    ) -> TaskAnswer:
        """Wait up to ``budget`` seconds; return the finished task, or a resumable answer.

        Answers within ``budget`` + ``SAVE_GRACE_SECONDS`` (plus rendering): images still
        downloading then are listed by URL and saved in the background.
        """
        await self.check_owner(task_id, caller)
        deadline = anyio.current_time() + budget
        reporter = WaitProgress(task_id, budget, progress)
        outcome = await self.watchers.wait(task_id, budget, reporter.tick)
        if outcome.task is None:
            raise ServiceError(
                f"No answer about task {task_id} within {budget:g} s: the Kling API did not answer in "
                f"time (it may be slow or unreachable; get_task shows its error). "
                f"Call {_wait_call(task_id)} again."
            )
        waited = round(outcome.waited_seconds, 1)
        if outcome.done:
            await reporter.finish(outcome.task)
            within = max(0.0, deadline - anyio.current_time()) + SAVE_GRACE_SECONDS
            task = outcome.task
            return await self._final_answers.answer(
                task, waited, lambda: self._answer(task, within=within, waited_seconds=waited)
            )
        answer = await self.results.answer_for(outcome.task, waited_seconds=waited)
        answer.next_call = _wait_call(answer.task_id)
        answer.notes.append(
            f"Not finished yet: this is not an error. Call {answer.next_call} to keep waiting."
        )
        return answer

    async def list_tasks(
        self, page: int = 1, page_size: int = 20, *, caller: Caller = LOCAL_CALLER
    ) -> TaskListAnswer:
        """A page of recent tasks with their status and any files already saved.

        Under isolation the vendor's page is filtered to the caller's own tasks, so a page may
        hold fewer than ``page_size`` rows.
        """
        tasks = await self.client.list_tasks(page=page, page_size=page_size)
        rows = []
        for task in tasks:
            if not await self.owners.visible(task.task_id, caller):
                continue
            paths = await self.results.saved_paths(task.task_id)
            rows.append(
                TaskSummary(
                    task_id=task.task_id,
                    external_task_id=task.external_task_id,
                    status=task.plain_status,
                    created_at=iso_time(task.created_at),
                    image_count=len(task.result_images),
                    links=[
                        KLING_IMAGE_URI.format(task_id=task.task_id, index=i)
                        for i in await self._saved_indices(task)
                    ],
                    paths=paths,
                )
            )
        return TaskListAnswer(page=page, page_size=page_size, simulated=self.simulated, tasks=rows)

    async def _saved_indices(self, task: TaskData) -> list[int]:
        def find() -> list[int]:
            store = self.store
            return [img.index for img in task.result_images if store.saved_image(task.task_id, img.index)]

        return await anyio.to_thread.run_sync(find)

    # --- callbacks -----------------------------------------------------------------------------
    def on_callback(self, notice: CallbackNotice) -> bool:
        """A vendor callback arrived: wake that task's watcher, here and in every replica (the
        one polling it queries at once). False when no watcher of this process watches it."""
        # Re-query rather than trust the body: a callback may not carry every result image.
        return self.watchers.wake_everywhere(*notice.keys)

    # --- answers -------------------------------------------------------------------------------
    async def _answer(self, task: TaskData, *, within: float | None = None, **extra: object) -> TaskAnswer:
        """The task in plain words; a success's images saved, a failure recorded with advice."""
        answer = await self.results.answer_for(task, **extra)
        if task.succeeded:
            await self.results.save_results(task, answer, within=within)
        elif answer.status == "failed":
            await self.results.record_failure(task)
            answer.notes.append(answer.failure_note())
        else:
            answer.next_call = _wait_call(task.task_id)
        return answer
