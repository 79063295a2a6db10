"""Results on disk: real downloads from a tiny Starlette app on loopback, sidecars, listing."""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from kling_omni_mcp._asgi import serve_asgi
from kling_omni_mcp.media import OutputError, ResultStore

TASK = "862173094419476533"


class Server:
    """Serves ``files[path] = (status, content type, body)``; counts requests per path."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[int, str, bytes]] = {}
        self.hits: Counter[str] = Counter()
        self.before_body: Callable[[], None] | None = None

    def app(self) -> Starlette:
        async def serve(request: Request) -> Response:
            path = request.url.path
            self.hits[path] += 1
            if path == "/cut.png":
                body = self.files["/cut.png"][2]
                # Declares the full length, sends half: a body cut off mid-way.
                return Response(body[: len(body) // 2], headers={"content-length": str(len(body))})
            if path == "/to-file":
                return Response(status_code=302, headers={"location": "file:///etc/passwd"})
            if path == "/loop":
                return RedirectResponse("/loop", status_code=302)
            if path == "/moved":
                return RedirectResponse("/img.png", status_code=301)
            if path == "/slow.png":

                async def slowly() -> AsyncIterator[bytes]:
                    yield self.files["/img.png"][2][:100]
                    await anyio.sleep(1.0)
                    yield self.files["/img.png"][2][100:]

                return StreamingResponse(slowly(), media_type="image/png")
            if path not in self.files:
                return Response(
                    "<html><body>Not Found</body></html>", status_code=404, media_type="text/html"
                )
            if self.before_body is not None:
                self.before_body()
            status, content_type, body = self.files[path]
            return Response(body, status_code=status, media_type=content_type)

        return Starlette(routes=[Route("/{path:path}", serve)])


@pytest.fixture
async def server(encode_image: Callable[..., bytes]) -> AsyncIterator[tuple[Server, str]]:
    srv = Server()
    srv.files["/img.png"] = (200, "image/png", encode_image((320, 400), noise=True))
    srv.files["/photo.jpg"] = (200, "image/jpeg", encode_image((400, 300), fmt="JPEG"))
    srv.files["/other.png"] = (200, "image/png", encode_image((320, 400), color=(0, 0, 255)))
    srv.files["/cut.png"] = (200, "image/png", encode_image((400, 400), noise=True))
    srv.files["/page.png"] = (200, "text/html; charset=utf-8", b"<!doctype html><html>Login</html>")
    srv.files["/big.png"] = (200, "image/png", encode_image((600, 600), noise=True))
    async with serve_asgi(srv.app()) as base:
        yield srv, base


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=10) as client:
        yield client


def _all_files(root: Path) -> list[str]:
    """Every file under root, hidden ones included (partial downloads start with a dot)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.anyio
async def test_a_png_is_saved_under_the_task_id_and_index(
    tmp_path: Path, server: tuple[Server, str], http: httpx2.AsyncClient
) -> None:
    srv, base = server
    store = ResultStore(tmp_path / "out", allow_private=True)
    saved = await store.save_image(http, f"{base}/img.png", TASK, 0)
    body = srv.files["/img.png"][2]
    assert saved.path == (tmp_path / "out").resolve() / TASK / f"{TASK}_0.png"
    assert saved.path.read_bytes() == body
    assert (saved.mime_type, saved.width, saved.height) == ("image/png", 320, 400)
    assert (saved.byte_size, saved.sha256) == (len(body), hashlib.sha256(body).hexdigest())
    assert saved.already_saved is False
    assert _all_files(tmp_path / "out") == [f"{TASK}/{TASK}_0.png"]


@pytest.mark.anyio
async def test_temp_files_left_by_a_killed_process_are_swept(
    tmp_path: Path, server: tuple[Server, str], http: httpx2.AsyncClient
) -> None:
    import os
    import time

    from kling_omni_mcp.media.outputs import STALE_PARTIAL_SECONDS

    _srv, base = server
    folder = tmp_path / "out" / TASK
    folder.mkdir(parents=True)
    stale = folder / f".{TASK}_0.partial-dead01"
    fresh = folder / f".{TASK}_1.partial-live02"  # a download that may still be running
    for leftover in (stale, fresh):
        leftover.write_bytes(b"\x89PNG half")
    old = time.time() - STALE_PARTIAL_SECONDS - 60
    os.utime(stale, (old, old))
    await ResultStore(tmp_path / "out", allow_private=True).save_image(http, f"{base}/img.png", TASK, 2)
    assert not stale.exists()
    assert fresh.exists()


