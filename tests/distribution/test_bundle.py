"""The MCP bundle: its manifest agrees with the project and the official CLI validates and packs it;
the packed bundle carries the source, and that source starts from the manifest's own command line."""

from __future__ import annotations

import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import anyio.to_thread
import jsonschema
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from kling_omni_mcp.bundle import ROOT, build_bundle, manifest_problems, project_version
from kling_omni_mcp.config import Settings
from tests.conftest import TEST_API_KEY, SimHandle
from tests.tooling import node_executable, node_package_dir

MANIFEST: dict[str, Any] = json.loads((ROOT / "mcpb" / "manifest.json").read_text())


def test_manifest_agrees_with_pyproject_and_the_server_tools() -> None:
    assert manifest_problems() == []
    assert MANIFEST["version"] == project_version()
    assert [t["name"] for t in MANIFEST["tools"]] == [
        "create_image",
        "get_task",
        "wait_for_task",
        "list_tasks",
        "get_account",
    ]


def test_manifest_matches_the_official_0_4_schema() -> None:
    schema_file = node_package_dir("@anthropic-ai/mcpb") / "schemas" / "mcpb-manifest-v0.4.schema.json"
    schema = json.loads(schema_file.read_text())
    jsonschema.Draft7Validator(schema).validate(MANIFEST)


def test_user_config_and_mcp_config_fit_together() -> None:
    config = MANIFEST["user_config"]
    assert config["api_key"]["sensitive"] is True and config["api_key"]["required"] is True
    assert config["output_dir"]["type"] == "directory" and "Pictures" in config["output_dir"]["default"]
    assert "api-beijing.klingai.com" in config["api_base_url"]["description"]
    server = MANIFEST["server"]
    assert server["type"] == "uv"
    assert server["mcp_config"]["command"] == "uv"
    assert server["mcp_config"]["args"] == ["run", "--directory", "${__dirname}", "kling-omni-mcp"]
    env = server["mcp_config"]["env"]
    used = {m for value in env.values() for m in re.findall(r"\$\{user_config\.(\w+)\}", value)}
    assert used == set(config)  # every field is passed on, none is invented
    fields = set(Settings.model_fields)
    for name in env:
        assert name.startswith("KLING_") and name[len("KLING_") :].lower() in fields, name


@pytest.mark.anyio
async def test_bundle_validates_packs_and_its_source_starts(tmp_path: Path, simulator: SimHandle) -> None:
    node_executable()
    node_package_dir("@anthropic-ai/mcpb")
    path = await anyio.to_thread.run_sync(lambda: build_bundle(out_dir=tmp_path / "dist"))
    assert path.name == f"kling-omni-mcp-{project_version()}.mcpb"
    with zipfile.ZipFile(path) as bundle:
        names = set(bundle.namelist())
        packed = json.loads(bundle.read("manifest.json"))
        bundle.extractall(tmp_path / "installed")
    assert {"manifest.json", "pyproject.toml", "README.md", "src/kling_omni_mcp/__main__.py"} <= names
    assert "src/kling_omni_mcp/server/tools.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert packed["version"] == project_version() == MANIFEST["version"]
    assert packed["server"]["entry_point"] in names

    # What the host does after `uv sync` (uv itself is not here): run the bundled source with
    # the manifest's environment, optional fields left empty as the host leaves them.
    installed = tmp_path / "installed"
    values = {"api_key": TEST_API_KEY, "api_base_url": simulator.base_url, "output_dir": str(tmp_path / "o")}
    env = {
        name: re.sub(r"\$\{user_config\.(\w+)\}", lambda m: values.get(m.group(1), ""), value)
        for name, value in packed["server"]["mcp_config"]["env"].items()
    }
    env |= {"HOME": str(tmp_path / "home"), "PYTHONPATH": str(installed / "src")}
    args = ["-m", "kling_omni_mcp"]
    params = StdioServerParameters(command=sys.executable, args=args, env=env, cwd=installed)
    async with Client(params, read_timeout_seconds=60) as client:
        listing = await client.list_tools()
        assert [t.name for t in listing.tools] == [t["name"] for t in packed["tools"]]
        account = await client.call_tool("get_account", {})
        assert not account.is_error, account
    assert simulator.sim.account.queries == 1  # the bundled server reached the (simulated) vendor
