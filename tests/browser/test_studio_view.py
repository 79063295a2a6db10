"""The studio view in real headless Chromium, hosted by the official MCP Apps host bridge, talking
to the real server (``kling-omni-mcp --simulate --transport http``) in a subprocess.

Screenshots land in the test's tmp folder; with ``UPDATE_DOCS_SCREENSHOTS=1`` they also replace
``docs/images/studio-light.png`` and ``studio-dark.png`` (the README shows them).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.extension import advertise
from mcp.client.streamable_http import streamable_http_client
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID

from kling_omni_mcp.server.studio import STUDIO_URI
from tests.browser.host import bundle_host_bridge, serve_host
from tests.conftest import command, free_port
from tests.tooling import ROOT, chromium_executable

pytestmark = pytest.mark.anyio

SIM_URL = re.compile(r"embedded Kling simulator is serving on (http://127\.0\.0\.1:\d+)")
REFUSAL = "The prompt was flagged by the content safety policy"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LIGHT = {
    "theme": "light",
    "displayMode": "inline",
    "availableDisplayModes": ["inline"],
    "containerDimensions": {"width": 720, "maxHeight": 900},
    "safeAreaInsets": {"top": 0, "right": 0, "bottom": 0, "left": 0},
    "locale": "en-US",
    "platform": "web",
    "styles": {"variables": {"--color-ring-primary": "#7c3aed"}},
}
DARK = {**LIGHT, "theme": "dark", "styles": {"variables": {"--color-background-primary": "#0f0f10"}}}


@contextmanager
def real_server(tmp: Path) -> Iterator[tuple[str, str]]:
    """``kling-omni-mcp --simulate --transport http`` on a free port: (MCP URL, simulator URL)."""
    port = free_port()
    log = (tmp / "server.log").open("w+")
    env = {
        "HOME": str(tmp),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KLING_OUTPUT_DIR": str(tmp / "out"),
        "KLING_SIM_DURATION": "4",
    }
    proc = subprocess.Popen(
        [*command(), "--simulate", "--transport", "http", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp / "server.log").read_text()
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not start within 60 s"
            time.sleep(0.2)
        found = SIM_URL.search((tmp / "server.log").read_text())
        assert found, "the server did not log its embedded simulator's address"
        yield f"http://127.0.0.1:{port}/mcp", found.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


@asynccontextmanager
async def apps_client(url: str) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=60))
    transport = streamable_http_client(url, http_client=http)
    async with Client(
        transport, extensions=[advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})]
    ) as client:
        yield client


async def until(frame: Any, expression: str, *, within: float = 15) -> None:
    """Poll ``expression`` in ``frame`` until it is truthy. (Playwright's wait_for_function
    evaluates strings with eval, which the view's CSP rightly forbids; evaluate goes through
    the DevTools protocol.)"""
    with anyio.fail_after(within):
        while not await frame.evaluate(expression):  # noqa: ASYNC110 - the browser has no event for us
            await anyio.sleep(0.1)


def wire(model: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


class Host:
    """One host page in Chromium with the view mounted; records console errors and CSP events."""

    def __init__(self, page: Any, client: Client) -> None:
        self.page = page
        self.client = client
        self.errors: list[str] = []
        page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    async def start(
        self, base: str, context: dict[str, Any], capabilities: dict[str, Any] | None = None
    ) -> Any:
        # Runs in every frame, the sandboxed view included: a CSP violation becomes a console error.
        await self.page.add_init_script(
            "document.addEventListener('securitypolicyviolation', e => "
            "console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));"
        )

        async def call_tool(params: dict[str, Any]) -> dict[str, Any]:
            return wire(await self.client.call_tool(params["name"], params.get("arguments") or {}))

        async def read_resource(params: dict[str, Any]) -> dict[str, Any]:
            return wire(await self.client.read_resource(params["uri"]))

        await self.page.expose_function("pyCallTool", call_tool)
        await self.page.expose_function("pyReadResource", read_resource)
        await self.page.goto(f"{base}/host.html")
        await self.page.evaluate("([ctx, caps]) => window.startHost(ctx, caps)", [context, capabilities])
        await self.page.wait_for_function("window.hostReady === true", timeout=15_000)
        view = self.page.frames[1]
        return view

    async def run_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """What a host does: tell the view the input, call the tool, hand the view the result."""
        await self.page.evaluate("args => window.bridge.sendToolInput({arguments: args})", arguments)
        result = wire(await self.client.call_tool(name, arguments))
        await self.page.evaluate("r => window.bridge.sendToolResult(r)", result)
        return result


async def test_studio_view_in_a_sandboxed_iframe(tmp_path: Path) -> None:
    browser_path = chromium_executable()
    from playwright.async_api import async_playwright

    bundle = bundle_host_bridge(tmp_path)
    with real_server(tmp_path) as (mcp_url, sim_url):
        async with apps_client(mcp_url) as client:
            [view_resource] = (await client.read_resource(STUDIO_URI)).contents
            assert view_resource.mime_type == APP_MIME_TYPE
            with serve_host(bundle, view_resource.text) as base:  # type: ignore[union-attr]
                async with async_playwright() as pw:
                    browser = await pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
                    try:
                        task_id = await _light_run(browser, client, base, tmp_path)
                        await _dark_run(browser, client, base, tmp_path)
                        failed_id = await _failed_run(browser, client, base, sim_url)
                        await _wait_and_cancel_runs(browser, client, base, task_id, failed_id)
                    finally:
                        await browser.close()
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":
        target = ROOT / "docs" / "images"
        target.mkdir(parents=True, exist_ok=True)
        for name in ("studio-light.png", "studio-dark.png"):
            shutil.copyfile(tmp_path / name, target / name)


THREE_DECODED = (
    "Array.from(document.querySelectorAll('#grid img'))"
    ".filter(i => i.complete && i.naturalWidth > 0).length === 3"
)
VIEWER_SHOWN = (
    "document.getElementById('viewer').classList.contains('shown') "
    "&& document.getElementById('viewer-img').naturalWidth > 0"
)
RING_COLOR = "getComputedStyle(document.documentElement).getPropertyValue('--color-ring-primary')"

PROMPT = "A red fox curled up in fresh snow, soft morning light"
ARGS = {"prompt": PROMPT, "n": 3, "aspect_ratio": "4:3"}


async def _light_run(browser: Any, client: Client, base: str, tmp: Path) -> str:
    """Create three images; returns the task id."""
    page = await browser.new_page(viewport={"width": 780, "height": 900})
    host = Host(page, client)
    view = await host.start(base, LIGHT)
    # The handshake: the view initialized, sits in an opaque origin, and took the host's theme.
    assert await view.evaluate("document.documentElement.dataset.ready") == "true"
    assert await view.evaluate("window.origin") == "null"
    assert await view.evaluate(RING_COLOR) == "#7c3aed"

    created = await host.run_tool("create_image", ARGS)
    assert created["structuredContent"]["done"] is False
    # The prompt, the model, the size and the estimate, at once.
    await until(view, f"document.getElementById('prompt').textContent === {PROMPT!r}")
    facts = await view.locator("#facts li").all_text_contents()
    assert facts == ["kling-image-o1", "1k · 4:3", "3 images", "≈ 24 units"]
    # Progress moves while the vendor works.
    bar = view.locator("progress")
    await until(view, "document.getElementById('elapsed').textContent !== ''", within=10)
    first = float(await bar.evaluate("p => p.value"))
    await anyio.sleep(1.2)
    second = float(await bar.evaluate("p => p.value"))
    assert 0 < first < second < 1
    assert await view.locator("#status").text_content() in ("Queued", "Generating")
    # Done: three thumbnails that decode, as data: URLs.
    await until(view, THREE_DECODED, within=30)
    images = await view.locator("#grid img").evaluate_all(
        "imgs => imgs.map(i => ({src: i.src.slice(0, 23), w: i.naturalWidth, h: i.naturalHeight}))"
    )
    assert all(
        img["src"] == "data:image/jpeg;base64," and 256 <= max(img["w"], img["h"]) <= 384 for img in images
    )
    assert await view.locator("#status").text_content() == "Done · 3 images"
    assert await bar.evaluate("p => p.value") == 1
    assert re.fullmatch(r"#0\d+×\d+", await view.locator("figcaption").first.text_content() or "")
    # No layout jump: each frame has the image's aspect ratio before its thumbnail arrives, and
    # the host resized the iframe from the view's size-changed notifications.
    assert await view.locator(".frame").first.evaluate("f => f.style.aspectRatio") == "1024 / 768"
    assert await page.locator("iframe").evaluate("f => f.clientHeight") > 300
    # Next steps go to the host: open (no https link from the simulator: shown in the view),
    # download (the kling:// resource), variations (a message to the chat).
    await view.get_by_role("button", name="Open").first.click()
    await until(view, VIEWER_SHOWN)
    await view.locator("#viewer-close").click()
    await view.get_by_role("button", name="Download").first.click()
    await view.get_by_role("button", name="Variations").first.click()
    await page.wait_for_function("window.hostLog.length >= 2")
    log = await page.evaluate("window.hostLog")
    kinds = {entry[0]: entry[1] for entry in log}
    task_id = created["structuredContent"]["task_id"]
    assert kinds["download"]["contents"][0]["uri"] == f"kling://tasks/{task_id}/images/0"
    assert task_id in kinds["message"]["content"][0]["text"] and kinds["message"]["role"] == "user"
    await page.locator("iframe").screenshot(path=str(tmp / "studio-light.png"))
    assert host.errors == []
    await page.close()
    return str(task_id)


async def _dark_run(browser: Any, client: Client, base: str, tmp: Path) -> None:
    page = await browser.new_page(viewport={"width": 780, "height": 900}, color_scheme="dark")
    host = Host(page, client)
    view = await host.start(base, DARK)
    assert await view.evaluate("document.documentElement.dataset.theme") == "dark"
    await host.run_tool("create_image", {**ARGS, "prompt": "A lighthouse on a cliff at dusk, long exposure"})
    await until(view, THREE_DECODED, within=30)
    background = await view.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 15, 16)"  # the host's variable, not the view's default
    await page.locator("iframe").screenshot(path=str(tmp / "studio-dark.png"))
    assert host.errors == []
    await page.close()


async def _failed_run(browser: Any, client: Client, base: str, sim_url: str) -> str:
    """A task the vendor fails; returns its id."""
    armed = httpx2.post(
        f"{sim_url}/admin/faults",
        json={"action": "fail_next_tasks", "count": 1, "message": REFUSAL},
        timeout=10,
    )
    assert armed.status_code == 200, armed.text
    page = await browser.new_page(viewport={"width": 780, "height": 700})
    host = Host(page, client)
    view = await host.start(base, LIGHT)
    refused = await host.run_tool("create_image", {"prompt": "something the vendor refuses"})
    problem = view.locator("#problem")
    await problem.wait_for(state="visible", timeout=30_000)
    assert REFUSAL in (await view.locator("#problem-reason").text_content() or "")
    assert "Rephrase the prompt" in (await view.locator("#problem-advice").text_content() or "")
    assert await view.locator("#status").text_content() == "Failed"
    assert await view.locator("#grid img").count() == 0
    # The CSP is really in force: an image from another origin is refused inside the view.
    blocked = await view.evaluate(
        "url => new Promise(r => { const i = new Image(); i.onload = () => r('loaded'); "
        "i.onerror = () => r('blocked'); i.src = url; })",
        f"{sim_url}/healthz",
    )
    assert blocked == "blocked"
    with anyio.move_on_after(5):
        while not host.errors:  # noqa: ASYNC110 - console events arrive from the browser
            await anyio.sleep(0.1)
    assert [e for e in host.errors if "CSP violation" not in e and "Content Security Policy" not in e] == []
    assert any("CSP violation" in e or "Content Security Policy" in e for e in host.errors)
    await page.close()
    return str(refused["structuredContent"]["task_id"])


async def _wait_and_cancel_runs(
    browser: Any, client: Client, base: str, task_id: str, failed_id: str
) -> None:
    # wait_for_task: the view follows the task id from the tool input alone.
    page = await browser.new_page(viewport={"width": 780, "height": 700})
    host = Host(page, client)
    view = await host.start(base, LIGHT)
    await host.run_tool("wait_for_task", {"task_id": task_id, "timeout_seconds": 5})
    await until(view, THREE_DECODED, within=30)
    assert await view.locator("#prompt").text_content() == f"Task {task_id}"
    assert host.errors == []
    await page.close()
    # A cancelled call says so, and the view stops asking.
    page = await browser.new_page(viewport={"width": 780, "height": 700})
    host = Host(page, client)
    view = await host.start(base, LIGHT)
    await page.evaluate("a => window.bridge.sendToolInput({arguments: a})", {"prompt": "never mind"})
    await page.evaluate("() => window.bridge.sendToolCancelled({reason: 'user action'})")
    await until(view, "document.getElementById('status').textContent === 'Cancelled'")
    assert "cancelled (user action)" in (await view.locator("#note").text_content() or "")
    assert host.errors == []
    await page.close()
    # A host that lets views read resources but not call tools: the result alone fills the grid.
    page = await browser.new_page(viewport={"width": 780, "height": 700})
    host = Host(page, client)
    view = await host.start(base, LIGHT, {"serverResources": {}})
    await host.run_tool("wait_for_task", {"task_id": task_id, "timeout_seconds": 5})
    await until(view, THREE_DECODED, within=30)
    assert await view.get_by_role("button", name="Variations").first.is_disabled()
    assert host.errors == []
    await page.close()
    # A failed task reached through wait_for_task: an isError result that carries the answer.
    page = await browser.new_page(viewport={"width": 780, "height": 700})
    host = Host(page, client)
    view = await host.start(base, LIGHT)
    failed = await host.run_tool("wait_for_task", {"task_id": failed_id, "timeout_seconds": 10})
    assert failed["isError"] is True and failed["structuredContent"]["status"] == "failed"
    await view.locator("#problem").wait_for(state="visible", timeout=30_000)
    assert REFUSAL in (await view.locator("#problem-reason").text_content() or "")
    assert host.errors == []
    await page.close()