@pytest.mark.anyio
async def test_the_extension_comes_from_the_bytes(
    tmp_path: Path, server: tuple[Server, str], http: httpx2.AsyncClient
) -> None:
    _srv, base = server
    saved = await ResultStore(tmp_path, allow_private=True).save_image(http, f"{base}/photo.jpg", TASK, 3)
    assert saved.path.name == f"{TASK}_3.jpg" and saved.mime_type == "image/jpeg"


@pytest.mark.anyio
async def test_a_second_save_does_not_download_again(
    tmp_path: Path, server: tuple[Server, str], http: httpx2.AsyncClient
) -> None:
    srv, base = server
    store = ResultStore(tmp_path, allow_private=True)
    first = await store.save_image(http, f"{base}/img.png", TASK, 1)
    second = await store.save_image(http, f"{base}/img.png", TASK, 1)
    assert srv.hits["/img.png"] == 1
    assert second.already_saved is True
    assert (second.path, second.sha256, second.width) == (first.path, first.sha256, first.width)


@pytest.mark.anyio
async def test_normal_redirects_are_followed(
    tmp_path: Path, server: tuple[Server, str], http: httpx2.AsyncClient
) -> None:
    srv, base = server
    saved = await ResultStore(tmp_path, allow_private=True).save_image(http, f"{base}/moved", TASK, 0)
    assert saved.path.read_bytes() == srv.files["/img.png"][2]


FAILURES = [
    # (url path, message fragment, kwargs)
    ("/cut.png", "was cut off", {}),
    ("/page.png", "was not an image (text/html)", {}),
    ("/missing.png", "HTTP 404", {}),
    ("/to-file", "redirected to a file: address", {}),
    ("/loop", "redirected more than 5 times", {}),
    ("/big.png", "limit", {"max_bytes": 50_000}),
    ("/slow.png", "did not finish within 0.3 s", {"timeout": 0.3}),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "fragment", "kwargs"), FAILURES)
async def test_failed_downloads_raise_and_leave_nothing_behind(
    tmp_path: Path,
    server: tuple[Server, str],
    http: httpx2.AsyncClient,
    path: str,
    fragment: str,
    kwargs: dict[str, float],
) -> None:
    _srv, base = server
    store = ResultStore(tmp_path, allow_private=True)
    with pytest.raises(OutputError) as info:
        await store.save_image(http, f"{base}{path}?token=SECRET", TASK, 0, **kwargs)
    assert fragment in str(info.value)
    assert "SECRET" not in str(info.value)  # signed query strings stay out of messages
    assert _all_files(tmp_path) == []  # no final file, no partial file
    assert store.find_saved_images(TASK) == []


@pytest.mark.anyio
@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.png", "http://[::1/a.png"])
async def test_a_non_http_url_is_refused(tmp_path: Path, http: httpx2.AsyncClient, url: str) -> None:
    with pytest.raises(OutputError, match="not an http"):
        await ResultStore(tmp_path, allow_private=True).save_image(http, url, TASK, 0)
    assert _all_files(tmp_path) == []


@pytest.mark.anyio
async def test_a_different_file_at_the_final_name_is_kept(
    tmp_path: Path, server: tuple[Server, str], http: httpx2.AsyncClient
) -> None:
    srv, base = server
    store = ResultStore(tmp_path, allow_private=True)
    final = store.image_path(TASK, 0)
    old = srv.files["/other.png"][2]

    def another_writer_wins() -> None:
        # Another writer puts a different image in place while our download is in flight.
        final.parent.mkdir(parents=True, exist_ok=True)
        final.write_bytes(old)

    srv.before_body = another_writer_wins
    saved = await store.save_image(http, f"{base}/img.png", TASK, 0)
    assert final.read_bytes() == old
    assert saved.path == final.with_name(f"{TASK}_0-2.png")
    assert saved.path.read_bytes() == srv.files["/img.png"][2]
    assert store.find_saved_images(TASK) == [final, saved.path]


