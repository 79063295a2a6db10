"""Load: 200 concurrent waits on distinct tasks plus 50 on one task, in one server process, against
the simulator over loopback HTTP. Everything completes, each task has one poll loop however many
wait on it, every image is downloaded once; wall time, memory and requests per task are recorded
in ``tests/reliability/.results/load.json`` (and quoted in docs/reliability.md)."""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from PIL import Image
from starlette.types import Receive, Scope, Send

from kling_omni_mcp._asgi import serve_asgi
from kling_omni_mcp.config import Settings
from kling_omni_mcp.server.app import ServiceSlot, build_server
from tests.conftest import serve_sim, text_of
from tests.reliability.helpers import record_result

pytestmark = pytest.mark.anyio

DISTINCT = 200
SHARED_WAITERS = 50
DURATION = 4.0  # seconds a simulated task takes
INTERVAL = 1.0  # fixed poll interval: one loop polls a task at most DURATION / INTERVAL + 1 times


def _rss_mb(field: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process in MB (Linux), else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Start a fresh high-water mark for VmHWM (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def test_loopback_servers_answer_without_nagle_delay() -> None:
    """Every answer of the embedded servers (simulator, tests) leaves at once: TCP_NODELAY is set on
    accepted connections. Without it, each answer on a kept-alive connection waited ~40 ms for a
    delayed ACK, which throttled every poll, download and load test."""
    seen: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        assert sock is not None, "uvicorn no longer exposes the transport: update this test"
        seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async with serve_asgi(app) as url, httpx2.AsyncClient() as http:
        started = time.monotonic()
        for _ in range(20):  # one kept-alive connection
            assert (await http.get(url)).text == "ok"
        elapsed = time.monotonic() - started
    assert seen and all(seen), seen
    assert elapsed < 5  # with the delay it was at least 20 x 40 ms; this only guards against hangs


@pytest.mark.slow
async def test_250_concurrent_waits_one_poll_loop_per_task(
    make_settings: Callable[..., Settings],
) -> None:
    async with serve_sim(duration=DURATION, image_scale=0.05) as vendor:
        sim, base_url = vendor.sim, vendor.base_url
        settings = make_settings(
            base_url, poll_initial_seconds=INTERVAL, poll_max_seconds=INTERVAL, http_timeout=30
        )
        slot = ServiceSlot()
        async with Client(build_server(settings, slot=slot)) as client:
            service = slot.current
            assert service is not None

            # Create the tasks (concurrently, like many agents at once).
            created_at = time.monotonic()
            task_ids: list[str] = []

            async def create(i: int) -> None:
                result = await client.call_tool("create_image", {"prompt": f"Load test picture {i}"})
                assert not result.is_error, text_of(result)
                task_ids.append(result.structured_content["task_id"])

            async with anyio.create_task_group() as tg:
                for i in range(DISTINCT + 1):
                    tg.start_soon(create, i)
            create_seconds = time.monotonic() - created_at
            shared, distinct = task_ids[0], task_ids[1:]
            assert len(set(task_ids)) == DISTINCT + 1 and sim.counters.creates == DISTINCT + 1

            # Wait on them all at once: 200 distinct tasks, and 50 waiters on one more.
            peak_reset = _reset_peak_rss()
            rss_before = _rss_mb("VmRSS")
            maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            cpu_before = _cpu_seconds()
            results: dict[int, Any] = {}
            progress_count = 0
            watchers_peak = 0

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                nonlocal progress_count
                progress_count += 1

            async def wait(slot_no: int, task_id: str) -> None:
                results[slot_no] = await client.call_tool(
                    "wait_for_task",
                    {"task_id": task_id, "timeout_seconds": 120},
                    progress_callback=on_progress,
                )

            async def watch_registry() -> None:
                nonlocal watchers_peak
                while len(results) < DISTINCT + SHARED_WAITERS:
                    watchers_peak = max(watchers_peak, len(service.watchers))
                    await anyio.sleep(0.05)

            started = time.monotonic()
            with anyio.fail_after(120):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(watch_registry)
                    for n, task_id in enumerate(distinct):
                        tg.start_soon(wait, n, task_id)
                    for n in range(SHARED_WAITERS):
                        tg.start_soon(wait, DISTINCT + n, shared)
            wall = time.monotonic() - started
            cpu = _cpu_seconds() - cpu_before
            peak_rss = _rss_mb("VmHWM") if peak_reset else None
            maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

            # Every waiter got the finished task with its saved image.
            assert len(results) == DISTINCT + SHARED_WAITERS
            paths: dict[str, str] = {}
            for n, result in results.items():
                assert not result.is_error, (n, text_of(result))
                data = result.structured_content
                assert data["status"] == "succeeded" and data["done"] is True
                [image] = data["images"]
                assert paths.setdefault(data["task_id"], image["path"]) == image["path"]
            assert len(paths) == DISTINCT + 1
            for path in paths.values():
                with Image.open(path) as img:
                    img.verify()

            # One poll loop per task: no task was queried more than one loop can in the time.
            bound = DURATION / INTERVAL + 1
            per_task = [sim.counters.queries_by_id[t] for t in task_ids]
            assert max(per_task) <= bound, sorted(per_task)[-10:]
            assert sim.counters.queries_by_id[shared] <= bound  # 50 waiters, still one loop
            assert 1 <= watchers_peak <= DISTINCT + 1
            assert len(service.watchers) == 0  # every loop ended with its last waiter
            assert sim.counters.downloads == DISTINCT + 1  # each image fetched once
            assert progress_count >= DISTINCT + SHARED_WAITERS  # heartbeats reached the waiters

    figures = {
        "tasks": DISTINCT + 1,
        "waiters": DISTINCT + SHARED_WAITERS,
        "waiters_on_shared_task": SHARED_WAITERS,
        "task_duration_s": DURATION,
        "poll_interval_s": INTERVAL,
        "create_wall_s": round(create_seconds, 2),
        "wait_wall_s": round(wall, 2),
        "cpu_s_during_waits": round(cpu, 2),
        "queries_total": sum(per_task),
        "queries_per_task_max": max(per_task),
        "queries_per_task_mean": round(sum(per_task) / len(per_task), 2),
        "queries_per_task_bound": bound,
        "queries_shared_task": sim.counters.queries_by_id[shared],
        "downloads": sim.counters.downloads,
        "progress_notifications": progress_count,
        "watchers_peak": watchers_peak,
        "rss_before_mb": round(rss_before, 1) if rss_before else None,
        "peak_rss_during_waits_mb": round(peak_rss, 1) if peak_rss else None,
        "peak_rss_delta_mb": round(peak_rss - rss_before, 1) if peak_rss and rss_before else None,
        "ru_maxrss_delta_mb": round(maxrss_after - maxrss_before, 1),
    }
    record_result("load", figures)
