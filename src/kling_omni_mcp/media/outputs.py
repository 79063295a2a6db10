"""Results on disk: downloaded images and a JSON sidecar per task, never half-written.

Layout (one folder per task; names come from the task id and the image index only, never from
the prompt or the model, so they are safe, short and predictable)::

    <root>/<task_id>/<task_id>_<index>.png     the images (.jpg/.webp when that is what came)
    <root>/<task_id>/<task_id>.json            the sidecar (prompt, model, cost, ...)

A task id that is not plain (``[a-z0-9_-]``, at most 100 characters: the vendor's are digits)
gets a folder ``<readable part>.<hash of the exact id>`` instead, so two ids that differ only in
characters a file system cannot hold (``a/b`` and ``a?b``, case on macOS) never share a folder.

Result links come from the vendor: downloads connect only to public addresses (``netguard``),
are capped in bytes and time, and partial files are removed when the process stops (or, after a
kill, at the next start: their names carry the pid of the process writing them).

Every file appears under its final name only when complete: downloads stream into a hidden
``.<task_id>_<index>.partial-<random>`` file in the same folder, are checked (status, length,
real image), fsynced, then linked into place without ever replacing a different existing file.
So "the final name exists" means "this image was saved", and a second save does not download.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx2

from ._imaging import open_image
from .errors import OutputError
from .netguard import DownloadGuard
from .paths import confined_output_path
from .sniff import SNIFF_BYTES, sniff

__all__ = ["MAX_DOWNLOAD_BYTES", "ResultStore", "SavedImage", "remove_live_partials", "task_folder_name"]

logger = logging.getLogger(__name__)

#: A 4k PNG is ~25 MB; nothing the API makes comes near this.
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
_MAX_REDIRECTS = 5
_MAX_COLLISIONS = 20
_CHUNK = 256 * 1024
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
#: Image kinds a result may be saved as, with their extension.
_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp", "gif": "gif", "bmp": "bmp", "tiff": "tif"}
_PLAIN_TASK_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
#: Partial files being written by this process right now, removed on shutdown or SIGTERM.
_LIVE_PARTIALS: set[Path] = set()
_SAVED_NAME = re.compile(r"^(?P<tid>.+)_(?P<index>\d+)(?:-(?P<dup>\d+))?\.(?P<ext>png|jpg|webp|gif|bmp|tif)$")


@dataclass(frozen=True, slots=True)
class SavedImage:
    """A result image on disk."""

    path: Path
    mime_type: str
    width: int
    height: int
    byte_size: int
    sha256: str
    already_saved: bool


@dataclass(frozen=True, slots=True)
class _Checked:
    kind: str
    mime: str
    width: int
    height: int


def task_folder_name(task_id: str) -> str:
    """The folder name of ``task_id``: the id itself when plain, else readable part + hash."""
    if _PLAIN_TASK_ID.match(task_id):
        return task_id
    readable = re.sub(r"[^a-z0-9_-]+", "_", task_id.lower()).strip("_-")[:40] or "task"
    # "." never appears in a plain id, so a hashed name can never equal a plain one.
    return f"{readable}.{hashlib.sha256(task_id.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


def remove_live_partials() -> int:
    """Delete the partial files this process is writing (shutdown, SIGTERM); returns how many."""
    removed = 0
    for path in list(_LIVE_PARTIALS):
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
        _LIVE_PARTIALS.discard(path)
    return removed


class ResultStore:
    """Saves result images and sidecars under ``root`` (created on demand).

    Downloads refuse non-public addresses unless ``allow_private`` (simulate mode, tests and
    self-hosted mirrors); ``guard`` replaces the default address check (tests).
    """

    def __init__(
        self, root: Path, *, allow_private: bool = False, guard: DownloadGuard | None = None
    ) -> None:
        self.root = Path(root).expanduser()
        self._guard = None if allow_private else (guard or DownloadGuard())

    # --- names -------------------------------------------------------------------------------

    def task_dir(self, task_id: str) -> Path:
        """``<root>/<task folder name>`` (see ``task_folder_name``); not created here."""
        return confined_output_path(self.root, task_folder_name(task_id))

    def image_path(self, task_id: str, index: int, ext: str = "png") -> Path:
        """``<root>/<task_id>/<task_id>_<index>.<ext>``: built from the task id and index only."""
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 10_000:
            raise OutputError(
                f"Image index {index!r} is not valid: it must be a whole number from 0 to 9999."
            )
        folder = self.task_dir(task_id)
        return confined_output_path(folder, f"{folder.name}_{index}.{ext.lstrip('.')}")

    def sidecar_path(self, task_id: str) -> Path:
        """``<root>/<task_id>/<task_id>.json``."""
        folder = self.task_dir(task_id)
        return confined_output_path(folder, f"{folder.name}.json")

    def _ensure_dir(self, folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"Cannot create the output folder {folder}: {exc.strerror or exc.__class__.__name__}. "
                "Set KLING_OUTPUT_DIR to a folder this server can write to."
            ) from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(
                f"The output folder {folder} is not writable: fix its permissions or set KLING_OUTPUT_DIR "
                "to another folder."
            )

    # --- images ------------------------------------------------------------------------------

    def find_saved_images(self, task_id: str) -> list[Path]:
        """Saved images of a task, sorted by index (then by ``-2``, ``-3`` variants)."""
        folder = self.task_dir(task_id)
        found: list[tuple[int, int, str, Path]] = []
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return []
        for entry in entries:
            match = _SAVED_NAME.match(entry.name)
            if match is None or match["tid"] != folder.name or not entry.is_file(follow_symlinks=False):
                continue
            found.append((int(match["index"]), int(match["dup"] or 1), entry.name, Path(entry.path)))
        return [item[3] for item in sorted(found)]

    def saved_image(self, task_id: str, index: int) -> Path | None:
        """The saved file of image ``index`` of ``task_id``, if there is one."""
        for ext in dict.fromkeys(_EXTENSIONS.values()):
            path = self.image_path(task_id, index, ext)
            if path.is_file() and not path.is_symlink():
                return path
        return None

    async def save_image(
        self,
        http: httpx2.AsyncClient,
        url: str,
        task_id: str,
        index: int,
        *,
        timeout: float = 60.0,  # noqa: ASYNC109 - bounds the whole download, redirects included
        max_bytes: int = MAX_DOWNLOAD_BYTES,
    ) -> SavedImage:
        """Download result ``index`` of ``task_id`` to disk, once; raise ``OutputError`` on any failure.

        An existing final file counts as saved (no download). Otherwise the body is streamed to a
        temp file, checked (2xx, full length, at most ``max_bytes``, a real image) and moved into
        place; on any failure nothing is left behind. The whole download, redirects included, must
        finish within ``timeout`` seconds.
        """
        label = f"image {index} of task {task_id}"
        existing = await anyio.to_thread.run_sync(self.saved_image, task_id, index)
        if existing is not None:
            return await anyio.to_thread.run_sync(_describe_file, existing, True, label)

        folder = self.task_dir(task_id)
        await anyio.to_thread.run_sync(self._ensure_dir, folder)
        await anyio.to_thread.run_sync(_sweep_stale_partials, folder)
        temp = folder / f".{folder.name}_{index}.partial-{os.getpid()}-{secrets.token_hex(6)}"
        placed = False
        _LIVE_PARTIALS.add(temp)
        try:
            try:
                with anyio.fail_after(timeout):
                    digest, size = await _download(
                        http, url, temp, label=label, max_bytes=max_bytes, guard=self._guard
                    )
            except TimeoutError:
                raise OutputError(
                    f"Downloading {label} did not finish within {timeout:g} s: try again later."
                ) from None
            checked = await anyio.to_thread.run_sync(_check_image_file, temp, label)
            final = self.image_path(task_id, index, _EXTENSIONS[checked.kind])
            path, already = await anyio.to_thread.run_sync(_place, temp, final, digest)
            placed = True
            return SavedImage(
                path=path,
                mime_type=checked.mime,
                width=checked.width,
                height=checked.height,
                byte_size=size,
                sha256=digest,
                already_saved=already,
            )
        finally:
            _LIVE_PARTIALS.discard(temp)
            if not placed:
                # Also on cancellation: a partial file must never stay behind.
                with contextlib.suppress(OSError):
                    temp.unlink(missing_ok=True)

    def sweep_orphaned_partials(self) -> int:
        """Remove partial files of processes that no longer run (killed mid-download); at start-up."""
        removed = 0
        with contextlib.suppress(OSError):
            for leftover in self.root.glob("*/.*.partial-*"):
                if _writer_is_gone(leftover) and leftover.is_file():
                    with contextlib.suppress(OSError):
                        leftover.unlink()
                        removed += 1
        return removed

    # --- sidecars ----------------------------------------------------------------------------

    def write_sidecar(self, task_id: str, data: Mapping[str, Any]) -> Path:
        """Write ``<task_id>.json`` atomically (temp file, fsync, rename); merging is the caller's job."""
        path = self.sidecar_path(task_id)
        self._ensure_dir(path.parent)
        text = json.dumps(dict(data), indent=2, sort_keys=True, ensure_ascii=False, default=_json_default)
        temp = path.parent / f".{path.name}.partial-{secrets.token_hex(6)}"
        try:
            with open(temp, "x", encoding="utf-8") as f:
                f.write(text + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path)
        except OSError as exc:
            raise OutputError(
                f"Cannot write {path}: {exc.strerror or exc.__class__.__name__}. "
                "Check free space and permissions."
            ) from None
        finally:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
        _fsync_dir(path.parent)
        return path

    def read_sidecar(self, task_id: str) -> dict[str, Any] | None:
        """The sidecar's content; None if there is none, or it is unreadable (then a warning is logged)."""
        path = self.sidecar_path(task_id)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            logger.warning("Cannot read the sidecar %s (%s); ignoring it", path, exc.__class__.__name__)
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            logger.warning("The sidecar %s is not valid JSON (line %d); ignoring it", path, exc.lineno)
            return None
        if not isinstance(data, dict):
            logger.warning("The sidecar %s does not hold a JSON object; ignoring it", path)
            return None
        return data


