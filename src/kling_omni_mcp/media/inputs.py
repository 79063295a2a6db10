"""Input images: a URL, a local path, a data URI or bare Base64 → one ``image_list[].image`` value.

This module tells the four forms apart and reads each one's bytes (URLs are passed on unread;
files only through ``paths``; Base64 sized before it is decoded). Whether those bytes are an
image the vendor takes, and re-encoding them when they can be made one, is ``conform``'s job.

``prepare_image_input`` is synchronous (file reads, Pillow); the caller runs it in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from ._imaging import human_bytes
from .conform import (
    HARD_MAX_INPUT_BYTES,
    MAX_ASPECT_RATIO,
    MAX_INPUT_BYTES,
    MIN_SIDE,
    PreparedImage,
    conform_image_bytes,
    too_big_message,
)
from .decoding import decode_slot
from .errors import InputImageError
from .paths import open_input_file
from .sniff import sniff

__all__ = [
    "HARD_MAX_INPUT_BYTES",
    "MAX_ASPECT_RATIO",
    "MAX_INPUT_BYTES",
    "MIN_SIDE",
    "PreparedImage",
    "prepare_image_input",
]

_FORMS = (
    "Give one of: an absolute file path (/home/you/Pictures/photo.png), an http(s) URL, "
    "a data URI (data:image/png;base64,...) or bare Base64 of a PNG/JPEG file."
)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
_B64_CHARS = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")
_WHITESPACE = re.compile(r"\s+")
_DATA_URI = re.compile(r"^data:([^,]*),(.*)$", re.DOTALL | re.IGNORECASE)
# A string this long with no spaces that decodes as Base64 is taken for Base64 even when the
# bytes are not an image (the refusal then names what they are); shorter ones may be words.
_MIN_BARE_B64_CHARS = 64
_MAX_URL_CHARS = 4096


def prepare_image_input(
    value: str, *, allowed_dirs: Sequence[Path], max_bytes: int = MAX_INPUT_BYTES
) -> PreparedImage:
    """Turn what the user gave (URL, path, data URI, Base64) into a payload the vendor accepts.

    Raises ``InputImageError`` with what was wrong, the measured value and what to do.
    """
    text = value.strip()
    if not text:
        raise InputImageError(f"An input image is empty. {_FORMS}")
    head = text[:8].lower()
    if head.startswith(("http://", "https://")):
        return _prepare_url(text)
    if head.startswith("data:"):
        data = _decode_data_uri(text)
        return _prepare_bytes(data, "base64", "the data URI image", max_bytes=max_bytes)
    if _SCHEME.match(text) and not _WINDOWS_DRIVE.match(text):
        scheme = text.split(":", 1)[0].lower()
        if scheme == "file":
            raise InputImageError(
                "file: URLs are not accepted: give the file's path itself, such as "
                "/home/you/Pictures/photo.png."
            )
        raise InputImageError(f"{scheme}: addresses are not accepted for images. {_FORMS}")
    if text.startswith(("/", "~", "./", "../", ".\\", "..\\", "\\\\")) or _WINDOWS_DRIVE.match(text):
        return _prepare_file(text, allowed_dirs, max_bytes)

    decoded = _try_bare_base64(text)
    if decoded is not None and sniff(decoded).is_image:
        return _prepare_bytes(decoded, "base64", "the Base64 image", max_bytes=max_bytes)
    compact_len = len(_WHITESPACE.sub("", text))
    if decoded is not None and compact_len >= _MIN_BARE_B64_CHARS and " " not in text:
        return _prepare_bytes(decoded, "base64", "the Base64 image", max_bytes=max_bytes)
    if any(sep in text for sep in ("/", "\\", ".")):
        # Looks like a relative path (cat.png, pics/cat.png): paths.py explains the rule.
        return _prepare_file(text, allowed_dirs, max_bytes)
    shown = text if len(text) <= 60 else text[:57] + "..."
    raise InputImageError(f"{shown!r} is not an image reference. {_FORMS}")


# --- the four forms ------------------------------------------------------------------------


def _prepare_url(text: str) -> PreparedImage:
    if len(text) > _MAX_URL_CHARS:
        raise InputImageError(
            f"The image URL is {len(text)} characters long; at most {_MAX_URL_CHARS} are accepted."
        )
    try:
        hostname = urlsplit(text).hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        hostname = None
    if not hostname or any(c.isspace() for c in text):
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise InputImageError(f"{shown} is not a valid http(s) URL: it needs a host name and no spaces.")
    return PreparedImage(
        payload=text,
        source_kind="url",
        source=text,
        mime_type=None,
        width=None,
        height=None,
        byte_size=0,
        converted=False,
    )


def _b64_decode(compact: str) -> bytes | None:
    if not _B64_CHARS.match(compact):
        return None
    missing = -len(compact) % 4
    if missing == 3:
        return None
    padded = compact + "=" * missing
    altchars = b"-_" if ("-" in padded or "_" in padded) else None
    try:
        return base64.b64decode(padded, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        return None


def _check_b64_length(compact: str, what: str) -> None:
    # Refuse before decoding: 4 Base64 characters carry 3 bytes.
    estimated = len(compact) * 3 // 4
    if estimated > HARD_MAX_INPUT_BYTES:
        raise InputImageError(
            f"{what} is about {human_bytes(estimated)}; inputs over {human_bytes(HARD_MAX_INPUT_BYTES)} are "
            "refused: give a smaller image or a file path."
        )


def _decode_data_uri(text: str) -> bytes:
    match = _DATA_URI.match(text)
    if match is None:
        raise InputImageError(f"The data URI has no comma before its data. {_FORMS}")
    params = [p.strip().lower() for p in match.group(1).split(";")]
    if "base64" not in params:
        raise InputImageError(
            "The data URI is not Base64-encoded (no ';base64'): use data:image/png;base64,..."
        )
    compact = _WHITESPACE.sub("", match.group(2))
    _check_b64_length(compact, "The data URI image")
    data = _b64_decode(compact)
    if data is None:
        raise InputImageError(
            "The data URI's data is not valid Base64: re-encode the image, or give its file path."
        )
    return data


def _try_bare_base64(text: str) -> bytes | None:
    compact = _WHITESPACE.sub("", text)
    if len(compact) < 16:
        return None
    if _B64_CHARS.match(compact):
        _check_b64_length(compact, "The Base64 image")
    return _b64_decode(compact)


def _prepare_file(text: str, allowed_dirs: Sequence[Path], max_bytes: int) -> PreparedImage:
    # The slot covers the read too: waiting callers must not each hold a file of up to 100 MB.
    with decode_slot(InputImageError):
        # The check and the open are one step: paths.py opens first, then verifies the opened file.
        path, fd = open_input_file(text, allowed_dirs)
        data = _read_fd(fd, path)
        return conform_image_bytes(data, "file", str(path), max_bytes=max_bytes)


def _read_fd(fd: int, path: Path) -> bytes:
    """Read an open regular file (closing it), at most ``HARD_MAX_INPUT_BYTES`` + 1 bytes."""
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > HARD_MAX_INPUT_BYTES:
            raise InputImageError(too_big_message(str(path), size))
        try:
            data = f.read(HARD_MAX_INPUT_BYTES + 1)
        except OSError as exc:
            raise InputImageError(f"Cannot read {path}: {exc.strerror or exc.__class__.__name__}.") from None
    if len(data) > HARD_MAX_INPUT_BYTES:  # it grew while we read it
        raise InputImageError(too_big_message(str(path), len(data)))
    return data


# --- bytes → payload (media.conform) ------------------------------------------------------------


def _prepare_bytes(
    data: bytes, source_kind: Literal["file", "base64"], what: str, *, max_bytes: int
) -> PreparedImage:
    # One of the process's few decode slots: however many calls arrive, only that many images
    # are in memory decoded at once (previews share the slots).
    with decode_slot(InputImageError):
        return conform_image_bytes(data, source_kind, what, max_bytes=max_bytes)
