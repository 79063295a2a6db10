"""Fetching one result link into a file: guarded, bounded in bytes and in redirects.

Result links come from the vendor: every hop, redirects included, connects only to public
addresses (``netguard``) and only over http(s); the body is streamed into the given file,
counted against a byte cap, hashed on the way and fsynced, and must look like an image. Signed
link tokens never appear in errors. Where that file lives and how it reaches its final name is
``atomic_save``'s job; the time bound is the caller's (one ``fail_after`` around the whole).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx2

from .errors import OutputError
from .netguard import DownloadGuard
from .sniff import SNIFF_BYTES, sniff

__all__ = ["CHUNK_BYTES", "IMAGE_EXTENSIONS", "MAX_DOWNLOAD_BYTES", "fetch_to_file"]

#: A 4k PNG is ~25 MB; nothing the API makes comes near this.
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
#: Image kinds a result may be saved as, with their extension.
IMAGE_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp", "gif": "gif", "bmp": "bmp", "tiff": "tif"}
CHUNK_BYTES = 256 * 1024
_MAX_REDIRECTS = 5
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


def _shown_url(url: httpx2.URL | str) -> str:
    # Result URLs are signed: show where they point, not their tokens.
    shown = str(url).split("?", 1)[0].split("#", 1)[0]
    return shown if len(shown) <= 200 else shown[:197] + "..."


async def fetch_to_file(
    http: httpx2.AsyncClient,
    url: str,
    temp: Path,
    *,
    label: str,
    max_bytes: int,
    guard: DownloadGuard | None,
) -> tuple[str, int]:
    """Stream ``url`` into ``temp`` (redirects followed by hand, bounded); return (sha256, size).

    With a ``guard``, every hop is resolved, checked and connected to by its checked address.
    """
    try:
        current = httpx2.URL(url) if url.lower().startswith(("http://", "https://")) else None
    except httpx2.InvalidURL:
        current = None
    if current is None:
        raise OutputError(
            f"The link for {label} is not an http(s) URL ({_shown_url(url)}): cannot download it."
        )
    for _ in range(_MAX_REDIRECTS + 1):
        try:
            target_url: httpx2.URL = current
            headers: dict[str, str] = {}
            extensions: dict[str, Any] = {}
            if guard is not None:
                target_url, headers, extensions = await guard.pin(current, label)
            async with http.stream(
                "GET", target_url, headers=headers, extensions=extensions, follow_redirects=False
            ) as response:
                if response.status_code in _REDIRECT_CODES and "location" in response.headers:
                    try:
                        target = current.join(response.headers["location"])
                    except httpx2.InvalidURL:
                        raise OutputError(
                            f"The download of {label} redirected to an invalid address: cannot follow it."
                        ) from None
                    if target.scheme not in ("http", "https"):
                        raise OutputError(
                            f"The download of {label} redirected to a {target.scheme}: address; only "
                            "http(s) is followed."
                        )
                    current = target
                    continue
                return await _receive(
                    response, temp, label=label, max_bytes=max_bytes, where=_shown_url(current)
                )
        except httpx2.TimeoutException:
            raise OutputError(
                f"Downloading {label} timed out ({_shown_url(current)}): try again later."
            ) from None
        except httpx2.RemoteProtocolError:
            raise OutputError(
                f"The download of {label} was cut off by the server ({_shown_url(current)}): try again."
            ) from None
        except httpx2.HTTPError as exc:
            raise OutputError(
                f"Downloading {label} failed ({exc.__class__.__name__}, {_shown_url(current)}): check the "
                "network and try again."
            ) from None
    raise OutputError(f"The download of {label} was redirected more than {_MAX_REDIRECTS} times: giving up.")


async def _receive(
    response: httpx2.Response, temp: Path, *, label: str, max_bytes: int, where: str
) -> tuple[str, int]:
    if not 200 <= response.status_code < 300:
        hint = (
            " The link may have expired (result links last 30 days): query the task again for fresh links."
            if response.status_code in (403, 404, 410)
            else " Try again later."
        )
        raise OutputError(f"Downloading {label} failed: HTTP {response.status_code} from {where}.{hint}")
    declared_text = response.headers.get("content-length")
    declared = int(declared_text) if declared_text and declared_text.strip().isdigit() else None
    if declared is not None and declared > max_bytes:
        raise OutputError(f"The download of {label} is {declared} bytes, over the {max_bytes}-byte limit.")
    digest = hashlib.sha256()
    size = 0
    head = b""
    async with await anyio.open_file(temp, "xb") as f:
        async for chunk in response.aiter_bytes(CHUNK_BYTES):
            size += len(chunk)
            if size > max_bytes:
                raise OutputError(f"The download of {label} exceeded the {max_bytes}-byte limit: stopped.")
            if len(head) < SNIFF_BYTES:
                head += chunk[: SNIFF_BYTES - len(head)]
            digest.update(chunk)
            await f.write(chunk)
        await f.flush()
        await anyio.to_thread.run_sync(os.fsync, f.wrapped.fileno())
    # Compare on the wire bytes: with Content-Encoding the decoded size differs from the header.
    if declared is not None and response.num_bytes_downloaded != declared:
        raise OutputError(
            f"The download of {label} was cut off: got {response.num_bytes_downloaded} of {declared} bytes. "
            "Try again."
        )
    found = sniff(head)
    if not found.is_image or found.kind not in IMAGE_EXTENSIONS:
        content_type = response.headers.get("content-type", "").split(";")[0].strip() or found.label
        raise OutputError(
            f"The download of {label} was not an image ({content_type}) from {where}: the link may have "
            "expired; query the task again for fresh links."
        )
    return digest.hexdigest(), size