# --- helpers -----------------------------------------------------------------------------------


#: A temp file this old belongs to a process that died (SIGKILL, power loss): a live download
#: ends within its timeout (60 s by default), so no running writer can own it.
STALE_PARTIAL_SECONDS = 15 * 60


def _writer_is_gone(partial: Path) -> bool:
    """True when the pid in a partial file's name is not a running process (or it has none)."""
    match = re.search(r"\.partial-(\d+)-[0-9a-f]+$", partial.name)
    if match is None:
        return partial.stat().st_mtime < time.time() - STALE_PARTIAL_SECONDS
    pid = int(match[1])
    if pid == os.getpid():
        return partial not in _LIVE_PARTIALS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False  # alive (another user's process) or unknowable: leave it
    return False


def _sweep_stale_partials(folder: Path) -> None:
    """Remove temp files left in ``folder`` by a killed process, so none accumulate."""
    cutoff = time.time() - STALE_PARTIAL_SECONDS
    with contextlib.suppress(OSError):
        for leftover in folder.glob(".*.partial-*"):
            with contextlib.suppress(OSError):
                if leftover.is_file() and leftover.stat().st_mtime < cutoff:
                    leftover.unlink()


def _json_default(value: object) -> str:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _shown_url(url: httpx2.URL | str) -> str:
    # Result URLs are signed: show where they point, not their tokens.
    shown = str(url).split("?", 1)[0].split("#", 1)[0]
    return shown if len(shown) <= 200 else shown[:197] + "..."


