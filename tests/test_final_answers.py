"""``FinalAnswers`` on its own: the waiters of a task that just ended share one built answer,
each with its own ``waited_seconds``; a new state, an incomplete answer or a builder that did not
finish makes the others build their own; entries expire and stay bounded."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import pytest

from kling_omni_mcp.answers import ImageInfo, TaskAnswer
from kling_omni_mcp.final_answers import FinalAnswers
from kling_omni_mcp.kling.models import TaskData

pytestmark = pytest.mark.anyio


def finished(task_id: str = "t1", status: str = "succeed") -> TaskData:
    return TaskData(task_id=task_id, task_status=status)


class Builder:
    """Builds answers like the service does (slowly enough for co-waiters to arrive), counting."""

    def __init__(self, *, saved: bool = True, status: str = "succeeded", seconds: float = 0.05) -> None:
        self.saved = saved
        self.status = status
        self.seconds = seconds
        self.builds = 0
        self.release: anyio.Event | None = None  # when set, builds wait for it
        self.started = anyio.Event()

    def for_(self, task: TaskData, waited: float) -> Callable[[], Awaitable[TaskAnswer]]:
        async def build() -> TaskAnswer:
            self.builds += 1
            self.started.set()
            if self.release is not None:
                await self.release.wait()
            await anyio.sleep(self.seconds)
            images = (
                []
                if self.status != "succeeded"
                else [
                    ImageInfo(
                        index=i,
                        url=f"https://cdn.example/{task.task_id}/{i}.png",
                        path=f"/out/{task.task_id}/{task.task_id}_{i}.png" if self.saved else None,
                    )
                    for i in range(2)
                ]
            )
            return TaskAnswer(
                task_id=task.task_id, status=self.status, done=True, images=images, waited_seconds=waited
            )

        return build


async def ask_together(
    answers: FinalAnswers, task: TaskData, builder: Builder, waits: list[float]
) -> list[TaskAnswer]:
    """One ``answer`` call per entry of ``waits``, all at once (as co-waiters woken together)."""
    results: list[TaskAnswer | None] = [None] * len(waits)

    async def one(i: int, waited: float) -> None:
        results[i] = await answers.answer(task, waited, builder.for_(task, waited))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for i, waited in enumerate(waits):
                tg.start_soon(one, i, waited)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


@pytest.mark.parametrize(
    ("status", "saved"), [("succeeded", True), ("failed", True)], ids=["succeeded", "failed"]
)
async def test_co_waiters_share_one_build_with_their_own_waited_seconds(status: str, saved: bool) -> None:
    answers, builder = FinalAnswers(), Builder(status=status, saved=saved)
    task = finished(status="succeed" if status == "succeeded" else "failed")
    waits = [float(n) for n in range(10)]
    results = await ask_together(answers, task, builder, waits)
    assert builder.builds == 1
    assert [r.waited_seconds for r in results] == waits
    assert all(r.images == results[0].images and r.status == status for r in results)
    # A co-waiter arriving a little later (same state) still gets the shared answer.
    late = await answers.answer(task, 42.0, builder.for_(task, 42.0))
    assert builder.builds == 1 and late.waited_seconds == 42.0 and late.images == results[0].images


async def test_a_new_state_of_the_same_task_is_built_again() -> None:
    answers, builder = FinalAnswers(), Builder()
    first, second = finished("t1"), finished("t1")  # equal content, but another poll's object
    await answers.answer(first, 1.0, builder.for_(first, 1.0))
    await answers.answer(second, 2.0, builder.for_(second, 2.0))
    assert builder.builds == 2
    await answers.answer(second, 3.0, builder.for_(second, 3.0))
    assert builder.builds == 2  # the newest state's answer is shared
    other = finished("t2")
    await answers.answer(other, 1.0, builder.for_(other, 1.0))
    assert builder.builds == 3  # another task never gets this one's answer


async def test_an_incomplete_answer_is_not_shared() -> None:
    # An image not saved yet: each waiter builds its own, and so retries the save.
    answers, builder = FinalAnswers(), Builder(saved=False)
    task = finished()
    results = await ask_together(answers, task, builder, [1.0, 2.0, 3.0, 4.0])
    assert builder.builds == 4
    assert [r.waited_seconds for r in results] == [1.0, 2.0, 3.0, 4.0]
    assert all(img.path is None for r in results for img in r.images)
    assert len(answers) == 0  # nothing kept


async def test_a_cancelled_builder_lets_the_others_build() -> None:
    answers, builder = FinalAnswers(), Builder()
    task = finished()
    started = anyio.Event()
    got: list[TaskAnswer] = []

    async def never_done() -> TaskAnswer:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def second() -> None:
        got.append(await answers.answer(task, 2.0, builder.for_(task, 2.0)))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            first = anyio.CancelScope()

            async def run_first() -> None:
                with first:
                    await answers.answer(task, 1.0, never_done)

            tg.start_soon(run_first)
            await started.wait()
            tg.start_soon(second)
            await anyio.sleep(0.1)
            assert got == []  # the second waits for the first's build...
            first.cancel()  # ...whose waiter goes away (its client disconnected)
    [answer] = got
    assert answer.waited_seconds == 2.0 and all(img.path for img in answer.images)
    assert builder.builds == 1  # the second built its own


async def test_a_builder_error_lets_the_others_build() -> None:
    answers, builder = FinalAnswers(), Builder()
    task = finished()
    started, release = anyio.Event(), anyio.Event()
    errors: list[Exception] = []
    got: list[TaskAnswer] = []

    async def broken() -> TaskAnswer:
        started.set()
        await release.wait()
        raise RuntimeError("disk full (test)")

    async def first() -> None:
        try:
            await answers.answer(task, 1.0, broken)
        except RuntimeError as exc:
            errors.append(exc)

    async def second() -> None:
        got.append(await answers.answer(task, 2.0, builder.for_(task, 2.0)))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await started.wait()
            tg.start_soon(second)
            await anyio.sleep(0.05)
            release.set()
    assert [str(e) for e in errors] == ["disk full (test)"]
    [answer] = got
    assert answer.waited_seconds == 2.0 and builder.builds == 1


async def test_answers_expire() -> None:
    answers, builder = FinalAnswers(keep_seconds=0.1), Builder(seconds=0)
    task = finished()
    await answers.answer(task, 1.0, builder.for_(task, 1.0))
    await answers.answer(task, 1.0, builder.for_(task, 1.0))
    assert builder.builds == 1
    await anyio.sleep(0.2)
    await answers.answer(task, 2.0, builder.for_(task, 2.0))
    assert builder.builds == 2


async def test_an_expired_answer_is_not_shared_while_an_older_build_is_still_running() -> None:
    # An entry still being built sits at the front of the expiry order; the expired answers
    # behind it must not be handed out anyway.
    answers = FinalAnswers(keep_seconds=0.1)
    slow, quick = Builder(seconds=0), Builder(seconds=0)
    slow.release = anyio.Event()
    stuck, task = finished("stuck"), finished("t1")
    async with anyio.create_task_group() as tg:
        tg.start_soon(answers.answer, stuck, 1.0, slow.for_(stuck, 1.0))
        await slow.started.wait()
        await answers.answer(task, 1.0, quick.for_(task, 1.0))
        await anyio.sleep(0.2)
        await answers.answer(task, 2.0, quick.for_(task, 2.0))
        assert quick.builds == 2
        slow.release.set()


async def test_entries_stay_bounded_by_the_limit() -> None:
    answers, builder = FinalAnswers(limit=5), Builder(seconds=0)
    tasks = [finished(f"t{n}") for n in range(40)]
    for task in tasks:
        await answers.answer(task, 1.0, builder.for_(task, 1.0))
        assert len(answers) <= 5
    assert builder.builds == 40
    # The newest are still shared.
    await answers.answer(tasks[-1], 2.0, builder.for_(tasks[-1], 2.0))
    assert builder.builds == 40
