"""The installed command over stdio, as a host spawns it: protocol on stdout, logs on stderr."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from tests.conftest import TEST_API_KEY, SimHandle, command, write_png

pytestmark = pytest.mark.anyio

BIG_ELEMENT = 829836802793406551


def server_params(env: dict[str, str], *args: str) -> StdioServerParameters:
    cmd = command()
    return StdioServerParameters(command=cmd[0], args=[*cmd[1:], *args], env=env)


async def test_stdio_against_simulator(simulator: SimHandle, tmp_path: Path, workdir: Path) -> None:
    reference = write_png(workdir / "ref.png")
    env = {
        "HOME": str(tmp_path / "home"),
        "KLING_API_KEY": TEST_API_KEY,
        "KLING_API_BASE_URL": simulator.base_url,
        "KLING_DOWNLOAD_ALLOW_PRIVATE": "true",
        "KLING_OUTPUT_DIR": str(tmp_path / "out"),
        "KLING_INPUT_DIRS": os.pathsep.join([str(workdir), str(tmp_path / "out")]),
        "KLING_POLL_INITIAL_SECONDS": "0.2",
    }
    async with Client(server_params(env), read_timeout_seconds=60) as client:
        tools = await client.list_tools()
        names = {t.name for t in tools.tools}
        assert names == {"create_image", "get_task", "wait_for_task", "list_tasks", "get_account"}
        created = await client.call_tool(
            "create_image",
            {
                "prompt": "<<<image_1>>> next to <<<element_1>>>",
                "images": [str(reference)],
                "element_ids": [BIG_ELEMENT],
                "model": "kling-v3-omni",
            },
        )
        assert not created.is_error
        data = created.structured_content
        assert data is not None
        assert simulator.sim.tasks[data["task_id"]].element_ids == (BIG_ELEMENT,)
        progress: list[float] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(value)

        waited = await client.call_tool(
            "wait_for_task",
            {"task_id": data["task_id"], "timeout_seconds": 30},
            progress_callback=on_progress,
        )
        assert not waited.is_error
        assert waited.structured_content is not None
        assert waited.structured_content["status"] == "succeeded"
        assert Path(waited.structured_content["images"][0]["path"]).is_file()
        assert progress


async def test_stdio_simulate_mode_needs_no_account(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path / "home"),
        "KLING_OUTPUT_DIR": str(tmp_path / "out"),
        "KLING_SIM_DURATION": "1",
    }
    async with Client(server_params(env, "--simulate"), read_timeout_seconds=60) as client:
        created = await client.call_tool("create_image", {"prompt": "A simulated cat", "wait_seconds": 30})
        assert not created.is_error
        data = created.structured_content
        assert data is not None
        assert data["simulated"] is True and data["status"] == "succeeded"
        path = Path(data["images"][0]["path"])
        assert path.is_file() and "simulated" in path.parts
        text = " ".join(getattr(b, "text", "") for b in created.content)
        assert text.startswith("[simulated]")


def test_stdout_carries_only_protocol(tmp_path: Path) -> None:
    """Start the server, send one request, close stdin: every stdout line is JSON-RPC."""
    import json

    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"},
        },
    }
    env = {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", ""), "KLING_LOG_LEVEL": "DEBUG"}
    proc = subprocess.run(
        [*command(), "--simulate"],
        input=json.dumps(request) + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, proc.stderr
    for line in lines:
        assert json.loads(line)["jsonrpc"] == "2.0"
    assert "kling-omni-mcp" in proc.stderr  # the logs went to stderr


def test_version_and_help() -> None:
    out = subprocess.run([*command(), "--version"], capture_output=True, text=True, timeout=30, check=True)
    from kling_omni_mcp import __version__

    assert out.stdout.strip() == f"kling-omni-mcp {__version__}"
