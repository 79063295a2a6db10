"""The tool list as a client reads it: compacted schemas (and a loud failure if the SDK stops
letting us compact them), enums built from the capability map, descriptions from the settings."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from mcp import Client

from kling_omni_mcp.config import Settings
from kling_omni_mcp.kling.capabilities import ASPECT_RATIOS, MODEL_NAMES, PROMPT_MAX_CHARS, RESOLUTIONS
from kling_omni_mcp.server.app import build_server
from kling_omni_mcp.server.schema import compact_registered_schemas

pytestmark = pytest.mark.anyio


def _keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = set(node)
        for key, value in node.items():
            # Property names are data, not schema keywords.
            found |= set().union(*(_keys(v) for v in value.values())) if key == "properties" else _keys(value)
        return found
    if isinstance(node, list):
        return set().union(set(), *(_keys(item) for item in node))
    return set()


async def test_the_sdk_still_lets_us_compact_the_schemas(make_settings: Callable[..., Settings]) -> None:
    # If this fails, an mcp SDK upgrade changed how MCPServer keeps its tools: the server still
    # works, but every conversation pays for the uncompacted schemas. Update server/schema.py.
    server = build_server(make_settings())
    assert compact_registered_schemas(server) is True
    async with Client(server) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == {"create_image", "get_task", "wait_for_task", "list_tasks", "get_account"}
    for tool in tools.values():
        keys = _keys(tool.input_schema) | _keys(tool.output_schema or {})
        assert "title" not in keys, tool.name
        assert '"default": null' not in json.dumps(tool.input_schema), tool.name
    # ``str | None`` is written as a type list, not an anyOf of two schemas.
    assert tools["create_image"].input_schema["properties"]["watermark"]["type"] == ["boolean", "null"]


async def test_the_create_schema_is_built_from_the_capability_map(
    make_settings: Callable[..., Settings],
) -> None:
    async with Client(build_server(make_settings())) as client:
        [create] = [t for t in (await client.list_tools()).tools if t.name == "create_image"]
    props = create.input_schema["properties"]
    assert props["model"]["enum"] == list(MODEL_NAMES) and props["model"]["default"] == MODEL_NAMES[0]
    assert props["resolution"]["enum"] == list(RESOLUTIONS)
    assert props["prompt"]["maxLength"] == PROMPT_MAX_CHARS
    assert ASPECT_RATIOS[0] in str(props["aspect_ratio"])
    for name in MODEL_NAMES:
        assert name in (create.description or "")


async def test_the_wait_description_states_the_running_default(
    make_settings: Callable[..., Settings],
) -> None:
    async with Client(build_server(make_settings(wait_seconds=12))) as client:
        [wait] = [t for t in (await client.list_tools()).tools if t.name == "wait_for_task"]
    assert "server's setting (12 s)" in (wait.description or "")
