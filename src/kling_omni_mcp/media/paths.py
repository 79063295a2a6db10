"""Path confinement: the one place that decides which local files may be read or written.

Threat (CWE-22, path traversal / arbitrary file read): the model calling our tools can be
steered by text it read elsewhere (a web page, a README, a prompt injection) into passing a
path such as ``~/.ssh/id_rsa``, ``../../etc/passwd`` or a symlink that points outside the
user's pictures. Whatever we read is Base64-encoded and sent to a third party, so reading it
is exfiltration. Every input path therefore goes through ``resolve_input_path`` and every
output path through ``confined_output_path``; nothing else in the project opens user paths.

Checking a path and then opening it is a race (CWE-367): a neighbour who can write inside an
allowed folder can swap a parent folder for a symlink in between. ``open_input_file`` therefore
opens first and checks the file it got: its real path read back through the descriptor
(``/proc/self/fd`` on Linux, ``F_GETPATH`` on macOS) must be inside the allowed folders, or, where
neither exists, its device and inode must be those of the confined path resolved afterwards.
Before that, the open itself descends folder by folder with ``O_NOFOLLOW`` (``openat``), so a
folder swapped for a symlink after the check is never followed at all.

This module is a little over 300 lines on purpose: every rule about which local path may be
touched lives here, so one review covers the whole threat.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import itertools
import os
import re
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import InputImageError, OutputError

__all__ = ["confined_output_path", "open_input_file", "resolve_input_path"]

# A folder with a million entries must not stall the "did you mean" hint.
_MAX_LISTED = 2000
_MAX_SUGGESTIONS = 3
_MAX_PART_CHARS = 120
_MAC_MAXPATHLEN = 1024
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")

_FILE_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
)


def _roots(allowed_dirs: Sequence[Path]) -> list[Path]:
    # Resolve the roots too: a root given as a symlink (macOS /tmp -> /private/tmp) must match
    # resolved candidates.
    return [Path(d).expanduser().resolve(strict=False) for d in allowed_dirs]


def _visible_under(path: Path, root: Path) -> bool | None:
    """True if ``path`` is inside ``root`` with no hidden component; False if hidden; None if outside."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return None
    return not any(part.startswith(".") for part in rel.parts)


def _placement(path: Path, roots: Sequence[Path]) -> bool | None:
    """Like ``_visible_under`` over every root: True if any root allows it."""
    verdicts = [_visible_under(path, root) for root in roots]
    if any(v is True for v in verdicts):
        return True
    if any(v is False for v in verdicts):
        return False
    return None


