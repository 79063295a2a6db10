"""Signed download links for saved images: what a remote client (no access to this disk) can open.

A link is ``<KLING_PUBLIC_URL>/files/<task_id>/<index>?exp=<unix time>&sig=<HMAC>``. It works without
a bearer token until ``exp``: the HMAC-SHA256 over (task, index, expiry) under the server's link key
is the credential. The route finds the file through ``ResultStore.saved_image`` from the signed task
id and index only, never from a path in the request.

The key is ``KLING_LINK_SECRET``, or 32 random bytes generated once and kept in
``<output folder>/.link-key`` (mode 0600, created atomically): links survive a restart and work on
every replica sharing the folder. Task folder names never start with a dot, so no task can shadow it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from kling_omni_mcp.config import Settings
from kling_omni_mcp.media.errors import OutputError
from kling_omni_mcp.server.app import ServiceSlot

__all__ = [
    "KEY_FILE_NAME",
    "LinkSigner",
    "build_link_signer",
    "link_routes",
    "load_or_create_key",
    "saved_image_finder",
]

logger = logging.getLogger(__name__)

KEY_FILE_NAME = ".link-key"
_KEY_BYTES = 32
#: Domain separation: a signature made for anything else never verifies as a link.
_PURPOSE = "kling-omni-mcp/download-link/v1"
_MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
}


def load_or_create_key(folder: Path) -> bytes:
    """The link key kept in ``folder``, created (0600, atomically, never overwritten) if absent.

    Two processes starting together both end up with the same key: each writes a private temp file
    and hard-links it to the final name, which fails for all but the first; the others read it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / KEY_FILE_NAME
    if not path.exists():
        temp = folder / f"{KEY_FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(_KEY_BYTES))
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another replica won the race: use its key
                os.link(temp, path)
        finally:
            temp.unlink(missing_ok=True)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd) as handle:
        text = handle.read(4 * _KEY_BYTES).strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise ValueError(f"{path} does not hold a link key: delete it and a new one is made at start-up.")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class LinkSigner:
    """Makes and checks download links for one key, base URL and lifetime."""

    def __init__(
        self,
        key: bytes,
        *,
        base_url: str,
        ttl_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key
        self.base_url = base_url.rstrip("/")
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    def sign(self, task_id: str, index: int, expires_at: int) -> str:
        """The signature of a link to image ``index`` of ``task_id`` valid until ``expires_at``."""
        message = json.dumps([_PURPOSE, task_id, index, expires_at], separators=(",", ":"))
        return _b64(hmac.new(self._key, message.encode(), hashlib.sha256).digest())

    def verify(self, task_id: str, index: int, expires_at: int, signature: str) -> bool:
        """True when ``signature`` is this server's for these values (constant time) and not expired."""
        expected = self.sign(task_id, index, expires_at)
        valid = hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))
        return valid and self._clock() <= expires_at

    def seconds_left(self, expires_at: int) -> int:
        """Whole seconds until ``expires_at`` (0 once past): a cache may keep the file this long."""
        return max(0, expires_at - int(self._clock()))

    def url(self, task_id: str, index: int) -> str:
        """A fresh link valid for ``ttl_seconds`` from now."""
        expires_at = int(self._clock()) + self.ttl_seconds
        signature = self.sign(task_id, index, expires_at)
        return f"{self.base_url}/files/{quote(task_id, safe='')}/{index}?exp={expires_at}&sig={signature}"


def build_link_signer(settings: Settings) -> LinkSigner | None:
    """The signer for these settings, or None without ``KLING_PUBLIC_URL`` (no link could be opened)."""
    if settings.public_url is None:
        return None
    if settings.link_secret is not None:
        key = hashlib.sha256(settings.link_secret.get_secret_value().encode()).digest()
    else:
        key = load_or_create_key(settings.output_dir)
    return LinkSigner(key, base_url=settings.public_url, ttl_seconds=settings.link_ttl_seconds)


def saved_image_finder(slot: ServiceSlot) -> Callable[[str, int], Path | None]:
    """``ResultStore.saved_image`` of the service running in ``slot`` (None while none runs)."""

    def find(task_id: str, index: int) -> Path | None:
        service = slot.current
        try:
            return service.store.saved_image(task_id, index) if service is not None else None
        except OutputError:  # an index the store cannot name
            return None

    return find


def link_routes(signer: LinkSigner, find_image: Callable[[str, int], Path | None]) -> list[Route]:
    """``GET /files/{task_id}/{index}``: the saved image for a valid link, 403 or 404 otherwise.

    ``find_image(task_id, index)`` is ``ResultStore.saved_image`` of the running service (None while
    it is not running, or when the image was never saved).
    """

    async def download(request: Request) -> Response:
        task_id = str(request.path_params["task_id"])
        index = int(request.path_params["index"])
        expires, signature = request.query_params.get("exp", ""), request.query_params.get("sig", "")
        if not expires.isdigit() or not signature or len(expires) > 12:
            return JSONResponse({"error": "This link is incomplete: ask for a new one."}, status_code=403)
        if not signer.verify(task_id, index, int(expires), signature):
            return JSONResponse({"error": "This link is invalid or has expired: ask for a new one."}, 403)
        path = find_image(task_id, index)
        if path is None:
            return JSONResponse({"error": "This image is not on the server (any more)."}, status_code=404)
        max_age = signer.seconds_left(int(expires))
        return FileResponse(
            path,
            media_type=_MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream"),
            filename=path.name,
            content_disposition_type="inline",
            headers={"Cache-Control": f"private, max-age={max_age}", "X-Content-Type-Options": "nosniff"},
        )

    return [Route("/files/{task_id:path}/{index:int}", download, methods=["GET", "HEAD"])]
