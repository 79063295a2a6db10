"""Finish-to-answer delay: how long after a task really ends does ``wait_for_task`` answer?

The simulator knows each task's true end (``TaskRecord.created_mono + done_offset`` on
``time.monotonic``, the clock of this very process), so the delay is measured, not estimated.
An answer includes what the user waits for: the re-query, the image download and the rendered
result with its preview.

* **Polling** (stdio hosts; the default intervals 1 s growing to 4 s): each task's wait starts a
  little after its create (0 to 3.5 s: the agent's own turn), which spreads the poll phases the
  way real use does. Baseline: a bare loop that polls every 1 s and downloads the image. The
  same tasks are also waited for by a second server polling at a fixed 2.5 s interval, so the
  default schedule can be compared with a candidate replacement on the same run.
* **Callbacks** (HTTP transport with ``KLING_PUBLIC_URL`` pointing at itself; polling every
  30 s, so only the callback can end a wait early). Baseline: a bare endpoint that, on the same
  callback, re-queries the task and downloads the image.

The request rate is status queries per second of the task's life, from its creation to the
answer: summed over tasks, it is what the vendor sees per task in flight. (Per second of
waiting only, it is higher; the rows give that too.)
"""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from benchmarks._common import TEST_KEY, Mode, Row, fmt
from benchmarks._sim import SimEnv, make_settings, simulated_vendor
from kling_omni_mcp._asgi import serve_asgi
from kling_omni_mcp.server.app import build_server
from kling_omni_mcp.server.http import build_http_app

__all__ = ["ALT_INTERVAL", "MAX_POLL_RATE", "TARGET_CALLBACK_S", "TARGET_POLL_MEAN_S", "run"]

TARGET_POLL_MEAN_S = 1.5
MAX_POLL_RATE = 0.5
TARGET_CALLBACK_S = 0.100
#: A fixed interval measured next to the default schedule, so a change can be decided on numbers.
ALT_INTERVAL = 2.5
OMNI = "/v1/images/omni-image"
#: Seconds between task creations: tasks that all ended at once would compete for the CPU
#: (download, preview) and measure contention instead of delay.
STAGGER = 0.5

Job = Callable[[], Awaitable["Sample"]]


@dataclass(frozen=True)
class Sample:
    """One task: seconds from its real end to the answer, and the status queries it cost."""

    delay: float
    queries: int
    #: Seconds from the task's creation to the answer.
    life: float
    #: Seconds from the start of the wait to the answer.
    watched: float

    @classmethod
    def of(cls, env: SimEnv, task_id: str, started: float, arrived: float) -> Sample:
        """The sample of a task answered at ``arrived`` after a wait begun at ``started``."""
        record = env.sim.tasks[task_id]
        return cls(
            delay=arrived - env.end_time(task_id),
            queries=env.sim.counters.queries_by_id[task_id],
            life=arrived - record.created_mono,
            watched=arrived - started,
        )


def _mean(samples: Sequence[Sample], attr: str) -> float:
    return statistics.fmean(getattr(s, attr) for s in samples)


def _life_rate(samples: Sequence[Sample]) -> float:
    """Status queries per second of task life, over all the tasks together."""
    return sum(s.queries for s in samples) / sum(s.life for s in samples)


def _watch_rate(samples: Sequence[Sample]) -> float:
    """Status queries per second of waiting, over all the tasks together."""
    return sum(s.queries for s in samples) / sum(s.watched for s in samples)


async def _gather_groups(*groups: Sequence[Job]) -> list[list[Sample]]:
    """Run every job of every group side by side; the samples of each group, kept apart."""
    out: list[list[Sample]] = [[] for _ in groups]

    async def one(job: Job, into: list[Sample]) -> None:
        into.append(await job())

    async with anyio.create_task_group() as tg:
        for jobs, into in zip(groups, out, strict=True):
            for job in jobs:
                tg.start_soon(one, job, into)
    return out


def _schedule(count: int, duration: float, shift: float = 0.0) -> list[tuple[float, float]]:
    """(creation time, wait offset after the create) per task.

    The offsets spread evenly over one longest poll interval (4 s; less for short tasks, so a
    wait starts before its task ends), so every phase of the backoff is sampled.
    """
    span = min(4.0, 0.75 * duration)
    return [(i * STAGGER + shift, i * span / count) for i in range(count)]


async def _wait_via_mcp(client: Client, env: SimEnv, start: float, offset: float, budget: float) -> Sample:
    await anyio.sleep(start)
    created = await client.call_tool("create_image", {"prompt": "A benchmark kite"})
    if created.is_error or not created.structured_content:
        raise RuntimeError(f"create_image failed: {created.content}")
    task_id = str(created.structured_content["task_id"])
    await anyio.sleep(offset)
    started = time.monotonic()
    waited = await client.call_tool("wait_for_task", {"task_id": task_id, "timeout_seconds": budget})
    arrived = time.monotonic()
    data = waited.structured_content or {}
    if waited.is_error or data.get("status") != "succeeded":
        raise RuntimeError(f"wait_for_task did not finish: {waited.content}")
    return Sample.of(env, task_id, started, arrived)