def _kind_of(mode: int) -> str | None:
    for check, name in _FILE_KINDS:
        if check(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def _did_you_mean(candidate: Path, roots: Sequence[Path]) -> str:
    """Up to three visible names close to the first missing part, from inside the allowed folders."""
    missing, parent = candidate, candidate.parent
    # Walk up to the nearest existing folder, never above an allowed root (bounded by depth).
    for _ in range(len(candidate.parts)):
        if _placement(parent, roots) is not True:
            return ""
        if parent.is_dir():
            break
        missing, parent = parent, parent.parent
    else:
        return ""
    try:
        with os.scandir(parent) as entries:
            names = [e.name for e in itertools.islice(entries, _MAX_LISTED) if not e.name.startswith(".")]
    except OSError:
        return ""
    matches = difflib.get_close_matches(missing.name, names, n=_MAX_SUGGESTIONS, cutoff=0.6)
    if not matches:
        return ""
    return f" Did you mean: {', '.join(matches)} (in {parent})?"


def resolve_input_path(raw: str, allowed_dirs: Sequence[Path]) -> Path:
    """Return the real path of an existing regular file inside one of ``allowed_dirs``.

    ``~`` is expanded; the result must be absolute (hosts such as Claude Desktop run with the
    working folder ``/``, so a relative path would silently mean something else). Symlinks are
    resolved before the confinement check, so a link cannot point out of the allowed folders.
    Hidden names (``.ssh``, ``.aws``, ``.env``) below an allowed folder are refused. Raises
    ``InputImageError`` with what was wrong and what to do.
    """
    text = raw.strip()
    if not text or "\x00" in text:
        raise InputImageError(f"{raw!r} is not a usable file path: give the absolute path of an image file.")
    try:
        given = Path(text).expanduser()
    except RuntimeError:  # no home folder known for "~"
        raise InputImageError(f"Cannot expand '~' in {text}: give the full absolute path instead.") from None
    if not given.is_absolute():
        raise InputImageError(
            f"{text} is a relative path, and the server's working folder is not yours (often /): "
            "give an absolute path such as /home/you/Pictures/photo.png."
        )
    roots = _roots(allowed_dirs)
    shown_roots = ", ".join(str(r) for r in roots) or "(none configured)"
    # Check confinement on the lexically-and-symlink resolved path BEFORE looking at existence,
    # so the answer never reveals whether a file outside the allowed folders exists.
    try:
        candidate = given.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # symlink loop
        raise InputImageError(f"Cannot resolve {text}: {exc.__class__.__name__}; check the path.") from None
    placement = _placement(candidate, roots)
    if placement is None:
        raise InputImageError(
            f"{text} is outside the folders this server may read ({shown_roots}): move or copy the "
            "image into one of them, or add its folder to KLING_INPUT_DIRS."
        )
    if placement is False:
        raise InputImageError(
            f"{text} is in a hidden file or folder (a name starting with '.'), which this server never "
            "reads: copy the image to a visible folder."
        )
    try:
        exists = candidate.exists()
    except OSError as exc:  # e.g. a name or path too long for the file system (ENAMETOOLONG)
        raise InputImageError(
            f"Cannot use {text}: {exc.strerror or exc.__class__.__name__}. Give the path of an image file."
        ) from None
    if not exists:
        raise InputImageError(f"No file at {given}.{_did_you_mean(candidate, roots)}")
    try:
        resolved = candidate.resolve(strict=True)
        mode = resolved.stat().st_mode
    except (OSError, RuntimeError):
        raise InputImageError(f"Cannot read {given}: check that it exists and is readable.") from None
    # Resolved twice (the first time non-strictly): re-check in case a link changed in between.
    if _placement(resolved, roots) is not True:
        raise InputImageError(
            f"{text} is outside the folders this server may read ({shown_roots}) or hidden: "
            "copy the image into one of them."
        )
    kind = _kind_of(mode)
    if kind == "a folder":
        raise InputImageError(f"{given} is a folder, not a file: give the path of an image file inside it.")
    if kind is not None:
        raise InputImageError(f"{given} is {kind}, not a regular file: give the path of an image file.")
    return resolved


# O_NOFOLLOW: a symlink as the last part means it was swapped in since the path was resolved.
# O_NONBLOCK: if the file was swapped for a FIFO or a device, open() must not hang.
_OPEN_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
)


def open_input_file(raw: str, allowed_dirs: Sequence[Path]) -> tuple[Path, int]:
    """Resolve ``raw`` as ``resolve_input_path`` does, open it, and verify the file actually opened.

    Returns ``(path, fd)``: a read-only descriptor of a regular file inside ``allowed_dirs``; the
    caller reads from it and closes it. Raises ``InputImageError`` when the path is refused or
    when the opened file is not the confined one (a folder on the way was swapped meanwhile).
    """
    path = resolve_input_path(raw, allowed_dirs)
    try:
        fd = _open_without_links(path)
    except _LinkOnTheWay:
        raise _swapped(path) from None
    except PermissionError:
        raise InputImageError(
            f"Cannot read {path}: permission denied. Check the file's permissions."
        ) from None
    except OSError as exc:
        raise InputImageError(f"Cannot open {path}: {exc.strerror or exc.__class__.__name__}.") from None
    try:
        _verify_opened(fd, path, _roots(allowed_dirs))
    except BaseException:
        os.close(fd)
        raise
    return path, fd


class _LinkOnTheWay(Exception):
    """A folder of an already resolved path is now a symlink (or no folder): it was swapped."""


