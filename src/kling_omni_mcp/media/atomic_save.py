"""Saving a download so its final name appears only when complete, and never over another file.

A download streams into a hidden ``.<stem>.partial-<pid>-<random>`` file beside its final name,
is checked (a real image: magic number and Pillow ``verify()``), fsynced, then hard-linked into
place, which fails rather than replace an existing file; a same-named file with other content
keeps its name and the new one takes ``-2``, ``-3``, ... So "the final name exists" means "this
image was saved", and a second save does not download.

Partial files never stay behind: removed on any failure or cancellation, on shutdown and SIGTERM
(``remove_live_partials``), and, after a kill, at the next start (``sweep_orphaned_partials``:
the pid in their name says whether their writer still runs).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import httpx2

from ._imaging import open_image
from .download import CHUNK_BYTES, IMAGE_EXTENSIONS, fetch_to_file
from .errors import OutputError
from .netguard import DownloadGuard
from .sniff import SNIFF_BYTES, sniff

__all__ = [
    "STALE_PARTIAL_SECONDS",
    "SavedImage",
    "describe_saved",
    "fsync_dir",
    "remove_live_partials",
    "save_download",
    "sweep_orphaned_partials",
]

# Logged under the store's name, as before this module was split out of it.
logger = logging.getLogger("kling_omni_mcp.media.outputs")

_MAX_COLLISIONS = 20
#: Partial files being written by this process right now, removed on shutdown or SIGTERM.
_LIVE_PARTIALS: set[Path] = set()
#: A temp file this old belongs to a process that died (SIGKILL, power loss): a live download
#: ends within its timeout (60 s by default), so no running writer can own it.
STALE_PARTIAL_SECONDS = 15 * 60


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


async def save_download(
    http: httpx2.AsyncClient,
    url: str,
    folder: Path,
    stem: str,
    *,
    final_path: Callable[[str], Path],
    label: str,
    timeout: float,  # noqa: ASYNC109 - bounds the whole download, redirects included
    max_bytes: int,
    guard: DownloadGuard | None,
) -> SavedImage:
    """Download ``url`` into ``folder`` and place it at ``final_path(extension)``; ``OutputError``
    on any failure, with nothing left behind. ``folder`` must exist; ``stem`` names the partial."""
    await anyio.to_thread.run_sync(_sweep_stale_partials, folder)
    temp = folder / f".{stem}.partial-{os.getpid()}-{secrets.token_hex(6)}"
    placed = False
    _LIVE_PARTIALS.add(temp)
    try:
        try:
            with anyio.fail_after(timeout):
                digest, size = await fetch_to_file(
                    http, url, temp, label=label, max_bytes=max_bytes, guard=guard
                )
        except TimeoutError:
            raise OutputError(
                f"Downloading {label} did not finish within {timeout:g} s: try again later."
            ) from None
        checked = await anyio.to_thread.run_sync(_check_image_file, temp, label)
        final = final_path(IMAGE_EXTENSIONS[checked.kind])
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


def describe_saved(path: Path, already: bool, label: str) -> SavedImage:
    """A ``SavedImage`` for a file already on disk (checked to be a real image)."""
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


# --- partial files -----------------------------------------------------------------------------


def remove_live_partials() -> int:
    """Delete the partial files this process is writing (shutdown, SIGTERM); returns how many."""
    removed = 0
    for path in list(_LIVE_PARTIALS):
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
        _LIVE_PARTIALS.discard(path)
    return removed


def sweep_orphaned_partials(root: Path) -> int:
    """Remove partial files under ``root/*/`` of processes that no longer run; returns how many."""
    removed = 0
    with contextlib.suppress(OSError):
        for leftover in root.glob("*/.*.partial-*"):
            if _writer_is_gone(leftover) and leftover.is_file():
                with contextlib.suppress(OSError):
                    leftover.unlink()
                    removed += 1
    return removed


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


# --- checking and placing ----------------------------------------------------------------------


def _check_image_file(path: Path, label: str) -> _Checked:
    """Magic number and Pillow ``verify()`` (structure and checksums, no full decode)."""
    with open(path, "rb") as f:
        found = sniff(f.read(SNIFF_BYTES))
    what = f"The download of {label}"
    if found.kind not in IMAGE_EXTENSIONS or found.mime is None:
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
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
                fsync_dir(final.parent)
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


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable; not possible (nor needed) on every OS."""
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
