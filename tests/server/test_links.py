"""Signed download links over real loopback HTTP: a remote client fetches a saved image with a plain
HTTP client and no bearer token; every altered, truncated or expired link is refused."""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from kling_omni_mcp._asgi import serve_asgi
from kling_omni_mcp.config import Settings
from kling_omni_mcp.media.outputs import ResultStore
from kling_omni_mcp.server.http import build_http_app
from kling_omni_mcp.server.links import KEY_FILE_NAME, LinkSigner, build_link_signer, load_or_create_key
from tests.conftest import SimHandle, free_port, text_of

pytestmark = pytest.mark.anyio

TOKEN = "links-tok-7c1e9f3a2b"


async def make_image(url: str, output_dir: Path) -> tuple[str, Path]:
    """Create an image through the MCP tools over HTTP; its task id and saved file."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60))
    async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
        created = await client.call_tool("create_image", {"prompt": "A link", "wait_seconds": 20})
        assert not created.is_error, text_of(created)
        data = created.structured_content
        assert data is not None and data["status"] == "succeeded"
        assert data["images"][0]["path"] is None  # over HTTP the answer never names a server path
        task_id = str(data["task_id"])
        saved = ResultStore(output_dir).saved_image(task_id, 0)
        assert saved is not None
        return task_id, saved


def with_query(link: str, **changes: str | None) -> str:
    parts = urlsplit(link)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    return parts._replace(query="&".join(f"{k}={v}" for k, v in query.items())).geturl()


async def test_link_serves_exact_bytes_without_a_token_and_refuses_altered_links(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    port = free_port()
    settings = make_settings(simulator.base_url, mcp_auth_tokens=TOKEN, public_url=f"http://127.0.0.1:{port}")
    async with serve_asgi(build_http_app(settings), port=port) as url:
        task_id, saved = await make_image(url, settings.output_dir)
        signer = build_link_signer(settings)
        assert signer is not None
        link = signer.url(task_id, 0)
        assert link.startswith(f"http://127.0.0.1:{port}/files/")
        async with httpx2.AsyncClient(timeout=20) as plain:
            got = await plain.get(link)
            assert got.status_code == 200, got.text
            assert got.content == saved.read_bytes()
            assert got.headers["content-type"] == {".png": "image/png", ".jpg": "image/jpeg"}[saved.suffix]
            cache = got.headers["cache-control"]
            assert cache.startswith("private, max-age=")
            assert settings.link_ttl_seconds - 10 <= int(cache.rsplit("=", 1)[1]) <= settings.link_ttl_seconds
            assert got.headers["content-disposition"] == f'inline; filename="{saved.name}"'
            assert (await plain.head(link)).status_code == 200

            sig = parse_qs(urlsplit(link).query)["sig"][0]
            exp = parse_qs(urlsplit(link).query)["exp"][0]
            flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
            refused = {
                "tampered signature": with_query(link, sig=flipped),
                "truncated signature": with_query(link, sig=sig[:20]),
                "no signature": with_query(link, sig=None),
                "no expiry": with_query(link, exp=None),
                "later expiry": with_query(link, exp=str(int(exp) + 3600)),
                "other index": link.replace(f"/{task_id}/0?", f"/{task_id}/1?"),
                "other task": link.replace(f"/files/{task_id}/", "/files/someone-else/"),
                "expired": signer_at(signer, -3600).url(task_id, 0),
            }
            for case, bad in refused.items():
                answer = await plain.get(bad)
                assert answer.status_code in (403, 404), case
                assert saved.read_bytes() not in answer.content, case

            # A valid signature for an image that does not exist, or a task id that tries to leave
            # the output folder, finds nothing: the file comes from the store, never from the path.
            assert (await plain.get(signer.url(task_id, 7))).status_code == 404
            assert (await plain.get(signer.url("../../etc", 0))).status_code == 404


def signer_at(signer: LinkSigner, offset: float) -> LinkSigner:
    """The same key, with a clock ``offset`` seconds away (to make already-expired links)."""
    return LinkSigner(
        signer._key, base_url=signer.base_url, ttl_seconds=1, clock=lambda: time.time() + offset
    )


async def test_expiry_is_honoured_within_seconds(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    port = free_port()
    settings = make_settings(
        simulator.base_url, mcp_auth_tokens=TOKEN, public_url=f"http://127.0.0.1:{port}", link_ttl_seconds=10
    )
    async with serve_asgi(build_http_app(settings), port=port) as url:
        task_id, _saved = await make_image(url, settings.output_dir)
        signer = build_link_signer(settings)
        assert signer is not None
        short = LinkSigner(signer._key, base_url=signer.base_url, ttl_seconds=2)
        link = short.url(task_id, 0)
        async with httpx2.AsyncClient(timeout=20) as plain:
            assert (await plain.get(link)).status_code == 200
            await anyio.sleep(3.2)  # exp is a whole second: 2-3 s from signing
            assert (await plain.get(link)).status_code == 403


def test_key_is_private_kept_and_shared(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings(public_url="https://mcp.example.com")
    first = build_link_signer(settings)
    assert first is not None
    key_file = settings.output_dir / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = build_link_signer(settings)  # a restart, or a replica sharing the folder
    assert again is not None
    assert again.sign("t", 0, 123) == first.sign("t", 0, 123)

    with_secret = build_link_signer(
        make_settings(public_url="https://mcp.example.com", link_secret="a-long-configured-link-secret")
    )
    assert with_secret is not None
    assert with_secret.sign("t", 0, 123) != first.sign("t", 0, 123)
    assert build_link_signer(make_settings()) is None  # no public URL: no link could be opened

    # Many replicas starting at once agree on one key.
    folder = tmp_path / "shared"
    keys: list[bytes] = []
    threads = [threading.Thread(target=lambda: keys.append(load_or_create_key(folder))) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(keys) == 16 and len(set(keys)) == 1
    assert [p.name for p in folder.iterdir()] == [KEY_FILE_NAME]  # no temp file left behind