async def _download(
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
        async for chunk in response.aiter_bytes(_CHUNK):
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
    if not found.is_image or found.kind not in _EXTENSIONS:
        content_type = response.headers.get("content-type", "").split(";")[0].strip() or found.label
        raise OutputError(
            f"The download of {label} was not an image ({content_type}) from {where}: the link may have "
            "expired; query the task again for fresh links."
        )
    return digest.hexdigest(), size


def _check_image_file(path: Path, label: str) -> _Checked:
    """Magic number and Pillow ``verify()`` (structure and checksums, no full decode)."""
    with open(path, "rb") as f:
        found = sniff(f.read(SNIFF_BYTES))
    what = f"The download of {label}"
    if found.kind not in _EXTENSIONS or found.mime is None:
        raise OutputError(f"{what} was not an image ({found.label}).")
    img = open_image(path, what=what, error=OutputError)
    with img:
        width, height = img.size
        try:
            img.verify()
        except Exception:  # any failure on untrusted bytes means "damaged"
            raise OutputError(f"{what} is a damaged {found.label} file: try again.") from None
    return _Checked(found.kind, found.mime, width, height)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _describe_file(path: Path, already: bool, label: str) -> SavedImage:
    found_kind = _check_image_file(path, label)
    return SavedImage(
        path=path,
        mime_type=found_kind.mime,
        width=found_kind.width,
        height=found_kind.height,
        byte_size=path.stat().st_size,
        sha256=_sha256_file(path),
        already_saved=already,
    )


def _link_no_clobber(temp: Path, final: Path) -> bool:
    """Put ``temp`` at ``final`` unless ``final`` exists; True if placed."""
    try:
        # A hard link is atomic and fails if the name exists: no window to replace another file.
        os.link(temp, final)
    except FileExistsError:
        return False
    except OSError:
        # Filesystems without hard links (FAT, some network shares): check, then replace.
        if final.exists() or final.is_symlink():
            return False
        os.replace(temp, final)
        return True
    temp.unlink()
    return True


def _place(temp: Path, final: Path, digest: str) -> tuple[Path, bool]:
    """Move ``temp`` into place; never overwrite a different file. Returns (path, already_saved)."""
    stem, suffix = final.stem, final.suffix
    for n in range(1, _MAX_COLLISIONS + 1):
        candidate = final if n == 1 else final.with_name(f"{stem}-{n}{suffix}")
        try:
            if _link_no_clobber(temp, candidate):
                _fsync_dir(final.parent)
                return candidate, False
            if candidate.is_file() and not candidate.is_symlink() and _sha256_file(candidate) == digest:
                temp.unlink()
                return candidate, True
        except OSError as exc:
            raise OutputError(
                f"Cannot save {candidate}: {exc.strerror or exc.__class__.__name__}. "
                "Check free space and permissions."
            ) from None
        logger.warning("%s exists with different content; keeping it and trying another name", candidate)
    raise OutputError(
        f"{final} and {_MAX_COLLISIONS - 1} variants already exist with different content: "
        "clean up the folder."
    )


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible (nor needed) on every OS.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
