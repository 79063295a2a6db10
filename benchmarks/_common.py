"""What every benchmark shares: result rows, the table, statistics, memory readings, child env."""

from __future__ import annotations

import logging
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "PYTHON",
    "ROOT",
    "TEST_KEY",
    "Mode",
    "Row",
    "child_env",
    "fmt",
    "median",
    "proc_status_kb",
    "quiet_logging",
    "render_table",
]

#: The project root: children are started here so ``benchmarks`` and the sources import.
ROOT = Path(__file__).resolve().parent.parent
#: The interpreter running the benchmarks; every child process uses the same one.
PYTHON = sys.executable
#: The key the benchmark simulators accept (loopback only; not a secret).
TEST_KEY = "bench-key-4d2e9a"

#: How thorough a run is. ``full``: the figures of docs/benchmarks.md. ``quick``: fewer samples,
#: shorter tasks. ``smoke``: the least that still runs every benchmark and prints every figure
#: (the test suite's check, sections side by side; its figures mean nothing).
Mode = Literal["full", "quick", "smoke"]


@dataclass
class Row:
    """One line of the table: a figure of this server next to the same figure for a baseline.

    ``compare`` is the derived column (a ratio or a difference) the ``target`` is about;
    ``met`` is None when there is no target (the figure is for information). A row with
    ``counts=False`` measures a candidate setting rather than the defaults: its verdict is shown
    in brackets and left out of the summary.
    """

    name: str
    value: str
    baseline: str
    compare: str
    target: str = ""
    met: bool | None = None
    baseline_is: str = ""
    counts: bool = True


def median(values: Sequence[float]) -> float:
    """The median (a benchmark without samples is a bug, so an empty list raises)."""
    return statistics.median(values)


def fmt(value: float, unit: str) -> str:
    """A number with its unit, with as many digits as the size deserves."""
    if unit == "ms":
        text = f"{value:.2f}" if abs(value) < 10 else f"{value:.0f}"
    elif unit in ("s", "req/s", "x"):
        text = f"{value:.2f}"
    elif unit == "MB":
        text = f"{value:.1f}"
    elif unit == "chars":
        text = f"{value:,.0f}"
    else:
        text = f"{value:g}"
    return f"{text}x" if unit == "x" else f"{text} {unit}"


def proc_status_kb(field: str, pid: int | str = "self") -> int:
    """A ``/proc/<pid>/status`` memory field in kB (``VmHWM`` is the peak resident set size)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def child_env(home: Path, **extra: str) -> dict[str, str]:
    """A minimal environment for a child process: no developer's ``KLING_*`` leaks in."""
    env = {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }
    env.update(extra)
    return env


def quiet_logging() -> None:
    """Only warnings, on stderr: the table goes to stdout and must stay readable."""
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx2", "uvicorn", "uvicorn.error", "mcp", "kling_omni_mcp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def render_table(sections: Sequence[tuple[str, Sequence[Row]]]) -> str:
    """A Markdown table (pasteable into docs/benchmarks.md), one header row per section."""
    header = "| benchmark | this server | baseline | vs baseline | target | met |"
    lines = [header, "|---|---:|---:|---:|---|:---:|"]
    for title, rows in sections:
        lines.append(f"| **{title}** | | | | | |")
        for row in rows:
            met = "" if row.met is None else ("yes" if row.met else "**NO**")
            if row.met is not None and not row.counts:
                met = f"({'yes' if row.met else 'no'})"
            base = row.baseline if not row.baseline_is else f"{row.baseline} ({row.baseline_is})"
            lines.append(f"| {row.name} | {row.value} | {base} | {row.compare} | {row.target} | {met} |")
    return "\n".join(lines)
