"""Replicas: several server processes sharing one Redis, one output folder and the vendor.

Each replica is a child process holding the MCP server (in-memory client, so HTTP costs are not
counted: ``call_overhead`` measures those) with ``KLING_REDIS_URL`` set; a ``redis-server`` runs
on a free loopback port. The parent creates the tasks on the simulator, then every replica waits
on its share of them at the same moment. Measured per setup: vendor status queries per task (one
replica's figure is the floor: more replicas should not add to it), the finish-to-answer delay
(each answer's arrival minus the moment the simulator finished the task; ``time.monotonic`` is
one clock across processes on Linux), and each replica's peak RSS.

``one_process_rows`` is the scale section's largest case: one process (no Redis) holding
10,000 waits over 1,000 tasks (10 per task).

Run a child by hand: ``python -m benchmarks.replicas --child SPEC_FILE`` (JSON).
"""

from __future__ import annotations

import contextlib
import json
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

from benchmarks._common import PYTHON, ROOT, TEST_KEY, Mode, Row, child_env, fmt, proc_status_kb
from benchmarks._sim import SimEnv, simulated_vendor

__all__ = ["one_process_rows", "run"]

#: Seconds between launching the replicas and their first wait (they import and start first).
_START_DELAY = {"full": 6.0, "quick": 6.0, "smoke": 3.0}


@dataclass(frozen=True)
class Setup:
    """How many replicas, tasks and waits (spread round-robin: wait i → task i % tasks)."""

    replicas: int
    tasks: int
    waits: int
    duration: float
    start_delay: float = _START_DELAY["full"]
    #: ``KLING_PREVIEW_SIZE`` of the replicas (None: the default); 0 leaves previews out.
    preview_size: int | None = None
    #: None: every task ends ``duration`` after the waits start (they open while it runs).
    #: A number: the waits are *held* first: the tasks end only once every wait is in flight,
    #: one after another over this many seconds, as tasks started at different times do.
    spread: float | None = None


@dataclass(frozen=True)
class Measured:
    setup: Setup
    queries_per_task: float
    mean_delay: float
    worst_delay: float
    peak_rss_mb: list[float]
    cpu_ms_per_wait: float
    #: Held runs: seconds from the first wait sent to every wait in flight (slowest replica).
    ramp_seconds: float | None = None
    #: Held runs: CPU per second of the server processes while they only held the waits.
    holding_cpu_share: float | None = None


# --- a replica ------------------------------------------------------------------------------------


async def _child(spec: dict[str, Any]) -> dict[str, Any]:
    from mcp import Client
    from pydantic import SecretStr

    from kling_omni_mcp.config import Settings
    from kling_omni_mcp.runtime import tune_gc
    from kling_omni_mcp.server.app import ServiceSlot, build_server

    tune_gc()  # as the server command does at start

    settings = Settings(
        api_key=SecretStr(TEST_KEY),
        api_base_url=spec["base_url"],
        output_dir=Path(spec["out_dir"]),
        input_dirs=[Path(spec["out_dir"])],
        redis_url=SecretStr(spec["redis_url"]) if spec["redis_url"] else None,
        log_level="WARNING",
        download_allow_private=True,  # the simulator serves its results on loopback
        **({"preview_size": spec["preview_size"]} if spec.get("preview_size") is not None else {}),
    )
    arrivals: dict[str, float] = {}
    failures: list[str] = []
    #: When the first answer arrived, and the CPU spent until then (held runs: holding's cost).
    first: dict[str, float] = {}
    slot = ServiceSlot()
    async with Client(build_server(settings, slot=slot)) as client:

        async def report_ramp(began: float, cpu_before: float) -> None:
            """Say (one stdout line) when every wait is in flight, and the CPU that took."""
            assert slot.current is not None
            # Polled from outside the service: nothing in it signals a count reached.
            while slot.current.watchers.waiting < len(spec["task_ids"]):  # noqa: ASYNC110
                await anyio.sleep(0.05)
            print(
                json.dumps(
                    {"ramped": time.monotonic(), "ramp": time.monotonic() - began, "cpu": _cpu() - cpu_before}
                ),
                flush=True,
            )

        async def wait(task_id: str) -> None:
            args = {"task_id": task_id, "timeout_seconds": spec["budget"]}
            result = await client.call_tool("wait_for_task", args)
            arrivals[task_id] = max(arrivals.get(task_id, 0.0), time.monotonic())
            if not first:
                first.update(first_answer=time.monotonic(), cpu_at_first_answer=_cpu() - cpu_before)
            data = result.structured_content or {}
            if result.is_error or data.get("status") != "succeeded":
                failures.append(str(result.content)[:300])

        await anyio.sleep(max(0.0, spec["start_at"] - time.monotonic()))
        cpu_before = _cpu()
        async with anyio.create_task_group() as tg:
            if spec.get("report_ramp"):
                tg.start_soon(report_ramp, time.monotonic(), cpu_before)
            for task_id in spec["task_ids"]:
                tg.start_soon(wait, task_id)
        cpu = _cpu() - cpu_before
    return {
        "arrivals": arrivals,
        "failures": failures[:3],
        "failed": len(failures),
        "cpu": cpu,
        **first,
        "peak_rss_kb": proc_status_kb("VmHWM"),
    }