@pytest.mark.anyio
async def test_the_same_file_at_the_final_name_is_reused(
    tmp_path: Path, server: tuple[Server, str], http: httpx2.AsyncClient
) -> None:
    srv, base = server
    store = ResultStore(tmp_path, allow_private=True)
    final = store.image_path(TASK, 0)

    def same_content_arrives() -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        final.write_bytes(srv.files["/img.png"][2])

    srv.before_body = same_content_arrives
    saved = await store.save_image(http, f"{base}/img.png", TASK, 0)
    assert (saved.path, saved.already_saved) == (final, True)
    assert _all_files(tmp_path) == [f"{TASK}/{TASK}_0.png"]


def test_names_come_from_the_task_id_only_and_stay_inside(tmp_path: Path) -> None:
    store = ResultStore(tmp_path, allow_private=True)
    path = store.image_path("../../etc/evil task", 2)
    assert path.resolve().is_relative_to(tmp_path.resolve())
    # Not a plain id: a readable part plus a hash of the exact id (tests/reliability/test_hostile_vendor.py).
    assert re.fullmatch(r"etc_evil_task\.[0-9a-f]{16}_2\.png", path.name), path.name
    assert path.parent.name == path.name.removesuffix("_2.png")
    with pytest.raises(OutputError, match="index"):
        store.image_path(TASK, -1)


def test_an_unusable_output_folder_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = ResultStore(blocker / "out", allow_private=True)
    with pytest.raises(OutputError, match=r"Cannot create the output folder .*KLING_OUTPUT_DIR"):
        store.write_sidecar(TASK, {"a": 1})


# --- sidecars and listing ------------------------------------------------------------------------


def test_sidecar_round_trip(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "out", allow_private=True)
    data = {
        "task_id": TASK,
        "prompt": "a cat, <<<image_1>>> style — ünïcode",
        "element_ids": [829836802793406551],
        "saved": [tmp_path / "x.png"],
        "created": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    path = store.write_sidecar(TASK, data)
    assert path == (tmp_path / "out").resolve() / TASK / f"{TASK}.json"
    back = store.read_sidecar(TASK)
    assert back is not None
    assert back["prompt"] == data["prompt"]
    assert back["element_ids"] == [829836802793406551]  # exact beyond 2**53
    assert back["saved"] == [str(tmp_path / "x.png")]
    assert back["created"] == "2026-01-02T03:04:05+00:00"
    store.write_sidecar(TASK, {"task_id": TASK, "status": "succeed"})
    assert store.read_sidecar(TASK) == {"task_id": TASK, "status": "succeed"}
    assert _all_files(tmp_path / "out") == [f"{TASK}/{TASK}.json"]  # no temp files left


@pytest.mark.parametrize(
    ("content", "logged"),
    [
        ('{"task_id": "1", "status": ', "not valid JSON"),
        ("[1, 2, 3]", "does not hold a JSON object"),
        (b"\xff\xfe\x00garbage", "Cannot read the sidecar"),
    ],
)
def test_a_corrupt_sidecar_reads_as_none_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str | bytes, logged: str
) -> None:
    store = ResultStore(tmp_path, allow_private=True)
    path = store.sidecar_path(TASK)
    path.parent.mkdir(parents=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with caplog.at_level(logging.WARNING, logger="kling_omni_mcp.media.outputs"):
        assert store.read_sidecar(TASK) is None
    assert logged in caplog.text


def test_a_missing_sidecar_reads_as_none(tmp_path: Path) -> None:
    assert ResultStore(tmp_path, allow_private=True).read_sidecar(TASK) is None


def test_find_saved_images_sorts_by_index_and_skips_the_rest(tmp_path: Path) -> None:
    store = ResultStore(tmp_path, allow_private=True)
    folder = store.task_dir(TASK)
    folder.mkdir(parents=True)
    names = [f"{TASK}_10.png", f"{TASK}_2.jpg", f"{TASK}_0-2.png", f"{TASK}_0.png", f"{TASK}.json"]
    names += [f".{TASK}_3.partial-abc123", "notes.txt", "other_1.png"]
    for name in names:
        (folder / name).write_bytes(b"x")
    found = [p.name for p in store.find_saved_images(TASK)]
    assert found == [f"{TASK}_0.png", f"{TASK}_0-2.png", f"{TASK}_2.jpg", f"{TASK}_10.png"]