def _open_without_links(path: Path) -> int:
    """Open the resolved ``path`` folder by folder, following no symlink anywhere on the way.

    ``path`` was resolved, so any symlink met now was put there after the check. Descending with
    ``openat`` (``dir_fd``) and ``O_NOFOLLOW`` closes the window between check and open that a
    plain ``open(path)`` leaves in every folder of the path, not only in the last component.
    Where ``dir_fd`` is not supported (Windows), the plain open is checked afterwards instead.
    """
    if os.open not in os.supports_dir_fd or not hasattr(os, "O_DIRECTORY"):
        return os.open(path, _OPEN_FLAGS)
    folder_flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    anchor, *folders, name = path.parts
    fd = os.open(anchor, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for folder in folders:
            try:
                inner = os.open(folder, folder_flags, dir_fd=fd)
            except (NotADirectoryError, FileNotFoundError) as exc:
                raise _LinkOnTheWay from exc
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise _LinkOnTheWay from exc
                raise
            os.close(fd)
            fd = inner
        try:
            return os.open(name, _OPEN_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _LinkOnTheWay from exc
            raise
    finally:
        os.close(fd)


def _swapped(path: Path) -> InputImageError:
    return InputImageError(
        f"{path} changed while it was being opened (a folder on the way was replaced): it was not "
        "read. Give the path again once the folder stays put."
    )


def _path_of_fd(fd: int) -> Path | None:
    """The real path of an open descriptor as the kernel knows it, or None where it cannot say."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            # An unlinked file reads back as "/x/y (deleted)"; a socket or pipe as "pipe:[123]".
            return Path(target) if target.startswith("/") and not target.endswith(" (deleted)") else None
    if sys.platform == "darwin":
        import fcntl

        with contextlib.suppress(OSError):
            raw = fcntl.fcntl(fd, fcntl.F_GETPATH, b"\0" * _MAC_MAXPATHLEN)
            return Path(os.fsdecode(raw.rstrip(b"\0")))
    return None


def _verify_opened(fd: int, path: Path, roots: Sequence[Path]) -> None:
    """Refuse unless ``fd`` is a regular file inside ``roots`` (not hidden) and is ``path``'s file."""
    swapped = _swapped(path)
    info = os.fstat(fd)
    real = _path_of_fd(fd)
    if real is not None:
        if _placement(real, roots) is not True:
            raise swapped
    else:
        # No way to ask the kernel: the file now at the confined path (re-resolved and re-checked,
        # symlinks not followed at the end) must be the very file we hold.
        try:
            again = path.resolve(strict=True)
            now = os.stat(again, follow_symlinks=False)
        except (OSError, RuntimeError):
            raise swapped from None
        if _placement(again, roots) is not True or (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino):
            raise swapped
    if not stat.S_ISREG(info.st_mode):
        raise InputImageError(f"{path} is not a regular file: give the path of an image file.")


def _safe_part(part: str) -> str:
    cleaned = _UNSAFE_CHARS.sub("_", part).lstrip(".")[:_MAX_PART_CHARS]
    if not cleaned.strip("_-"):
        raise OutputError(f"{part!r} cannot be used as a file or folder name: it has no usable characters.")
    return cleaned


def confined_output_path(root: Path, *parts: str, root_resolved: bool = False) -> Path:
    """``root / parts...`` with each part reduced to ``[A-Za-z0-9._-]`` and no leading dot.

    Separators, ``..`` and hidden names cannot survive sanitising; the result is still checked
    to lie inside ``root`` (resolved), as a second line of defence. ``root_resolved``: the caller
    resolved ``root`` already (the result store does, once: every answer asks for paths).
    """
    base = Path(root) if root_resolved else Path(root).expanduser().resolve(strict=False)
    path = base.joinpath(*(_safe_part(p) for p in parts))
    try:
        path.resolve(strict=False).relative_to(base)
    except ValueError:
        raise OutputError(f"The output path {path} would leave the output folder {base}.") from None
    return path