def _cpu() -> float:
    """User + system CPU seconds of this process so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_main(argv: list[str]) -> int:
    """``--child SPEC_FILE``: wait on the tasks the JSON file lists, print the result as JSON."""
    result = anyio.run(_child, json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    print(json.dumps(result))
    return 0


# --- the parent ---------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[str | None]:
    """A ``redis-server`` on a free loopback port (its URL), or None when it is not installed."""
    executable = shutil.which("redis-server")
    if executable is None:
        yield None
        return
    port = _free_port()
    args = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def _create_tasks(env: SimEnv, count: int) -> list[str]:
    import httpx2

    from kling_omni_mcp.kling.auth import ApiKeyAuth
    from kling_omni_mcp.kling.client import KlingClient
    from kling_omni_mcp.kling.models import CreateImageRequest

    ids: list[str] = []
    limiter = anyio.CapacityLimiter(32)
    async with httpx2.AsyncClient(timeout=30) as http:
        client = KlingClient(env.base_url, ApiKeyAuth(TEST_KEY), http=http, timeout=30)

        async def create(i: int) -> None:
            async with limiter:
                task = await client.create_task(CreateImageRequest(prompt=f"Replica benchmark {i}"))
            ids.append(task.task_id)

        async with anyio.create_task_group() as tg:
            for i in range(count):
                tg.start_soon(create, i)
    return ids


#: Held runs: tasks last this long until every wait is in flight and the parent sets their ends.
_HELD_PLACEHOLDER = 3600.0
#: Held runs: the first task ends this long after the last wait is in flight (holding is timed
#: over this gap).
_HELD_GAP = 5.0
#: Held runs: a wait's budget (the ramp's length is not known in advance).
_HELD_BUDGET = 800.0
#: The last stdout line of a child carries every arrival: allow for 10,000 of them.
_MAX_LINE = 64 * 1024 * 1024


def _end_tasks_spread(env: SimEnv, task_ids: list[str], first_end: float, spread: float) -> None:
    """Make the simulator finish ``task_ids`` one after another from ``first_end`` over ``spread`` s."""
    last = max(1, len(task_ids) - 1)
    for i, task_id in enumerate(task_ids):
        record = env.sim.tasks[task_id]
        record.duration = record.done_offset = first_end + spread * i / last - record.created_mono


async def _run_replica(spec_file: Path, home: Path, on_ramped: Any, limit: float) -> dict[str, Any]:
    """One replica child: hand its "every wait in flight" line to ``on_ramped``, return its result."""
    command = [PYTHON, "-m", "benchmarks.replicas", "--child", str(spec_file)]
    errors = bytearray()
    result: dict[str, Any] = {}
    ramp: dict[str, Any] | None = None
    with anyio.fail_after(limit):
        async with await anyio.open_process(command, cwd=ROOT, env=child_env(home)) as process:
            assert process.stdout is not None and process.stderr is not None
            stdout, stderr = process.stdout, process.stderr

            async def drain_errors() -> None:
                async for chunk in stderr:
                    errors.extend(chunk)
                    del errors[:-20000]

            async with anyio.create_task_group() as tg:
                tg.start_soon(drain_errors)
                lines = BufferedByteReceiveStream(stdout)
                while True:
                    try:
                        line = await lines.receive_until(b"\n", _MAX_LINE)
                    except (anyio.EndOfStream, anyio.IncompleteRead):
                        break
                    data = json.loads(line)
                    if "ramped" in data:
                        ramp = data
                        on_ramped(data)
                    else:
                        result = data
            code = await process.wait()
    if code != 0 or not result:
        tail = errors.decode(errors="replace")[-3000:]
        raise RuntimeError(f"replica child {spec_file.name} failed:\n{tail}")
    result["ramp_line"] = ramp
    return result


async def measure(setup: Setup, redis_url: str | None) -> Measured:
    """Run ``setup`` against a fresh simulator; combine the replicas' timings with its counters."""
    held = setup.spread is not None
    # Not held: the simulator's clock starts at create, tasks end ``duration`` after the waits start.
    duration = _HELD_PLACEHOLDER if held else setup.duration + setup.start_delay
    async with simulated_vendor(duration=duration, image_scale=0.25) as env:
        task_ids = await _create_tasks(env, setup.tasks)
        start_at = time.monotonic() + setup.start_delay
        shares: list[list[str]] = [[] for _ in range(setup.replicas)]
        for i in range(setup.waits):
            shares[i % setup.replicas].append(task_ids[i % setup.tasks])
        results: list[dict[str, Any]] = [{} for _ in shares]
        ramps: list[dict[str, Any]] = []

        def on_ramped(data: dict[str, Any]) -> None:
            ramps.append(data)
            if len(ramps) == setup.replicas and setup.spread is not None:
                first_end = max(r["ramped"] for r in ramps) + _HELD_GAP
                _end_tasks_spread(env, task_ids, first_end, setup.spread)

        async def replica(n: int) -> None:
            spec = {
                "base_url": env.base_url,
                "out_dir": str(env.folder / "out"),
                "redis_url": redis_url if setup.replicas > 1 else None,
                "task_ids": shares[n],
                "start_at": start_at,
                "budget": _HELD_BUDGET if held else setup.duration + 120,
                "preview_size": setup.preview_size,
                "report_ramp": held,
            }
            # A file, not an argument: 10,000 task ids pass the command line's length limit.
            spec_file = env.folder / f"replica-{n}.json"
            spec_file.write_text(json.dumps(spec), encoding="utf-8")
            limit = (_HELD_BUDGET if held else setup.duration) + setup.start_delay + 300
            results[n] = await _run_replica(spec_file, env.folder, on_ramped, limit)

        async with anyio.create_task_group() as tg:
            for n in range(setup.replicas):
                tg.start_soon(replica, n)
        failed = sum(r["failed"] for r in results)
        if failed:
            raise RuntimeError(f"{failed} waits did not succeed: {results[0]['failures']}")
        delays = [
            arrived - env.end_time(task_id) for r in results for task_id, arrived in r["arrivals"].items()
        ]
        queries = env.sim.counters.queries_by_id
        holding: float | None = None
        if held:
            # CPU between "every wait in flight" and the first answer, per second, all replicas.
            holding = 0.0
            for r in results:
                span = r["first_answer"] - r["ramp_line"]["ramped"]
                holding += (r["cpu_at_first_answer"] - r["ramp_line"]["cpu"]) / span if span > 0 else 0.0
        return Measured(
            setup=setup,
            queries_per_task=statistics.fmean(queries[t] for t in task_ids),
            mean_delay=statistics.fmean(delays),
            worst_delay=max(delays),
            peak_rss_mb=[r["peak_rss_kb"] / 1024 for r in results],
            cpu_ms_per_wait=1000 * sum(r["cpu"] for r in results) / setup.waits,
            ramp_seconds=max(r["ramp_line"]["ramp"] for r in results) if held else None,
            holding_cpu_share=holding,
        )


