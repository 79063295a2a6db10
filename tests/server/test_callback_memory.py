"""The callback route's memories stay bounded and forget on time (a fake clock, no sleeping)."""

from __future__ import annotations

from kling_omni_mcp.server.callback_route import ReplayMemory, WakeThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_replay_memory_remembers_for_the_window_and_is_bounded() -> None:
    clock = Clock()
    memory = ReplayMemory(keep_seconds=600, capacity=100, clock=clock)
    assert memory.first_time("msg_1")
    assert not memory.first_time("msg_1")
    clock.now += 599
    assert not memory.first_time("msg_1")
    clock.now += 2
    assert memory.first_time("msg_1")  # past the window: a stale signature is refused anyway
    for n in range(10_000):
        memory.first_time(f"flood_{n}")
    assert len(memory) <= 100


def test_wake_throttle_one_per_interval_defers_one_and_drops_the_rest() -> None:
    clock = Clock()
    throttle = WakeThrottle(interval=1.0, capacity=50, clock=clock)
    assert throttle.admit(("t1", "ext1")) == 0  # first: now
    assert throttle.admit(("t1",)) == 1.0  # within the interval: deferred to its end
    assert throttle.admit(("ext1",)) is None  # one is already coming (same task by its other id)
    assert throttle.admit(("t2",)) == 0  # other tasks are not held up
    clock.now += 1.0
    throttle.done(("t1",))
    assert throttle.admit(("t1",)) == 1.0  # the deferred wake-up used this second's slot
    assert throttle.admit(("t1",), final=True) == 0  # the first final status: at once
    assert throttle.admit(("t1",), final=True) is None  # later ones wait their turn like the rest
    for n in range(5_000):
        throttle.admit((f"task_{n}",), final=n % 2 == 0)
    assert len(throttle._next) <= 50 and len(throttle._finished) <= 50
