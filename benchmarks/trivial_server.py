"""The cold-start baseline: the smallest useful MCP server (one tool), started as ``python script.py``.

Whatever start-up time this takes is the price of Python plus the ``mcp`` SDK; anything our
server takes beyond it is ours.
"""

from mcp.server import MCPServer

server = MCPServer("trivial")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


if __name__ == "__main__":
    server.run("stdio")
