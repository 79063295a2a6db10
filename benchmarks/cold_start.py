"""Cold start: spawn → first answer over stdio, as a host sees it, against a trivial MCP server.

A host spawns the server and waits for the first answer (``initialize`` for 2025-era hosts,
``server/discover`` for 2026-07-28 ones) before it can list tools; slow imports make every new
conversation wait. The baseline is ``trivial_server.py`` started the same way by the same
interpreter, so the ratio shows only what this project adds on top of Python and the SDK.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from benchmarks._common import PYTHON, ROOT, Mode, Row, child_env, fmt, median

__all__ = ["TARGET_RATIO", "run"]

#: Our server may take at most this much longer than the trivial one to answer first.
TARGET_RATIO = 1.15

MODES = {"legacy": "initialize", "auto": "server/discover"}


@dataclass(frozen=True)
class Variant:
    """One way of starting a server."""

    key: str
    command: tuple[str, ...]
    env: dict[str, str]


def server_command() -> list[str]:
    """The installed console script (what hosts run), or the module from a source tree."""
    exe = shutil.which("kling-omni-mcp", path=str(Path(PYTHON).parent))
    return [exe] if exe else [PYTHON, "-m", "kling_omni_mcp"]


def _variants(home: Path) -> list[Variant]:
    base = child_env(home, KLING_OUTPUT_DIR=str(home / "out"), KLING_LOG_LEVEL="WARNING")
    cmd = server_command()
    return [
        Variant("trivial", (PYTHON, str(ROOT / "benchmarks" / "trivial_server.py")), base),
        # A dummy key and a loopback URL nobody listens on: start-up never calls the vendor.
        Variant(
            "normal",
            tuple(cmd),
            {**base, "KLING_API_KEY": "dummy-key-for-start-up", "KLING_API_BASE_URL": "http://127.0.0.1:9"},
        ),
        Variant("simulate", (*cmd, "--simulate"), base),
    ]


async def _first_answer_seconds(variant: Variant, mode: str, devnull: TextIO) -> float:
    params = StdioServerParameters(
        command=variant.command[0], args=list(variant.command[1:]), env=variant.env
    )
    started = time.perf_counter()
    transport = stdio_client(params, errlog=devnull)
    async with Client(transport, mode=mode, read_timeout_seconds=60):
        # Entering the client = process spawned + first request answered.
        return time.perf_counter() - started


async def measure(runs: int, *, warm_up: bool = True) -> dict[tuple[str, str], list[float]]:
    """Seconds to the first answer per (variant, mode), ``runs`` samples each (after one warm-up
    round unless ``warm_up`` is False).

    Variants are interleaved round by round, so a slow moment of the machine hits all of them.
    """
    samples: dict[tuple[str, str], list[float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="kling-bench-cold-") as tmp,
        open(os.devnull, "w") as devnull,  # noqa: ASYNC230 - /dev/null never blocks
    ):
        variants = _variants(Path(tmp))
        combos = [(v, m) for v in variants for m in MODES]
        first = 0 if warm_up else 1
        for round_no in range(first, runs + 1):
            # Rotate the order each round: no variant always runs first (or right after another).
            shift = round_no % len(combos)
            for variant, mode in combos[shift:] + combos[:shift]:
                seconds = await _first_answer_seconds(variant, mode, devnull)
                if round_no > 0:  # round 0 warms the page cache and the .pyc files
                    samples.setdefault((variant.key, mode), []).append(seconds)
    return samples


def rows_from(samples: dict[tuple[str, str], list[float]]) -> list[Row]:
    """Medians next to the trivial server's, with the ratio against the target."""
    rows: list[Row] = []
    for key, label in (("normal", "normal mode (API key)"), ("simulate", "--simulate (embedded simulator)")):
        for mode, method in MODES.items():
            ours = median(samples[(key, mode)]) * 1000
            base = median(samples[("trivial", mode)]) * 1000
            ratio = ours / base
            rows.append(
                Row(
                    name=f"spawn → `{method}` answer, {label}",
                    value=fmt(ours, "ms"),
                    baseline=fmt(base, "ms"),
                    baseline_is="trivial 1-tool server",
                    compare=f"{ratio:.2f}x (+{ours - base:.0f} ms)",
                    target=f"≤ {TARGET_RATIO}x",
                    met=ratio <= TARGET_RATIO,
                )
            )
    return rows


async def run(mode: Mode) -> list[Row]:
    """The cold-start rows: median of 9 runs after a warm-up (quick: 3, smoke: 1, no warm-up)."""
    samples = await measure({"full": 9, "quick": 3, "smoke": 1}[mode], warm_up=mode == "full")
    return rows_from(samples)