def _rss(m: Measured) -> str:
    return ", ".join(f"{mb:.0f}" for mb in m.peak_rss_mb) + " MB"


async def run(mode: Mode) -> list[Row]:
    """Vendor queries per task and finish-to-answer delay for 1, 2, 3 replicas, then the
    2,000 waits over 200 tasks on 3 replicas (quick: 300 over 30; smoke: 12 over 4)."""
    duration = {"full": 10.0, "quick": 6.0, "smoke": 3.0}[mode]
    # Fewer tasks than SWEEP_FROM: one replica alone must poll them one by one as the replicas do,
    # or the baseline would be a list sweep (kling/status_sweep.py) and not comparable.
    tasks = {"full": 12, "quick": 10, "smoke": 2}[mode]
    big = {"full": (200, 2000), "quick": (30, 300), "smoke": (4, 12)}[mode]
    with redis_server() as redis_url:
        if redis_url is None:
            return [Row("replicas", "skipped", "", "redis-server is not installed")]
        rows: list[Row] = []
        base: Measured | None = None
        for count in (1, 3) if mode == "smoke" else (1, 2, 3):
            # Every replica waits on every task: the worst case for vendor traffic.
            m = await measure(Setup(count, tasks, tasks * count, duration, _START_DELAY[mode]), redis_url)
            base = base or m
            rows.append(
                Row(
                    f"{count} replica{'s' if count > 1 else ''}, {tasks} tasks of {duration:g} s, "
                    "each waited on by every replica: vendor status queries per task",
                    fmt(m.queries_per_task, "x").rstrip("x") + " queries",
                    f"{base.queries_per_task:.2f} queries (1 replica)",
                    f"+{m.queries_per_task - base.queries_per_task:.2f}; finish-to-answer delay mean "
                    f"{m.mean_delay:.2f} s, worst {m.worst_delay:.2f} s",
                    "at most 1 replica's + 2",
                    m.queries_per_task <= base.queries_per_task + 2,
                )
            )
        n_tasks, n_waits = big
        # Held, as the one-process case: every wait in flight, then the tasks end one by one.
        spread = n_tasks / _ENDS_PER_SECOND
        m = await measure(Setup(3, n_tasks, n_waits, spread, _START_DELAY[mode], spread=spread), redis_url)
        assert base is not None
        rows.append(
            Row(
                f"{n_waits:,} concurrent waits over {n_tasks} tasks on 3 replicas, held, tasks ending "
                f"over {spread:g} s: peak RSS per replica",
                _rss(m),
                f"{base.peak_rss_mb[0]:.0f} MB (1 replica, {tasks} waits)",
                _held_text(m),
                "under 500 MB each; worst delay under 3 s",
                max(m.peak_rss_mb) < 500 and m.worst_delay < 3,
            )
        )
        return rows


