"""Tool answers stay under 100,000 characters with photo-like results, and still list every image.

The simulator's own results are flat drawings that JPEG shrinks to almost nothing, so they never
test the preview budget. Here the simulated vendor returns detailed, noisy 2048 x 2048 images
(noise at several scales: JPEG cannot compress them, at any preview size), and the real server
renders its answers through a real MCP client, as a host would receive them.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp_types import CallToolResult

from kling_omni_mcp.config import Settings
from kling_omni_mcp.server import render
from kling_omni_mcp.server.app import build_server
from kling_omni_mcp.simulator import Simulator, SimulatorConfig, TaskRecord
from tests.conftest import SIM_DEFAULTS, serve_sim, text_of

pytestmark = pytest.mark.anyio

#: What a host accepts in one tool answer (the project's promise: docs and render.py).
ANSWER_LIMIT = 100_000


@functools.lru_cache(maxsize=2)
def noisy_png(size: tuple[int, int]) -> bytes:
    """A photo-like PNG of ``size``: random detail from coarse blotches down to single pixels."""
    from PIL import Image

    def layer(side: int) -> Image.Image:
        noise = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
        return noise.resize(size, Image.Resampling.BICUBIC)

    image = layer(16)
    for side, weight in ((64, 0.5), (256, 0.5), (max(size), 0.35)):
        image = Image.blend(image, layer(side), weight)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=0)  # incompressible anyway: skip the work
    return out.getvalue()


class PhotoSimulator(Simulator):
    """The simulator, answering downloads with noisy photo-like images of the task's size."""

    async def render(self, task: TaskRecord, index: int, *, watermark: bool) -> bytes:
        return noisy_png(task.output_size)


def answer_chars(result: CallToolResult) -> int:
    """The size of the answer as it travels: its JSON serialization."""
    return len(result.model_dump_json(by_alias=True, exclude_none=True))


def check_answer(result: CallToolResult, n: int) -> list[Any]:
    """Under the limit, every image linked; returns the inline previews."""
    assert not result.is_error, text_of(result)
    assert answer_chars(result) < ANSWER_LIMIT, answer_chars(result)
    assert result.structured_content is not None
    paths = [Path(img["path"]) for img in result.structured_content["images"]]
    assert len(paths) == n and all(p.is_file() for p in paths)
    links = [b for b in result.content if b.type == "resource_link"]
    assert [str(link.uri) for link in links] == [p.as_uri() for p in paths]
    return [b for b in result.content if b.type == "image"]


async def test_photo_like_results_fit_the_answer_limit_and_list_every_image(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 9  # the most one task makes: the smallest share of the budget each
    sim = PhotoSimulator(SimulatorConfig(**{**SIM_DEFAULTS, "duration": 0.3, "image_scale": 1.0}))
    async with serve_sim(sim) as vendor:
        settings = make_settings(vendor.base_url, http_timeout=60)
        async with Client(build_server(settings)) as client:
            created = await client.call_tool(
                "create_image",
                {
                    "prompt": "A busy market",
                    "n": n,
                    "resolution": "2k",
                    "aspect_ratio": "1:1",
                    "wait_seconds": 60,
                },
            )
            assert created.structured_content is not None, text_of(created)
            assert created.structured_content["status"] == "succeeded", text_of(created)
            # The real result size: each saved file is a 2048 x 2048, ~12 MB PNG.
            first = Path(created.structured_content["images"][0]["path"])
            assert first.stat().st_size > 10_000_000
            previews = check_answer(created, n)
            # Previews are still shown, shrunk to fit (the budget works, nothing was dropped).
            assert len(previews) == n, text_of(created)

            # Should the previews ever outgrow their budget, the answer still fits: previews go,
            # the images stay listed.
            monkeypatch.setattr(render, "PREVIEW_CHAR_BUDGET", 10 * ANSWER_LIMIT)
            task_id = created.structured_content["task_id"]
            again = await client.call_tool("get_task", {"task_id": task_id})
            check_answer(again, n)
