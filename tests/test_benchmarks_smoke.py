"""The benchmark command works: ``python -m benchmarks --smoke`` prints a table with every row.

A smoke run only (the fewest samples, shortest tasks, smallest files, sections side by side): it
proves each benchmark still runs against the current code and produces its figures, not that a
target is met. Targets are judged on a full run (docs/benchmarks.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: One fragment per row the smoke mode must print (sizes and durations are the smoke ones).
EXPECTED_ROWS = [
    "spawn → `initialize` answer, normal mode",
    "spawn → `server/discover` answer, normal mode",
    "spawn → `initialize` answer, --simulate",
    "spawn → `server/discover` answer, --simulate",
    "`get_task` in memory, default settings",
    "`get_task` in memory, previews off",
    "`get_task` over stdio",
    "polling, 0.5 s task: mean delay",
    "polling, 0.5 s task: worst delay",
    "polling, 0.5 s task: vendor status queries per second of task life",
    "polling, 0.5 s task, alternative fixed 2.5 s interval: mean delay; rate",
    "callbacks over HTTP, 0.5 s task: mean delay",
    "callbacks over HTTP, 0.5 s task: worst delay",
    *[
        f"{size} concurrent wait{'s' if size > 1 else ''} (0.5 s tasks): {what}"
        for size in (1, 5)
        for what in ("wall time", "vendor status queries per second", "peak RSS")
    ],
    "20 concurrent waits over 2 tasks in one process, held, tasks ending over 0.08 s: peak RSS",
    "1 replica, 2 tasks of 3 s, each waited on by every replica: vendor status queries per task",
    "3 replicas, 2 tasks of 3 s, each waited on by every replica: vendor status queries per task",
    "12 concurrent waits over 4 tasks on 3 replicas, held, tasks ending over 0.16 s: peak RSS per replica",
    "5 MP PNG from disk → `create_image` payload: time",
    "5 MP PNG from disk → `create_image` payload: peak extra memory",
    "2 MB JPEG from disk → `create_image` payload: time",
    "2 MB JPEG from disk → `create_image` payload: peak extra memory",
    "`tools/list`",
    "finished-task answer, 1 image ",
    "finished-task answer, 4 images",
    "finished-task answer, 9 images",
]


def test_smoke_benchmark_prints_every_row(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "TMPDIR": str(tmp_path),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| **")]
    for fragment in EXPECTED_ROWS:
        matching = [row for row in rows if fragment in row]
        assert len(matching) == 1, f"{fragment!r}: {len(matching)} rows\n{proc.stdout}"
        cells = [cell.strip() for cell in matching[0].strip("|").split("|")]
        # Every row has a figure and a baseline, both measured (a number, not an empty cell).
        assert any(ch.isdigit() for ch in cells[1]) and any(ch.isdigit() for ch in cells[2]), matching[0]
    assert "Targets met with the default settings:" in proc.stdout
    # Header row + one row per expected fragment; nothing unexpected or duplicated.
    assert len(rows) == len(EXPECTED_ROWS) + 1, proc.stdout
