"""Call overhead: ``get_task`` through MCP against a bare HTTP GET of the same vendor endpoint.

The vendor round trip is the same for both; what is left is the price of the MCP layer, the
service (parsing, sidecar, saved-file lookup) and the rendered answer (summary, links, preview).
The task is finished and saved before timing starts, so no call downloads anything. Calls of
the two kinds alternate, so a slow moment of the machine hits both.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Awaitable, Callable

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from benchmarks._common import TEST_KEY, Mode, Row, child_env, fmt, median
from benchmarks._sim import SimEnv, make_settings, simulated_vendor
from benchmarks.cold_start import server_command
from kling_omni_mcp.server.app import build_server

__all__ = ["TARGET_EXTRA_MS", "run"]

#: In memory, one MCP call may add at most this much to the vendor round trip.
TARGET_EXTRA_MS = 3.0

Call = Callable[[], Awaitable[object]]


async def _alternate(ours: Call, bare: Call, calls: int) -> tuple[float, float]:
    """Median milliseconds of ``ours`` and ``bare``, ``calls`` each, after a warm-up."""
    for _ in range(5):
        await ours()
        await bare()
    ours_ms: list[float] = []
    bare_ms: list[float] = []
    for _ in range(calls):
        for fn, out in ((ours, ours_ms), (bare, bare_ms)):
            started = time.perf_counter()
            await fn()
            out.append((time.perf_counter() - started) * 1000)
    return median(ours_ms), median(bare_ms)


async def _finished_task(env: SimEnv) -> str:
    """A task that has finished and whose image is already saved (the first get_task saves it)."""
    async with Client(build_server(make_settings(env))) as client:
        created = await client.call_tool(
            "create_image", {"prompt": "A benchmark lighthouse", "wait_seconds": 30}
        )
        data = created.structured_content
        if created.is_error or not data or data.get("status") != "succeeded":
            raise RuntimeError(f"could not make a finished task: {created.content}")
        return str(data["task_id"])


def _row(name: str, ours: float, bare: float, *, target: bool) -> Row:
    if bare > 20:
        # A loopback GET takes ~1 ms; ~40 ms means Nagle + delayed ACK (a listening socket
        # without TCP_NODELAY), and every figure here would measure that instead of the server.
        print(f"WARNING: a bare loopback GET took {bare:.0f} ms: check TCP_NODELAY", file=sys.stderr)
    extra = ours - bare
    return Row(
        name=name,
        value=fmt(ours, "ms"),
        baseline=fmt(bare, "ms"),
        baseline_is="bare httpx2 GET",
        compare=f"+{extra:.2f} ms per call",
        target=f"< {TARGET_EXTRA_MS:g} ms extra" if target else "",
        met=(extra < TARGET_EXTRA_MS) if target else None,
    )


async def run(mode: Mode) -> list[Row]:
    """Median per-call times over 200 calls (quick: 30, smoke: 5)."""
    calls = {"full": 200, "quick": 30, "smoke": 5}[mode]
    rows: list[Row] = []
    # Full-size 1k results (1024x1024 PNG), as the vendor sends: the preview is made from it.
    async with simulated_vendor(duration=0.3) as env:
        task_id = await _finished_task(env)
        url = f"{env.base_url}/v1/images/omni-image/{task_id}"
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {TEST_KEY}"}, timeout=30) as raw:

            async def bare() -> object:
                response = await raw.get(url)
                response.raise_for_status()
                return response.json()

            for label, overrides, has_target in (
                ("`get_task` in memory, default settings (512 px preview)", {}, True),
                ("`get_task` in memory, previews off (`KLING_PREVIEW_SIZE=0`)", {"preview_size": 0}, True),
            ):
                async with Client(build_server(make_settings(env, **overrides))) as client:

                    async def ours(client: Client = client) -> object:
                        result = await client.call_tool("get_task", {"task_id": task_id})
                        if result.is_error:
                            raise RuntimeError(f"get_task failed: {result.content}")
                        return result

                    mine, base = await _alternate(ours, bare, calls)
                rows.append(_row(label, mine, base, target=has_target))

            settings = make_settings(env)
            cmd = server_command()
            params = StdioServerParameters(
                command=cmd[0],
                args=cmd[1:],
                env=child_env(
                    env.folder,
                    KLING_API_KEY=TEST_KEY,
                    KLING_API_BASE_URL=env.base_url,
                    KLING_DOWNLOAD_ALLOW_PRIVATE="true",
                    KLING_OUTPUT_DIR=str(settings.output_dir),
                    KLING_LOG_LEVEL="WARNING",
                ),
            )
            with open(os.devnull, "w") as devnull:  # noqa: ASYNC230 - /dev/null never blocks
                transport = stdio_client(params, errlog=devnull)
                async with Client(transport, read_timeout_seconds=60) as client:

                    async def over_stdio() -> object:
                        result = await client.call_tool("get_task", {"task_id": task_id})
                        if result.is_error:
                            raise RuntimeError(f"get_task failed: {result.content}")
                        return result

                    mine, base = await _alternate(over_stdio, bare, calls)
            rows.append(_row("`get_task` over stdio, default settings", mine, base, target=False))
        downloads = env.sim.counters.downloads
    if downloads != 1:
        raise RuntimeError(f"expected the image to be downloaded once, saw {downloads} downloads")
    return rows
