"""One lock per key: holders of a key take turns, other keys run at once, and an entry is
released (and dropped) in ``finally`` only when nobody holds or waits on it."""

from __future__ import annotations

import anyio
import pytest

from kling_omni_mcp.keyed_locks import KeyedLocks

pytestmark = pytest.mark.anyio


async def test_holders_of_one_key_take_turns_while_other_keys_run_at_once() -> None:
    locks = KeyedLocks()
    inside: dict[str, int] = {"a": 0, "b": 0}
    most: dict[str, int] = {"a": 0, "b": 0}
    overlap_across_keys = False

    async def hold(key: str) -> None:
        nonlocal overlap_across_keys
        async with locks.hold(key):
            inside[key] += 1
            most[key] = max(most[key], inside[key])
            overlap_across_keys |= inside["a"] > 0 and inside["b"] > 0
            await anyio.sleep(0.02)
            inside[key] -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(hold, "a")
            tg.start_soon(hold, "b")
        await anyio.sleep(0.01)
        assert len(locks) == 2  # held and waited on: never dropped meanwhile
    assert most == {"a": 1, "b": 1}
    assert overlap_across_keys
    assert len(locks) == 0


async def test_a_waiter_arriving_while_others_wait_gets_the_same_lock() -> None:
    # The bug this guards against: popping the entry when the first holder leaves, while a
    # second caller still waits on the old lock, lets a third caller run next to the second.
    locks = KeyedLocks()
    inside = 0
    most = 0

    async def hold(delay: float) -> None:
        nonlocal inside, most
        await anyio.sleep(delay)
        async with locks.hold("k"):
            inside += 1
            most = max(most, inside)
            await anyio.sleep(0.03)
            inside -= 1

    async with anyio.create_task_group() as tg:
        for delay in (0, 0.01, 0.035, 0.05, 0.065):
            tg.start_soon(hold, delay)
    assert most == 1
    assert len(locks) == 0


async def test_an_exception_inside_releases_the_lock() -> None:
    locks = KeyedLocks()
    with pytest.raises(RuntimeError):
        async with locks.hold("k"):
            raise RuntimeError("boom")
    assert len(locks) == 0
    with anyio.fail_after(1):  # would hang if the lock were still held
        async with locks.hold("k"):
            pass


async def test_a_cancelled_waiter_releases_its_place() -> None:
    locks = KeyedLocks()
    gave_up = False

    async def impatient() -> None:
        nonlocal gave_up
        with anyio.move_on_after(0.05):
            async with locks.hold("k"):  # held by the test: never entered
                pytest.fail("entered a held lock")
        gave_up = True

    async with locks.hold("k"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(impatient)
        assert gave_up and len(locks) == 1  # only the holder is left
    assert len(locks) == 0
