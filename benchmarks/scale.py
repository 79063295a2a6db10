"""Scale: 1, 10, 100, 500 concurrent ``wait_for_task`` calls on distinct tasks, in one server,
then 10,000 waits over 1,000 tasks (``replicas.one_process_rows``).

Each size runs in a fresh child process (so its peak RSS is its own) holding the MCP server and
an in-memory client; the simulator runs here, in the parent, so its memory and CPU are not
counted against the server and its counters see every vendor request. The baseline of every
size is the single wait: ideally wall time and delay stay flat, vendor requests grow linearly
(one poll loop per task, at most 0.5 per second each) and memory grows by little per wait.

Results are scaled to 256 px (``image_scale=0.25``): at 500 tasks the simulator would otherwise
spend most of the run rendering 1024 px PNGs, which the real vendor does not do on our CPU.

Run a child by hand: ``python -m benchmarks.scale --child N BASE_URL OUT_DIR DURATION``.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from benchmarks._common import PYTHON, ROOT, TEST_KEY, Mode, Row, child_env, fmt, proc_status_kb
from benchmarks._sim import simulated_vendor
from benchmarks.replicas import one_process_rows

__all__ = ["run"]

#: Creates in flight at once while a child sets its tasks up (not timed).
_CREATE_CONCURRENCY = 32


@dataclass(frozen=True)
class SizeResult:
    """What one size measured."""

    size: int
    wall: float
    cpu: float
    mean_delay: float
    worst_delay: float
    queries: int
    peak_rss_mb: float
    idle_rss_mb: float

    @property
    def rate(self) -> float:
        """Status queries per second to the vendor, all tasks together."""
        return self.queries / self.wall


# --- the child: one server, N concurrent waits ------------------------------------------------


def _cpu_seconds() -> float:
    """User + system CPU time of this process so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _child(size: int, base_url: str, out_dir: Path, duration: float) -> dict[str, Any]:
    from mcp import Client
    from pydantic import SecretStr

    from kling_omni_mcp.config import Settings
    from kling_omni_mcp.runtime import tune_gc
    from kling_omni_mcp.server.app import build_server

    tune_gc()  # as the server command does at start

    settings = Settings(
        api_key=SecretStr(TEST_KEY),
        api_base_url=base_url,
        output_dir=out_dir,
        input_dirs=[out_dir],
        log_level="WARNING",
        download_allow_private=True,  # the simulator serves its results on loopback
    )
    async with Client(build_server(settings)) as client:
        idle_kb = proc_status_kb("VmRSS")
        limiter = anyio.CapacityLimiter(_CREATE_CONCURRENCY)
        task_ids: list[str] = []

        async def create(i: int) -> None:
            async with limiter:
                result = await client.call_tool("create_image", {"prompt": f"Scale test {i}"})
            if result.is_error or not result.structured_content:
                raise RuntimeError(f"create_image failed: {result.content}")
            task_ids.append(str(result.structured_content["task_id"]))

        async with anyio.create_task_group() as tg:
            for i in range(size):
                tg.start_soon(create, i)

        arrivals: dict[str, float] = {}

        async def wait(task_id: str) -> None:
            args = {"task_id": task_id, "timeout_seconds": duration + 60}
            result = await client.call_tool("wait_for_task", args)
            arrivals[task_id] = time.monotonic()
            data = result.structured_content or {}
            if result.is_error or data.get("status") != "succeeded":
                raise RuntimeError(f"wait_for_task did not finish: {result.content}")

        cpu_before = _cpu_seconds()
        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for task_id in task_ids:
                tg.start_soon(wait, task_id)
        wall = time.monotonic() - started
        cpu = _cpu_seconds() - cpu_before
    return {
        "started": started,
        "wall": wall,
        "cpu": cpu,
        "arrivals": arrivals,
        "idle_rss_kb": idle_kb,
        "peak_rss_kb": proc_status_kb("VmHWM"),
    }


def child_main(argv: list[str]) -> int:
    """``--child SIZE BASE_URL OUT_DIR DURATION``: run one size, print the result as JSON."""
    size, base_url, out_dir, duration = int(argv[0]), argv[1], Path(argv[2]), float(argv[3])
    result = anyio.run(_child, size, base_url, out_dir, duration)
    print(json.dumps(result))
    return 0