#: Tasks ending per second in the held runs: 1,000 tasks in flight at once, each lasting about
#: 40 s (the vendor's tasks take tens of seconds), end at about this rate.
_ENDS_PER_SECOND = 25.0


def _held_text(m: Measured) -> str:
    assert m.ramp_seconds is not None and m.holding_cpu_share is not None
    return (
        f"all waits in flight after {m.ramp_seconds:.1f} s; holding them {100 * m.holding_cpu_share:.0f}% "
        f"of a core; {m.cpu_ms_per_wait:.1f} ms CPU per wait in all; delay mean {m.mean_delay:.2f} s, "
        f"worst {m.worst_delay:.2f} s; {m.queries_per_task:.2f} vendor queries per task"
    )


async def one_process_rows(mode: Mode, one_wait_rss_mb: float) -> list[Row]:
    """One process holding 10,000 waits over 1,000 tasks (quick: 1,000 over 100; smoke: 20 over 2);
    ``one_wait_rss_mb`` is the scale section's single wait, the baseline.

    The waits are held: every one is in flight before the first task ends, then the tasks end
    one after another at ``_ENDS_PER_SECOND``, as tasks started at different times do. A second
    run (full mode only) ends all the tasks at the same moment: the worst burst of answers.
    """
    n_tasks, n_waits = {"full": (1000, 10000), "quick": (100, 1000), "smoke": (2, 20)}[mode]
    spread = n_tasks / _ENDS_PER_SECOND
    m = await measure(Setup(1, n_tasks, n_waits, spread, _START_DELAY[mode], spread=spread), None)
    rows = [
        Row(
            f"{n_waits:,} concurrent waits over {n_tasks:,} tasks in one process, held, tasks ending "
            f"over {spread:g} s: peak RSS; worst finish-to-answer delay",
            f"{m.peak_rss_mb[0]:.0f} MB; {m.worst_delay:.2f} s",
            f"{one_wait_rss_mb:.1f} MB (1 wait)",
            _held_text(m),
            "under 500 MB; worst delay under 3 s",
            m.peak_rss_mb[0] < 500 and m.worst_delay < 3,
        )
    ]
    if mode == "full":
        burst = await measure(Setup(1, n_tasks, n_waits, 0.0, _START_DELAY[mode], spread=0.0), None)
        rows.append(
            Row(
                f"{n_waits:,} concurrent waits over {n_tasks:,} tasks in one process, held, every task "
                "ending at the same moment: worst finish-to-answer delay",
                fmt(burst.worst_delay, "s"),
                f"{m.worst_delay:.2f} s (tasks ending over {spread:g} s)",
                f"{n_waits / burst.worst_delay:.0f} answers per second; " + _held_text(burst),
            )
        )
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(child_main(sys.argv[2:]))
    sys.exit("usage: python -m benchmarks.replicas --child SPEC_FILE")
