"""Small helpers shared by the reliability tests: reading tool answers, files and results."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mcp import Client

from kling_omni_mcp.config import Settings
from kling_omni_mcp.server.app import build_server

RESULTS_DIR = Path(__file__).parent / ".results"


@asynccontextmanager
async def mcp_session(settings: Settings, mode: str = "auto") -> AsyncIterator[Client]:
    """A fresh server for ``settings`` and a real MCP client connected to it in memory."""
    async with Client(build_server(settings), mode=mode) as client:
        yield client


def files_under(root: Path) -> list[Path]:
    """Every file (hidden ones included) below ``root``, sorted."""
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


def leftovers(root: Path) -> list[Path]:
    """Temporary or partial files below ``root``: there must never be any after a call returns."""
    return [p for p in files_under(root) if ".partial" in p.name or p.name.startswith(".")]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "processor": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def record_result(name: str, figures: dict[str, Any]) -> Path:
    """Write ``figures`` to ``tests/reliability/.results/<name>.json`` (ignored by git) and print them."""
    RESULTS_DIR.mkdir(exist_ok=True)
    ignore = RESULTS_DIR / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({**figures, "machine": machine()}, indent=2, sort_keys=True) + "\n")
    print(f"\n{name}: {json.dumps(figures, sort_keys=True)}")
    return path