# --- the parent: simulator, one child per size --------------------------------------------------


async def measure_size(size: int, duration: float) -> SizeResult:
    """Run one child against a fresh simulator; combine its timings with the simulator's view."""
    async with simulated_vendor(duration=duration, image_scale=0.25) as env:
        command = [
            PYTHON,
            "-m",
            "benchmarks.scale",
            "--child",
            str(size),
            env.base_url,
            str(env.folder / "out"),
            str(duration),
        ]
        with anyio.fail_after(duration + 180):
            done = await anyio.run_process(command, cwd=ROOT, env=child_env(env.folder), check=False)
        if done.returncode != 0:
            raise RuntimeError(f"scale child for {size} failed:\n{done.stderr.decode()[-3000:]}")
        data = json.loads(done.stdout.decode().strip().splitlines()[-1])
        delays = [arrived - env.end_time(task_id) for task_id, arrived in data["arrivals"].items()]
        return SizeResult(
            size=size,
            wall=data["wall"],
            cpu=data["cpu"],
            mean_delay=statistics.fmean(delays),
            worst_delay=max(delays),
            queries=env.sim.counters.queries,
            peak_rss_mb=data["peak_rss_kb"] / 1024,
            idle_rss_mb=data["idle_rss_kb"] / 1024,
        )


def rows_from(results: list[SizeResult], duration: float) -> list[Row]:
    """Per size: wall time, vendor request rate and peak memory, each against the single wait."""
    one = results[0]
    base = "1 wait"
    rows: list[Row] = []
    for r in results:
        label = f"{r.size} concurrent wait{'s' if r.size > 1 else ''} ({duration:g} s tasks)"
        rows.append(
            Row(
                f"{label}: wall time, waits start → last answer",
                fmt(r.wall, "s"),
                fmt(one.wall, "s"),
                base_is_one(
                    r,
                    f"{r.wall / one.wall:.2f}x; mean delay {r.mean_delay:.2f} s, "
                    f"worst {r.worst_delay:.2f} s; server CPU {r.cpu:.1f} s "
                    f"({1000 * r.cpu / r.size:.0f} ms per wait)",
                ),
                baseline_is=base,
            )
        )
        rows.append(
            Row(
                f"{label}: vendor status queries per second",
                fmt(r.rate, "req/s"),
                fmt(one.rate, "req/s"),
                base_is_one(r, f"{r.rate / one.rate:.1f}x; {r.rate / r.size:.2f} req/s per task"),
                baseline_is=base,
            )
        )
        per_wait = (r.peak_rss_mb - one.peak_rss_mb) * 1024 / (r.size - 1) if r.size > 1 else 0.0
        rows.append(
            Row(
                f"{label}: peak RSS of the server process",
                fmt(r.peak_rss_mb, "MB"),
                fmt(one.peak_rss_mb, "MB"),
                base_is_one(
                    r, f"+{r.peak_rss_mb - one.peak_rss_mb:.1f} MB ({per_wait:.0f} kB per extra wait)"
                ),
                baseline_is=base,
            )
        )
    return rows


def base_is_one(result: SizeResult, text: str) -> str:
    """The comparison text, or a dash for the baseline row itself."""
    return "(baseline)" if result.size == 1 else text


async def run(mode: Mode) -> list[Row]:
    """Sizes 1, 10, 100, 500 with 5 s tasks (quick: 1, 10, 50 with 1 s tasks; smoke: 1, 5; 0.5 s)."""
    sizes = {"full": [1, 10, 100, 500], "quick": [1, 10, 50], "smoke": [1, 5]}[mode]
    duration = {"full": 5.0, "quick": 1.0, "smoke": 0.5}[mode]
    results = [await measure_size(size, duration) for size in sizes]
    return rows_from(results, duration) + await one_process_rows(mode, results[0].peak_rss_mb)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(child_main(sys.argv[2:]))
    sys.exit("usage: python -m benchmarks.scale --child SIZE BASE_URL OUT_DIR DURATION")
