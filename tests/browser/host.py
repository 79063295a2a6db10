"""A minimal MCP Apps host for the browser tests, built from the official host bridge.

The host page embeds the view the way the strictest real host does: a sandboxed iframe with
``allow-scripts`` only (an opaque origin: no storage, no cookies) whose document is served with
the spec's default CSP (no network; images from ``data:`` only). ``AppBridge`` and
``PostMessageTransport`` come from the npm package ``@modelcontextprotocol/ext-apps``, bundled
with esbuild at test time. The bridge's server calls (``tools/call``, ``resources/read``) are
relayed to Python through Playwright, where a real ``mcp.Client`` sends them to the real server.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.tooling import NODE_MODULES, node_package_dir, require

__all__ = ["DEFAULT_CSP", "HOST_PAGE", "bundle_host_bridge", "serve_host"]

#: The CSP the MCP Apps spec (2026-01-26) applies when a resource declares no domains.
DEFAULT_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; media-src 'self' data:; connect-src 'none'"
)

_ENTRY = """
import { AppBridge, PostMessageTransport } from "@modelcontextprotocol/ext-apps/app-bridge";
window.AppBridge = AppBridge;
window.PostMessageTransport = PostMessageTransport;
"""

HOST_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>test host</title><link rel="icon" href="data:,">
<style>
  body { margin: 0; padding: 16px; font: 14px system-ui, sans-serif; }
  body.dark { background: #0f0f10; color: #eee; }
  iframe { width: 720px; height: 240px; border: 1px solid #8885; border-radius: 10px; display: block; }
</style>
<script src="/host.js"></script></head>
<body>
<div id="slot"></div>
<script>
  window.hostLog = [];
  window.hostReady = false;
  window.startHost = async function (hostContext, capabilities) {
    document.body.className = hostContext.theme === "dark" ? "dark" : "";
    const iframe = document.createElement("iframe");
    iframe.setAttribute("sandbox", "allow-scripts");
    iframe.src = "/view.html";
    document.getElementById("slot").appendChild(iframe);
    const bridge = new AppBridge(
      null,
      { name: "kling-test-host", version: "1.0.0" },
      capabilities || { openLinks: {}, downloadFile: {}, serverTools: {}, serverResources: {}, logging: {},
                        message: { text: {} } },
      { hostContext: hostContext },
    );
    bridge.oncalltool = (params) => window.pyCallTool(params);
    bridge.onreadresource = (params) => window.pyReadResource(params);
    bridge.onopenlink = async (params) => { window.hostLog.push(["open-link", params]); return {}; };
    bridge.onmessage = async (params) => { window.hostLog.push(["message", params]); return {}; };
    bridge.ondownloadfile = async (params) => { window.hostLog.push(["download", params]); return {}; };
    bridge.addEventListener("initialized", () => { window.hostReady = true; });
    bridge.addEventListener("sizechange", (size) => {
      if (size.height) iframe.style.height = Math.min(900, Math.ceil(size.height)) + "px";
    });
    await bridge.connect(new PostMessageTransport(iframe.contentWindow, iframe.contentWindow));
    window.bridge = bridge;
  };
</script>
</body></html>
"""


def bundle_host_bridge(out_dir: Path) -> Path:
    """``AppBridge`` + ``PostMessageTransport`` as one browser script (esbuild, at test time)."""
    node_package_dir("@modelcontextprotocol/ext-apps")
    esbuild = require(
        NODE_MODULES / ".bin" / "esbuild" if (NODE_MODULES / ".bin" / "esbuild").exists() else None,
        "esbuild",
    )
    entry = out_dir / "entry.js"
    entry.write_text(_ENTRY, encoding="utf-8")
    bundle = out_dir / "host.js"
    subprocess.run(
        [
            esbuild,
            str(entry),
            "--bundle",
            "--format=iife",
            "--platform=browser",
            f"--outfile={bundle}",
            "--log-level=warning",
        ],
        check=True,
        timeout=120,
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
    )
    return bundle


@contextmanager
def serve_host(bundle: Path, view_html: str) -> Iterator[str]:
    """Serve the host page, the bundle and the view (under the default CSP) on loopback."""
    files: dict[str, tuple[bytes, str, dict[str, str]]] = {
        "/host.html": (HOST_PAGE.encode(), "text/html; charset=utf-8", {}),
        "/host.js": (bundle.read_bytes(), "text/javascript; charset=utf-8", {}),
        "/view.html": (
            view_html.encode(),
            "text/html; charset=utf-8",
            {"Content-Security-Policy": DEFAULT_CSP},
        ),
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = files.get(self.path)
            if found is None:
                self.send_error(404)
                return
            body, kind, extra = found
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
