"""Result links from a hostile vendor: where downloads may connect, how much they may fetch, and
what a SIGTERM mid-download leaves behind. Real sockets on loopback throughout: a second loopback
address (127.0.0.2) plays "the public internet" where a test needs one."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from kling_omni_mcp.config import Settings
from kling_omni_mcp.media.errors import OutputError
from kling_omni_mcp.media.netguard import DownloadGuard
from kling_omni_mcp.media.outputs import MAX_DOWNLOAD_BYTES, ResultStore
from tests.conftest import TEST_API_KEY, SimHandle, command, text_of
from tests.reliability.helpers import files_under, leftovers, mcp_session
from tests.reliability.hostile_vendor import hostile_vendor, sample_png, task

pytestmark = pytest.mark.anyio

PUBLIC = "127.0.0.2"  # stands in for a public address: the guard is told to treat it so
TASK = "862173094419476533"

# Where a hostile result link may point; {port} is a live loopback server that must see nothing.
REFUSED_TARGETS = {
    "loopback": "http://127.0.0.1:{port}/img.png",
    "localhost-name": "http://localhost:{port}/img.png",
    "loopback-v6": "http://[::1]:{port}/img.png",
    "v4-mapped-loopback": "http://[::ffff:127.0.0.1]:{port}/img.png",
    "unspecified": "http://0.0.0.0:{port}/img.png",
    "private-10": "http://10.0.0.1/img.png",
    "private-192": "http://192.168.1.1/img.png",
    "cgnat-alibaba-metadata": "http://100.100.100.200/latest/meta-data/",
    "aws-metadata": "http://169.254.169.254/latest/meta-data/iam/",
    "aws-metadata-v6": "http://[fd00:ec2::254]/latest/meta-data/",
    "link-local-v6": "http://[fe80::1]/img.png",
    "unique-local-v6": "http://[fc00::1]/img.png",
    "multicast": "http://224.0.0.1/img.png",
    "6to4-loopback": "http://[2002:7f00:1::]:{port}/img.png",
    "nat64-loopback": "http://[64:ff9b::7f00:1]:{port}/img.png",
}


@pytest.fixture
async def http() -> Any:
    async with httpx2.AsyncClient(timeout=10) as client:
        yield client


@pytest.mark.parametrize("via_redirect", [False, True], ids=["direct", "via-redirect"])
@pytest.mark.parametrize("target", list(REFUSED_TARGETS))
async def test_downloads_refuse_non_public_addresses_at_every_hop(
    target: str, via_redirect: bool, http: httpx2.AsyncClient, tmp_path: Path
) -> None:
    image = sample_png(tmp_path)
    async with hostile_vendor("127.0.0.1") as inside, hostile_vendor(PUBLIC) as outside:
        inside.route("/img.png", "png", file=image)
        port = inside.base_url.rsplit(":", 1)[1]
        url = REFUSED_TARGETS[target].format(port=port)
        if via_redirect:
            outside.route("/hop1", "redirect", location=f"{outside.base_url}/hop2")
            outside.route("/hop2", "redirect", location=url)
            url = f"{outside.base_url}/hop1"
        store = ResultStore(tmp_path / "out", guard=DownloadGuard(treat_as_public=frozenset({PUBLIC})))
        with pytest.raises(OutputError, match="refused") as info:
            with anyio.fail_after(20):
                await store.save_image(http, url, TASK, 0)
        assert inside.requests == []  # nothing reached the inside address
        assert "KLING_DOWNLOAD_ALLOW_PRIVATE" in str(info.value)
        assert files_under(tmp_path / "out") == []


async def test_the_checked_address_is_the_one_connected_to(http: httpx2.AsyncClient, tmp_path: Path) -> None:
    """DNS rebinding: the name resolves to a public address for the check and to loopback after.
    The download connects to the address it checked, with the real name in the Host header."""
    answers = [[PUBLIC], ["127.0.0.1"]]
    asked: list[str] = []

    async def rebinding(host: str, port: int) -> Sequence[str]:
        asked.append(host)
        return answers.pop(0) if answers else ["127.0.0.1"]

    image = sample_png(tmp_path)
    async with hostile_vendor(PUBLIC) as outside:
        outside.route("/img.png", "png", file=image)
        port = outside.base_url.rsplit(":", 1)[1]
        guard = DownloadGuard(resolver=rebinding, treat_as_public=frozenset({PUBLIC}))
        store = ResultStore(tmp_path / "out", guard=guard)
        saved = await store.save_image(http, f"http://cdn.rebind.test:{port}/img.png", TASK, 0)
        [request] = outside.requests
    assert saved.path.read_bytes() == image.read_bytes()
    assert asked == ["cdn.rebind.test"]  # resolved once, by us
    assert request.headers["host"] == f"cdn.rebind.test:{port}"


async def test_downloads_are_capped_in_bytes_even_when_the_size_is_not_announced(
    http: httpx2.AsyncClient, tmp_path: Path
) -> None:
    async with hostile_vendor() as vendor:
        vendor.route("/big.png", "blob", size=MAX_DOWNLOAD_BYTES + 2 * 1024 * 1024)
        store = ResultStore(tmp_path / "out", allow_private=True)
        with pytest.raises(OutputError, match="limit"):
            await store.save_image(http, f"{vendor.base_url}/big.png", TASK, 0)
    assert MAX_DOWNLOAD_BYTES == 50 * 1024 * 1024
    assert files_under(tmp_path / "out") == []


async def test_the_server_refuses_loopback_results_unless_allowed(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    """Not simulate mode, KLING_DOWNLOAD_ALLOW_PRIVATE unset: the simulator's loopback links are
    refused, and the answer says why; with the setting, the same task is saved."""
    strict = make_settings(simulator.base_url, download_allow_private=False)
    async with mcp_session(strict) as client:
        created = await client.call_tool("create_image", {"prompt": "A fox", "wait_seconds": 20})
        assert not created.is_error, text_of(created)
        answer = created.structured_content
        assert answer["status"] == "succeeded" and answer["images"][0]["path"] is None
        assert "refused" in text_of(created) and "loopback" in text_of(created)
    assert [p for p in files_under(strict.output_dir) if p.suffix == ".png"] == []
    async with mcp_session(make_settings(simulator.base_url)) as client:
        got = await client.call_tool("get_task", {"task_id": answer["task_id"]})
        assert Path(got.structured_content["images"][0]["path"]).is_file()


async def test_sigterm_mid_download_leaves_no_partial_file(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """A real server process over stdio, a result that arrives one byte every 0.2 s, SIGTERM."""
    pid_file = tmp_path / "server.pid"
    async with hostile_vendor() as vendor:
        vendor.route("/slow.png", "drip", every=0.2, content_type="image/png", length=100_000)
        images = [{"index": 0, "url": f"{vendor.base_url}/slow.png"}]
        vendor.route("/v1/images/omni-image/t-1", "json", data=task(task_result={"images": images}))
        output = tmp_path / "out"
        env = {
            "HOME": str(tmp_path / "home"),
            "KLING_API_KEY": TEST_API_KEY,
            "KLING_API_BASE_URL": vendor.base_url,
            "KLING_DOWNLOAD_ALLOW_PRIVATE": "true",
            "KLING_OUTPUT_DIR": str(output),
        }
        cmd = command()
        # sh records its pid, then becomes the server (exec keeps the pid).
        params = StdioServerParameters(
            command="/bin/sh", args=["-c", 'echo $$ > "$0"; exec "$@"', str(pid_file), *cmd], env=env
        )
        outcome: list[Any] = []
        ended = anyio.Event()

        async def call(client: Client) -> None:
            try:
                outcome.append(await client.call_tool("get_task", {"task_id": "t-1"}))
            except Exception as exc:  # the server goes away under the call
                outcome.append(exc)
            ended.set()

        session = contextlib.AsyncExitStack()
        client = await session.enter_async_context(Client(params, read_timeout_seconds=60))
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, client)
                with anyio.fail_after(30):
                    while not [p for p in leftovers(output) if ".partial" in p.name]:  # noqa: ASYNC110
                        await anyio.sleep(0.02)
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
                with anyio.fail_after(15):
                    await ended.wait()
        finally:
            with contextlib.suppress(Exception):
                await session.aclose()
    assert isinstance(outcome[0], Exception), outcome  # the process ended, no answer came
    assert leftovers(output) == []
