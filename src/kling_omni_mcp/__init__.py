"""kling-omni-mcp: an MCP server for Kling's Omni-Image API."""

__version__ = "0.1.0"
