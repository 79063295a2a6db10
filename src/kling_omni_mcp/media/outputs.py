"""Results on disk: where each task's images and JSON sidecar live, and reading them back.

Layout (one folder per task; names come from the task id and the image index only, never from
the prompt or the model, so they are safe, short and predictable)::

    <root>/<task_id>/<task_id>_<index>.png     the images (.jpg/.webp when that is what came)
    <root>/<task_id>/<task_id>.json            the sidecar (prompt, model, cost, ...)

A task id that is not plain (``[a-z0-9_-]``, at most 100 characters: the vendor's are digits)
gets a folder ``<readable part>.<hash of the exact id>`` instead, so two ids that differ only in
characters a file system cannot hold (``a/b`` and ``a?b``, case on macOS) never share a folder.

Nothing is ever half-written: the download itself (public addresses only, capped in bytes and
time) is ``download``'s job, and putting it under its final name only when complete, never over
another file, with partial files cleaned up, is ``atomic_save``'s. Sidecars are written the same
way (temp file, fsync, rename).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx2

from .atomic_save import (
    STALE_PARTIAL_SECONDS,
    SavedImage,
    describe_saved,
    fsync_dir,
    remove_live_partials,
    save_download,
    sweep_orphaned_partials,
)
from .download import IMAGE_EXTENSIONS, MAX_DOWNLOAD_BYTES
from .errors import OutputError
from .netguard import DownloadGuard
from .paths import confined_output_path

__all__ = [
    "MAX_DOWNLOAD_BYTES",
    "STALE_PARTIAL_SECONDS",
    "ResultStore",
    "SavedImage",
    "remove_live_partials",
    "task_folder_name",
]

logger = logging.getLogger(__name__)

_PLAIN_TASK_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
_SAVED_NAME = re.compile(r"^(?P<tid>.+)_(?P<index>\d+)(?:-(?P<dup>\d+))?\.(?P<ext>png|jpg|webp|gif|bmp|tif)$")


def task_folder_name(task_id: str) -> str:
    """The folder name of ``task_id``: the id itself when plain, else readable part + hash."""
    if _PLAIN_TASK_ID.match(task_id):
        return task_id
    readable = re.sub(r"[^a-z0-9_-]+", "_", task_id.lower()).strip("_-")[:40] or "task"
    # "." never appears in a plain id, so a hashed name can never equal a plain one.
    return f"{readable}.{hashlib.sha256(task_id.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


class ResultStore:
    """Saves result images and sidecars under ``root`` (created on demand).

    Downloads refuse non-public addresses unless ``allow_private`` (simulate mode, tests and
    self-hosted mirrors); ``guard`` replaces the default address check (tests).
    """

    def __init__(
        self, root: Path, *, allow_private: bool = False, guard: DownloadGuard | None = None
    ) -> None:
        self.root = Path(root).expanduser()
        self._resolved_root: Path | None = None
        self._guard = None if allow_private else (guard or DownloadGuard())

    # --- names -------------------------------------------------------------------------------

    def task_dir(self, task_id: str) -> Path:
        """``<root>/<task folder name>`` (see ``task_folder_name``); not created here."""
        return confined_output_path(self._base(), task_folder_name(task_id), root_resolved=True)

    def _base(self) -> Path:
        """The root, resolved once (the operator's folder; each path under it is still checked)."""
        if self._resolved_root is None:
            self._resolved_root = self.root.resolve(strict=False)
        return self._resolved_root

    def image_path(self, task_id: str, index: int, ext: str = "png") -> Path:
        """``<root>/<task_id>/<task_id>_<index>.<ext>``: built from the task id and index only."""
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 10_000:
            raise OutputError(
                f"Image index {index!r} is not valid: it must be a whole number from 0 to 9999."
            )
        return self._task_file(task_id, f"_{index}.{ext.lstrip('.')}")

    def sidecar_path(self, task_id: str) -> Path:
        """``<root>/<task_id>/<task_id>.json``."""
        return self._task_file(task_id, ".json")

    def _task_file(self, task_id: str, suffix: str) -> Path:
        """``<root>/<folder>/<folder><suffix>``, confined in one resolve (every answer asks)."""
        folder = task_folder_name(task_id)  # already a safe file name: see task_folder_name
        return confined_output_path(self._base(), folder, f"{folder}{suffix}", root_resolved=True)

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
        for ext in dict.fromkeys(IMAGE_EXTENSIONS.values()):
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
            return await anyio.to_thread.run_sync(describe_saved, existing, True, label)

        folder = self.task_dir(task_id)
        await anyio.to_thread.run_sync(self._ensure_dir, folder)
        return await save_download(
            http,
            url,
            folder,
            f"{folder.name}_{index}",
            final_path=lambda ext: self.image_path(task_id, index, ext),
            label=label,
            timeout=timeout,
            max_bytes=max_bytes,
            guard=self._guard,
        )

    def sweep_orphaned_partials(self) -> int:
        """Remove partial files of processes that no longer run (killed mid-download); at start-up."""
        return sweep_orphaned_partials(self.root)

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
        fsync_dir(path.parent)
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


def _json_default(value: object) -> str:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
