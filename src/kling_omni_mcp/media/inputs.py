"""Input images: a URL, a local path, a data URI or bare Base64 → one ``image_list[].image`` value.

The vendor accepts only JPEG/PNG, at most 10 MB, each side at least 300 px, aspect ratio between
1:2.5 and 2.5:1 (``shared/reference/kling-api.md``). We check all of that locally, before any
credit is spent, and fix only what can be fixed without changing the picture's content:
other formats are converted and oversized files re-encoded or scaled down (each said in
``note``). Too-small or too-elongated images are refused, never upscaled or cropped silently.

``prepare_image_input`` is synchronous (file reads, Pillow); the caller runs it in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from kling_omni_mcp.kling.capabilities import MAX_IMAGE_BYTES

from ._imaging import flatten_to_rgb, has_alpha, human_bytes, open_image
from .decoding import MEMORY_BUDGET_BYTES, decode_slot, load_bounded, verify_decodes
from .errors import InputImageError
from .paths import open_input_file
from .sniff import Sniffed, sniff

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "HARD_MAX_INPUT_BYTES",
    "MAX_ASPECT_RATIO",
    "MAX_INPUT_BYTES",
    "MIN_SIDE",
    "PreparedImage",
    "prepare_image_input",
]

#: The vendor's per-image limit (written once, in the capability map).
MAX_INPUT_BYTES = MAX_IMAGE_BYTES
#: Larger files are refused outright rather than read into memory and re-encoded.
HARD_MAX_INPUT_BYTES = 100 * 1024 * 1024
MIN_SIDE = 300
MAX_ASPECT_RATIO = 2.5

_FORMS = (
    "Give one of: an absolute file path (/home/you/Pictures/photo.png), an http(s) URL, "
    "a data URI (data:image/png;base64,...) or bare Base64 of a PNG/JPEG file."
)
_ACCEPTED = "PNG or JPEG (WEBP, GIF, BMP and TIFF are converted automatically)"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
_B64_CHARS = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")
_WHITESPACE = re.compile(r"\s+")
_DATA_URI = re.compile(r"^data:([^,]*),(.*)$", re.DOTALL | re.IGNORECASE)
# A string this long with no spaces that decodes as Base64 is taken for Base64 even when the
# bytes are not an image (the refusal then names what they are); shorter ones may be words.
_MIN_BARE_B64_CHARS = 64
# Re-encoding plan for files over the limit: quality steps at full size, then shrink steps.
_FULL_SIZE_QUALITIES = (90, 85, 75, 65)
_SHRUNK_QUALITY = 80
_SHRINK_FACTOR = 0.8
_MAX_SHRINK_STEPS = 12
_CONVERT_JPEG_QUALITY = 90
_MAX_URL_CHARS = 4096
# Memory per working pixel while re-encoding: the RGB image, its flattened and resized copies
# (4 bytes a pixel each) and the encoded output with its copy. Sets how large an image is
# decoded for re-encoding; larger ones are decoded at a reduced scale.
_REENCODE_BYTES_PER_PIXEL = 24


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """One input, ready for ``image_list[].image``; everything but ``payload`` is for people."""

    payload: str
    source_kind: Literal["url", "file", "base64"]
    source: str
    mime_type: str | None
    width: int | None
    height: int | None
    byte_size: int  # 0 for URLs: they are not fetched
    converted: bool
    note: str | None = None


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
        return _prepare_bytes_in_slot(data, "file", str(path), max_bytes=max_bytes)


def _read_fd(fd: int, path: Path) -> bytes:
    """Read an open regular file (closing it), at most ``HARD_MAX_INPUT_BYTES`` + 1 bytes."""
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > HARD_MAX_INPUT_BYTES:
            raise InputImageError(_too_big_message(str(path), size))
        try:
            data = f.read(HARD_MAX_INPUT_BYTES + 1)
        except OSError as exc:
            raise InputImageError(f"Cannot read {path}: {exc.strerror or exc.__class__.__name__}.") from None
    if len(data) > HARD_MAX_INPUT_BYTES:  # it grew while we read it
        raise InputImageError(_too_big_message(str(path), len(data)))
    return data


def _too_big_message(what: str, size: int) -> str:
    return (
        f"{what} is {human_bytes(size)}; files over {human_bytes(HARD_MAX_INPUT_BYTES)} are refused (the "
        f"service takes at most {human_bytes(MAX_INPUT_BYTES)}): resize or compress it first."
    )


# --- bytes → payload -------------------------------------------------------------------------


def _prepare_bytes(
    data: bytes, source_kind: Literal["file", "base64"], what: str, *, max_bytes: int
) -> PreparedImage:
    # One of the process's few decode slots: however many calls arrive, only that many images
    # are in memory decoded at once (previews share the slots).
    with decode_slot(InputImageError):
        return _prepare_bytes_in_slot(data, source_kind, what, max_bytes=max_bytes)


def _prepare_bytes_in_slot(
    data: bytes, source_kind: Literal["file", "base64"], what: str, *, max_bytes: int
) -> PreparedImage:
    source = what if source_kind == "file" else f"inline base64 ({len(data)} bytes)"
    if not data:
        raise InputImageError(f"{what} is empty (0 bytes): give a PNG or JPEG image.")
    if len(data) > HARD_MAX_INPUT_BYTES:
        raise InputImageError(_too_big_message(what, len(data)))
    found = sniff(data)
    if not found.is_image:
        if found.kind == "svg":
            raise InputImageError(
                f"{what} is an SVG vector image, which the service cannot read: export it as PNG."
            )
        raise InputImageError(
            f"{what} is not an image (it looks like {found.label}): give a {_ACCEPTED} image."
        )
    if found.kind in ("heif", "avif") and not _pillow_reads(data):
        raise InputImageError(
            f"{what} is {found.label}, which this server cannot read (no decoder installed): "
            "export it as JPEG."
        )
    passthrough = found.kind in ("png", "jpeg") and len(data) <= max_bytes
    # The file's bytes, and for a pass-through their Base64 payload, are held throughout.
    held = len(data) + (len(data) * 4 // 3 if passthrough else 0)
    img = open_image(io.BytesIO(data), what=what, error=InputImageError)
    with img:
        width, height = img.size
        _check_dimensions(what, width, height)
        try:
            if passthrough:
                verify_decodes(img, what=what, error=InputImageError, held_bytes=held)
                work = img
            else:
                max_pixels = max(
                    MIN_SIDE * MIN_SIDE, (MEMORY_BUDGET_BYTES - held) // _REENCODE_BYTES_PER_PIXEL
                )
                work = load_bounded(
                    img,
                    what=what,
                    error=InputImageError,
                    held_bytes=held,
                    max_pixels=max_pixels,
                    min_side=MIN_SIDE,
                )
        except InputImageError:
            raise
        except Exception:  # any failure decoding untrusted bytes means "damaged"
            raise InputImageError(
                f"{what} is not a valid image: its {found.label} data is damaged or cut off. "
                "Use another copy."
            ) from None
        if passthrough:
            return PreparedImage(
                payload=base64.b64encode(data).decode("ascii"),
                source_kind=source_kind,
                source=source,
                mime_type=found.mime,
                width=width,
                height=height,
                byte_size=len(data),
                converted=False,
            )
        with work:
            encoded, mime, size, note = _reencode(work, found, len(data), max_bytes, what)
        if work.size != (width, height):
            note += f" (decoded at {work.width}x{work.height} from {width}x{height} to bound memory)"
    return PreparedImage(
        payload=base64.b64encode(encoded).decode("ascii"),
        source_kind=source_kind,
        source=source,
        mime_type=mime,
        width=size[0],
        height=size[1],
        byte_size=len(encoded),
        converted=True,
        note=note,
    )


def _pillow_reads(data: bytes) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)):
            return True
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return False


def _check_dimensions(what: str, width: int, height: int) -> None:
    if min(width, height) < MIN_SIDE:
        raise InputImageError(
            f"{what} is {width}x{height} px; each side must be at least {MIN_SIDE} px: upscale it or use a "
            "larger image."
        )
    long_side, short_side = max(width, height), min(width, height)
    # Integer comparison: exactly 2.5:1 (e.g. 300x750) is allowed.
    if long_side * 2 > short_side * 5:
        ratio = f"1:{height / width:.2f}" if height > width else f"{width / height:.2f}:1"
        raise InputImageError(
            f"{what} is {width}x{height} px (aspect ratio {ratio}); the ratio must be between 1:2.5 and "
            "2.5:1: crop it to fit."
        )


def _encode(img: Image.Image, fmt: Literal["PNG", "JPEG"], quality: int = _CONVERT_JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    if fmt == "PNG":
        img.save(buf, "PNG", compress_level=6)
    else:
        img.save(buf, "JPEG", quality=quality, optimize=False)
    return buf.getvalue()


def _reencode(
    img: Image.Image, found: Sniffed, original_size: int, max_bytes: int, what: str
) -> tuple[bytes, str, tuple[int, int], str]:
    """Convert a non-PNG/JPEG image, or shrink one over ``max_bytes``; the note says what was done."""
    from PIL import Image, ImageOps

    # EXIF is dropped, so apply its rotation first (in place: a copy of a big image costs memory).
    ImageOps.exif_transpose(img, in_place=True)
    oriented = img
    alpha = has_alpha(oriented)
    needs_conversion = found.kind not in ("png", "jpeg")
    if needs_conversion:
        if alpha:
            data = _encode(oriented, "PNG")
            if len(data) <= max_bytes:
                return data, "image/png", oriented.size, f"converted {found.label} to PNG (kept transparency)"
        else:
            rgb = flatten_to_rgb(oriented)
            data = _encode(rgb, "JPEG")
            if len(data) <= max_bytes:
                note = f"converted {found.label} to JPEG quality {_CONVERT_JPEG_QUALITY}"
                return data, "image/jpeg", rgb.size, note

    # Too large: JPEG at decreasing quality, then smaller sizes, never a side under MIN_SIDE.
    rgb = flatten_to_rgb(oriented)
    flattened = "; transparency flattened onto white" if alpha else ""
    verb = f"converted {found.label} and re-encoded" if needs_conversion else f"re-encoded {found.label}"
    limit = human_bytes(max_bytes)
    for quality in _FULL_SIZE_QUALITIES:
        data = _encode(rgb, "JPEG", quality)
        if len(data) <= max_bytes:
            note = (
                f"{verb} ({human_bytes(original_size)}) as JPEG quality {quality} to fit {limit}{flattened}"
            )
            return data, "image/jpeg", rgb.size, note
    width, height = rgb.size
    floor = MIN_SIDE / min(width, height)
    scale = 1.0
    for _ in range(_MAX_SHRINK_STEPS):
        scale = max(scale * _SHRINK_FACTOR, floor)
        size = (max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale)))
        smaller = rgb.resize(size, Image.Resampling.LANCZOS)
        data = _encode(smaller, "JPEG", _SHRUNK_QUALITY)
        if len(data) <= max_bytes:
            note = (
                f"scaled down from {width}x{height} to {size[0]}x{size[1]} and re-encoded {found.label} "
                f"({human_bytes(original_size)}) as JPEG quality {_SHRUNK_QUALITY} to fit {limit}{flattened}"
            )
            return data, "image/jpeg", size, note
        if scale <= floor:
            break
    raise InputImageError(
        f"{what} ({width}x{height} px, {human_bytes(original_size)}) cannot be made to fit {limit} "
        f"without a side under {MIN_SIDE} px: compress or resize it yourself."
    )