async def _bare_create(raw: httpx2.AsyncClient, env: SimEnv, callback_url: str | None = None) -> str:
    body: dict[str, Any] = {"prompt": "A benchmark kite"}
    if callback_url:
        body["callback_url"] = callback_url
    response = await raw.post(env.base_url + OMNI, json=body)
    response.raise_for_status()
    return str(response.json()["data"]["task_id"])


async def _bare_fetch_result(raw: httpx2.AsyncClient, env: SimEnv, task_id: str) -> bool:
    """One status query; on success also download every image (what an answer needs)."""
    data = (await raw.get(f"{env.base_url}{OMNI}/{task_id}")).json()["data"]
    if data["task_status"] != "succeed":
        return False
    for image in data["task_result"]["images"]:
        (await raw.get(image["url"])).raise_for_status()
    return True


async def _bare_poll(
    raw: httpx2.AsyncClient, env: SimEnv, start: float, offset: float, interval: float = 1.0
) -> Sample:
    await anyio.sleep(start)
    task_id = await _bare_create(raw, env)
    await anyio.sleep(offset)
    started = time.monotonic()
    # The baseline is a plain poll loop on purpose.
    while not await _bare_fetch_result(raw, env, task_id):  # noqa: ASYNC110
        await anyio.sleep(interval)
    return Sample.of(env, task_id, started, time.monotonic())


async def polling(duration: float, tasks: int) -> list[list[Sample]]:
    """[ours with default intervals, ours with a fixed 2.5 s interval, bare 1 s poller] samples for
    ``tasks`` tasks of ``duration`` seconds each."""
    budget = duration + 30
    fixed = {"poll_initial_seconds": ALT_INTERVAL, "poll_max_seconds": ALT_INTERVAL}
    async with (
        simulated_vendor(duration=duration) as env,
        Client(build_server(make_settings(env))) as client,
        Client(build_server(make_settings(env, **fixed))) as alt,
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {TEST_KEY}"}, timeout=30) as raw,
    ):
        # Each group's tasks are created a third of a step after the previous group's, so no
        # two tasks end together.
        step = STAGGER / 3
        return await _gather_groups(
            [partial(_wait_via_mcp, client, env, s, o, budget) for s, o in _schedule(tasks, duration)],
            [partial(_wait_via_mcp, alt, env, s, o, budget) for s, o in _schedule(tasks, duration, step)],
            [partial(_bare_poll, raw, env, s, o) for s, o in _schedule(tasks, duration, 2 * step)],
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def callbacks(duration: float, tasks: int) -> list[list[Sample]]:
    """[ours over the HTTP transport, bare callback receiver] samples."""
    async with simulated_vendor(duration=duration) as env:
        port = _free_port()
        settings = make_settings(
            env, poll_initial_seconds=30, poll_max_seconds=30, public_url=f"http://127.0.0.1:{port}"
        )
        auth = {"Authorization": f"Bearer {TEST_KEY}"}
        async with httpx2.AsyncClient(headers=auth, timeout=30) as raw:
            arrived: dict[str, float] = {}
            done: dict[str, anyio.Event] = {}

            async def on_callback(request: Request) -> Response:
                data = await request.json()
                if data.get("task_status") == "succeed":
                    task_id = str(data["task_id"])
                    # Trust nothing in the body, as the server does: re-query, then download.
                    if await _bare_fetch_result(raw, env, task_id):
                        arrived[task_id] = time.monotonic()
                        done.setdefault(task_id, anyio.Event()).set()
                return JSONResponse({"ok": True})

            receiver = Starlette(routes=[Route("/cb", on_callback, methods=["POST"])])

            async def bare_one(receiver_url: str, start: float, offset: float) -> Sample:
                await anyio.sleep(start)
                task_id = await _bare_create(raw, env, f"{receiver_url}/cb")
                event = done.setdefault(task_id, anyio.Event())
                await anyio.sleep(offset)
                started = time.monotonic()
                with anyio.fail_after(duration + 30):
                    await event.wait()
                return Sample.of(env, task_id, started, arrived[task_id])

            mcp_http = httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=120))
            async with (
                mcp_http,
                serve_asgi(build_http_app(settings), port=port) as url,
                serve_asgi(receiver) as receiver_url,
                Client(streamable_http_client(f"{url}/mcp", http_client=mcp_http)) as client,
            ):
                return await _gather_groups(
                    [
                        partial(_wait_via_mcp, client, env, s, o, duration + 30)
                        for s, o in _schedule(tasks, duration)
                    ],
                    [
                        partial(bare_one, receiver_url, s, o)
                        for s, o in _schedule(tasks, duration, STAGGER / 2)
                    ],
                )


