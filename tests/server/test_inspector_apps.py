"""The official MCP Inspector CLI (``--app-info``) sees the studio app, over stdio."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from kling_omni_mcp.server.studio import STUDIO_URI
from tests.conftest import command
from tests.tooling import NODE_MODULES, node_executable, node_package_dir


def inspector(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    node_package_dir("@modelcontextprotocol/inspector")
    script = (NODE_MODULES / ".bin" / "mcp-inspector").resolve()
    node = node_executable()
    env = {
        "HOME": str(tmp_path),
        "PATH": f"{Path(node).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "KLING_OUTPUT_DIR": str(tmp_path / "out"),
    }
    # Flags first, then the server command (the Inspector forwards everything after it).
    return subprocess.run(
        [node, str(script), "--cli", *args, *command(), "--simulate"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        check=False,
    )


def lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_inspector_app_info_reports_the_studio_for_create_image(tmp_path: Path) -> None:
    listed = inspector(tmp_path, "--app-info", "--advertise-apps", "--method", "tools/list")
    assert listed.returncode == 0, listed.stderr
    by_tool = {row["toolName"]: row for row in lines(listed.stdout)}
    for tool in ("create_image", "wait_for_task"):
        assert by_tool[tool]["hasApp"] is True
        assert by_tool[tool]["resourceUri"] == STUDIO_URI
        assert by_tool[tool]["resourceMimeType"] == "text/html;profile=mcp-app"
        assert by_tool[tool]["prefersBorder"] is True
    assert by_tool["task_snapshot"]["visibility"] == ["app"]
    assert by_tool["get_task"]["hasApp"] is False and by_tool["list_tasks"]["hasApp"] is False

    # Probing one tool does not call it (no task is created).
    probed = inspector(
        tmp_path, "--app-info", "--advertise-apps", "--method", "tools/call", "--tool-name", "create_image"
    )
    assert probed.returncode == 0, probed.stderr
    [row] = lines(probed.stdout)
    assert row["toolName"] == "create_image" and row["resourceUri"] == STUDIO_URI
    assert not list((tmp_path / "out").rglob("*.json"))


def test_without_apps_the_inspector_sees_only_the_model_tools(tmp_path: Path) -> None:
    listed = inspector(tmp_path, "--app-info", "--method", "tools/list")
    names = {row["toolName"] for row in lines(listed.stdout)}
    assert names == {"create_image", "get_task", "wait_for_task", "list_tasks", "get_account"}
