"""A simulator on loopback and settings pointed at it, the way the tests set things up."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import TEST_KEY
from kling_omni_mcp.config import Settings
from kling_omni_mcp.simulator import Simulator, SimulatorConfig, running_simulator

__all__ = ["SimEnv", "make_settings", "simulated_vendor"]


@dataclass
class SimEnv:
    """A running simulator, its URL and a scratch folder for outputs and inputs."""

    sim: Simulator
    base_url: str
    folder: Path

    def end_time(self, task_id: str) -> float:
        """When the simulator finished (or will finish) the task, on ``time.monotonic``."""
        task = self.sim.tasks[task_id]
        return task.created_mono + task.done_offset


@contextlib.asynccontextmanager
async def simulated_vendor(**config: Any) -> AsyncIterator[SimEnv]:
    """A simulator accepting ``TEST_KEY`` (plus ``config``) and a temporary folder."""
    options: dict[str, Any] = {"api_keys": (TEST_KEY,), "duration": 1.0}
    options.update(config)
    sim = Simulator(SimulatorConfig(**options))
    with tempfile.TemporaryDirectory(prefix="kling-bench-") as tmp:
        async with running_simulator(sim) as base_url:
            yield SimEnv(sim, base_url, Path(tmp))


def make_settings(env: SimEnv, **overrides: Any) -> Settings:
    """Settings for a server talking to ``env``'s simulator, saving into its folder."""
    values: dict[str, Any] = {
        "api_key": TEST_KEY,
        "api_base_url": env.base_url,
        "output_dir": env.folder / "out",
        "input_dirs": [env.folder],
        "http_timeout": 30,
        "log_level": "WARNING",
        "download_allow_private": True,  # the simulator serves its results on loopback
    }
    values.update(overrides)
    return Settings(**values)