def polling_rows(duration: float, ours: list[Sample], alt: list[Sample], bare: list[Sample]) -> list[Row]:
    """Mean and worst delay and the vendor request rate against the 1 s poller; then the same
    for the alternative fixed interval."""
    label = f"polling, {duration:g} s task"
    base = "bare 1 s poller"
    mean, bare_mean, alt_mean = _mean(ours, "delay"), _mean(bare, "delay"), _mean(alt, "delay")
    worst, bare_worst = max(s.delay for s in ours), max(s.delay for s in bare)
    rate, bare_rate, alt_rate = _life_rate(ours), _life_rate(bare), _life_rate(alt)
    return [
        Row(
            f"{label}: mean delay, end → answer ({len(ours)} tasks)",
            fmt(mean, "s"),
            fmt(bare_mean, "s"),
            f"{mean - bare_mean:+.2f} s",
            f"< {TARGET_POLL_MEAN_S:g} s",
            mean < TARGET_POLL_MEAN_S,
            base,
        ),
        Row(
            f"{label}: worst delay",
            fmt(worst, "s"),
            fmt(bare_worst, "s"),
            f"{worst - bare_worst:+.2f} s",
            baseline_is=base,
        ),
        Row(
            f"{label}: vendor status queries per second of task life",
            fmt(rate, "req/s"),
            fmt(bare_rate, "req/s"),
            f"{_mean(ours, 'queries'):.1f} vs {_mean(bare, 'queries'):.1f} queries per task; "
            f"{_watch_rate(ours):.2f} vs {_watch_rate(bare):.2f} per second of waiting",
            f"≤ {MAX_POLL_RATE:g} req/s",
            rate <= MAX_POLL_RATE,
            base,
        ),
        Row(
            f"{label}, alternative fixed {ALT_INTERVAL:g} s interval: mean delay; rate",
            f"{fmt(alt_mean, 's')}; {fmt(alt_rate, 'req/s')}",
            f"{fmt(bare_mean, 's')}; {fmt(bare_rate, 'req/s')}",
            f"{alt_mean - bare_mean:+.2f} s; worst {max(s.delay for s in alt):.2f} s; "
            f"{_mean(alt, 'queries'):.1f} queries per task",
            f"< {TARGET_POLL_MEAN_S:g} s; ≤ {MAX_POLL_RATE:g} req/s",
            alt_mean < TARGET_POLL_MEAN_S and alt_rate <= MAX_POLL_RATE,
            base,
            counts=False,
        ),
    ]


def callback_rows(duration: float, ours: list[Sample], bare: list[Sample]) -> list[Row]:
    """Mean and worst delay with callbacks, against the bare callback receiver."""
    label = f"callbacks over HTTP, {duration:g} s task"
    mean, bare_mean = _mean(ours, "delay") * 1000, _mean(bare, "delay") * 1000
    worst, bare_worst = max(s.delay for s in ours) * 1000, max(s.delay for s in bare) * 1000
    base = "bare callback receiver"
    target = TARGET_CALLBACK_S * 1000
    return [
        Row(
            f"{label}: mean delay, end → answer ({len(ours)} tasks)",
            fmt(mean, "ms"),
            fmt(bare_mean, "ms"),
            f"{mean - bare_mean:+.0f} ms",
            f"< {target:.0f} ms",
            mean < target,
            base,
        ),
        Row(
            f"{label}: worst delay",
            fmt(worst, "ms"),
            fmt(bare_worst, "ms"),
            f"{worst - bare_worst:+.0f} ms",
            f"< {target:.0f} ms",
            worst < target,
            base,
        ),
    ]


async def run(mode: Mode) -> list[Row]:
    """Polling for 6 s and 20 s tasks (quick: 1.5 s, smoke: 0.5 s), then callbacks."""
    durations = {"full": [6.0, 20.0], "quick": [1.5], "smoke": [0.5]}[mode]
    tasks = {"full": 8, "quick": 3, "smoke": 1}[mode]
    results: dict[float, list[list[Sample]]] = {}

    async def poll(duration: float) -> None:
        results[duration] = await polling(duration, tasks)

    # The durations run side by side: the whole section takes as long as the longest task.
    async with anyio.create_task_group() as tg:
        for duration in durations:
            tg.start_soon(poll, duration)
    rows: list[Row] = []
    for duration in durations:
        ours, alt, bare = results[duration]
        rows += polling_rows(duration, ours, alt, bare)
    cb_duration = {"full": 6.0, "quick": 1.5, "smoke": 0.5}[mode]
    ours, bare = await callbacks(cb_duration, {"full": tasks, "quick": 2, "smoke": 1}[mode])
    return rows + callback_rows(cb_duration, ours, bare)
