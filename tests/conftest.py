"""Shared fixtures: the anyio backend, a clean environment, a simulator on a free loopback port,
and settings/servers pointed at it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kling_omni_mcp.config import Settings

TEST_API_KEY = "test-api-key-6f1c2a9b"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No developer's KLING_* variable leaks into a test; HOME is a fresh folder."""
    for name in list(os.environ):
        if name.startswith("KLING_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@dataclass
class SimHandle:
    sim: Any  # kling_omni_mcp.simulator.Simulator
    base_url: str


SIM_DEFAULTS: dict[str, Any] = {"api_keys": (TEST_API_KEY,), "duration": 0.8, "image_scale": 0.25}


@pytest.fixture
def sim_config() -> dict[str, Any]:
    """Simulator settings; a test changes them with ``@sim_with(...)``."""
    return dict(SIM_DEFAULTS)


def sim_with(**overrides: Any) -> pytest.MarkDecorator:
    """Run a test against a simulator configured with ``overrides`` (e.g. a longer duration)."""
    label = ",".join(f"{k}={v}" for k, v in overrides.items())
    return pytest.mark.parametrize("sim_config", [{**SIM_DEFAULTS, **overrides}], ids=[label])


@asynccontextmanager
async def serve_sim(sim: Any = None, *, port: int = 0, **config: Any) -> AsyncIterator[SimHandle]:
    """The one way a test starts a simulator: ``async with serve_sim(duration=2) as s``.

    Serves ``sim`` (a ``Simulator``, e.g. a subclass with its own images), or a new one built
    from ``SIM_DEFAULTS`` updated with ``config``, on a loopback port (``port``: a chosen one, to
    restart on the same address); yields its base URL and the simulator (counters, faults).
    """
    from kling_omni_mcp.simulator import Simulator, SimulatorConfig, running_simulator

    if sim is None:
        sim = Simulator(SimulatorConfig(**{**SIM_DEFAULTS, **config}))
    elif config:
        raise TypeError("give either a simulator or its config, not both")
    async with running_simulator(sim, port=port) as base_url:
        yield SimHandle(sim, base_url)


@pytest.fixture
async def simulator(sim_config: dict[str, Any]) -> AsyncIterator[SimHandle]:
    """A simulator with ``SIM_DEFAULTS`` (or a test's ``@sim_with(...)``) for one test."""
    async with serve_sim(**sim_config) as handle:
        yield handle


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Where a test keeps its input images (an allowed input folder)."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    return folder


@pytest.fixture
def make_settings(tmp_path: Path, workdir: Path) -> Callable[..., Settings]:
    def make(base_url: str | None = None, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "api_key": TEST_API_KEY,
            "output_dir": tmp_path / "out",
            "input_dirs": [workdir, tmp_path / "out"],
            "poll_initial_seconds": 0.1,
            "poll_max_seconds": 0.3,
            "http_timeout": 10,
            # The simulator serves results on loopback, which real downloads refuse.
            "download_allow_private": True,
        }
        if base_url is not None:
            values["api_base_url"] = base_url
        values.update(overrides)
        return Settings(**values)

    return make


def command() -> list[str]:
    """The installed ``kling-omni-mcp`` console script, or the module when run from a source tree."""
    import shutil
    import sys

    exe = shutil.which("kling-omni-mcp", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "kling_omni_mcp"]


def text_of(result: Any) -> str:
    """The text blocks of a tool answer, joined."""
    return "\n".join(getattr(b, "text", "") for b in result.content if getattr(b, "type", "") == "text")


def free_port() -> int:
    """A loopback port nobody listens on (right now)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_png(
    path: Path, size: tuple[int, int] = (640, 480), color: tuple[int, int, int] = (20, 120, 200)
) -> Path:
    """A real PNG file for use as an input image."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="PNG")
    return path
