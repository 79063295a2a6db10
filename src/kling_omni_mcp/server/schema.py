"""Smaller tool schemas: the same JSON Schema with nothing the model does not need to read.

Every tool's input and output schema is read into the model's context in every conversation,
so auto-generated titles, ``"default": null`` and ``anyOf [X, null]`` are paid again and again.

Why this touches SDK internals: ``MCPServer`` (mcp 2.x) derives each tool's schemas once, at
registration, and offers no public hook to change them; the only owner of those dicts is the
private ``server._tool_manager``. ``compact_registered_schemas`` checks that shape first and,
if an SDK release changed it, logs a warning and leaves the schemas as they are (bigger, still
correct); ``tests/server/test_schema.py`` fails loudly in that case, so an upgrade cannot
silently undo the compaction.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

__all__ = ["compact_registered_schemas", "compact_schema"]

logger = logging.getLogger(__name__)


def compact_schema(node: Any, *, drop_object_descriptions: bool = False) -> Any:
    """The same JSON Schema with less to read: no auto-generated titles, ``X | None`` written as
    ``"type": [X, "null"]``, no ``"default": null`` (and, for output schemas, no class docstrings).
    Every tool schema is read into the model's context in every conversation, so these bytes are
    paid again and again."""
    if isinstance(node, list):
        return [compact_schema(item, drop_object_descriptions=drop_object_descriptions) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "default" and value is None:
            continue
        if key == "description" and drop_object_descriptions and "properties" in node:
            continue
        out[key] = (
            value
            if key == "properties"
            else compact_schema(value, drop_object_descriptions=drop_object_descriptions)
        )
    if "properties" in out:
        out["properties"] = {
            name: compact_schema(sub, drop_object_descriptions=drop_object_descriptions)
            for name, sub in out["properties"].items()
        }
    options = out.get("anyOf")
    if (
        isinstance(options, list)
        and len(options) == 2
        and {"type": "null"} in options
        and all(set(o) == {"type"} and isinstance(o["type"], str) for o in options)
    ):
        del out["anyOf"]
        other = next(o["type"] for o in options if o["type"] != "null")
        out["type"] = [other, "null"]
    return out


def compact_registered_schemas(server: MCPServer[Any]) -> bool:
    """Compact the schemas of every tool registered on ``server``, in place.

    Returns False (with a warning) when the SDK no longer has the shape this relies on.
    """
    manager = getattr(server, "_tool_manager", None)
    tools = manager.list_tools() if manager is not None and hasattr(manager, "list_tools") else None
    if tools is None or not all(
        isinstance(getattr(t, "parameters", None), dict)
        and hasattr(getattr(t, "fn_metadata", None), "output_schema")
        for t in tools
    ):
        logger.warning("This mcp SDK version stores tools differently: tool schemas are left uncompacted")
        return False
    for tool in tools:
        tool.parameters = compact_schema(tool.parameters)
        if tool.fn_metadata.output_schema is not None:
            tool.fn_metadata.output_schema = compact_schema(
                tool.fn_metadata.output_schema, drop_object_descriptions=True
            )
    return True
