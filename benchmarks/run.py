"""``python -m benchmarks [--quick | --smoke] [--only SECTION ...]``: run every benchmark, print one table.

Sections run one after another (never side by side, so none slows another down), cold start
first while the machine is quiet. The table is Markdown, ready to paste into
``docs/benchmarks.md``; a summary of the targets follows it. ``--quick`` is a short run (fewer
samples, shorter tasks, smaller sizes): judge targets on a full run. ``--smoke`` only checks that
every benchmark runs and prints its figures (the test suite runs it): the fewest samples, the
smallest sizes, and the sections side by side, so its figures mean nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import version

import anyio

from benchmarks import call_overhead, cold_start, context_cost, finish_delay, input_prep, replicas, scale
from benchmarks._common import Mode, Row, quiet_logging, render_table

__all__ = ["SECTIONS", "machine_line", "main"]

Runner = Callable[[Mode], Awaitable[list[Row]]]

#: (key, title, runner) in the order they run.
SECTIONS: list[tuple[str, str, Runner]] = [
    ("cold", "Cold start over stdio (median of 9 spawns; quick: 3)", cold_start.run),
    ("overhead", "Call overhead (median of 200 calls; quick: 30)", call_overhead.run),
    ("delay", "Finish-to-answer delay", finish_delay.run),
    ("scale", "Scale: concurrent waits in one server", scale.run),
    ("replicas", "Replicas: several servers sharing one Redis", replicas.run),
    ("inputs", "Input preparation (median of 3 runs; quick: 1)", input_prep.run),
    ("context", "Context cost", context_cost.run),
]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    """The machine, interpreter and SDK the figures were measured on."""
    return (
        f"{os.cpu_count()} CPUs ({_cpu_model()}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, mcp {version('mcp')}, "
        f"kling-omni-mcp {version('kling-omni-mcp')}"
    )


def _summary(sections: Sequence[tuple[str, Sequence[Row]]]) -> str:
    judged = [row for _, rows in sections for row in rows if row.met is not None]
    missed = [row for row in judged if row.counts and not row.met]
    counted = sum(1 for row in judged if row.counts)
    lines = [f"Targets met with the default settings: {counted - len(missed)} of {counted}."]
    lines += [f"- missed: {row.name}: {row.value} ({row.compare}; target {row.target})" for row in missed]
    for row in judged:
        if not row.counts:
            verdict = "would meet" if row.met else "would miss"
            lines.append(f"- candidate setting, {verdict} its targets: {row.name}: {row.value}")
    return "\n".join(lines)


async def _section(key: str, runner: Runner, mode: Mode) -> list[Row]:
    started = time.monotonic()
    print(f"running {key} ...", file=sys.stderr, flush=True)
    rows = await runner(mode)
    print(f"  {key}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return rows


async def _run(mode: Mode, only: set[str]) -> int:
    chosen = [(key, title, runner) for key, title, runner in SECTIONS if not only or key in only]
    rows_by_key: dict[str, list[Row]] = {}
    started = time.monotonic()
    if mode == "smoke":
        # Figures do not count in a smoke run: side by side, the run takes as long as its
        # slowest section (most of them wait for simulated tasks rather than compute).

        async def one(key: str, runner: Runner) -> None:
            rows_by_key[key] = await _section(key, runner, mode)

        async with anyio.create_task_group() as tg:
            for key, _, runner in chosen:
                tg.start_soon(one, key, runner)
    else:
        for key, _, runner in chosen:
            rows_by_key[key] = await _section(key, runner, mode)
    results: list[tuple[str, Sequence[Row]]] = [(title, rows_by_key[key]) for key, title, _ in chosen]
    described = {
        "full": "full run",
        "quick": "quick run: few samples, judge targets on a full run",
        "smoke": "smoke run: sections side by side, figures only prove each benchmark runs",
    }[mode]
    print(f"Machine: {machine_line()}")
    print(f"Mode: {described}; took {time.monotonic() - started:.0f} s.\n")
    print(render_table(results))
    print()
    print(_summary(results))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, run the sections, print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", action="store_true", help="short run: fewer samples, smaller sizes")
    modes.add_argument(
        "--smoke", action="store_true", help="check every benchmark runs (figures mean nothing)"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        choices=[key for key, _, _ in SECTIONS],
        help="run only this section (repeatable)",
    )
    args = parser.parse_args(argv)
    # A developer's own KLING_* settings must not change what is measured.
    for name in [n for n in os.environ if n.startswith("KLING_")]:
        del os.environ[name]
    quiet_logging()
    mode: Mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    return anyio.run(_run, mode, set(args.only))
