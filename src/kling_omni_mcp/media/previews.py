"""Small inline previews of saved results, sized so a tool result stays under hosts' limits.

Hosts truncate or replace large tool results (Claude's apps at ~150,000 characters, Claude Code
at ~25k tokens) and every image counts against the model's context. So previews are JPEG
(far smaller than PNG for pictures; transparency is flattened onto white), and the budget for
all previews of one answer is shared: more images, smaller previews. Full files stay on disk.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ._imaging import flatten_to_rgb, open_image
from .decoding import decode_slot, load_bounded
from .errors import MediaError

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["MIN_PREVIEW_SIDE", "Preview", "make_preview", "preview_budget"]

logger = logging.getLogger(__name__)

#: Below this a preview is useless; ``make_preview`` returns None instead.
MIN_PREVIEW_SIDE = 64
_QUALITIES = (85, 70, 55, 40)
_SIDE_FACTOR = 0.75
_MAX_SIDE_STEPS = 12
# Longest side by number of images in one answer, before the configured cap.
_SIDE_BY_COUNT = ((1, 512), (4, 384), (9, 256), (16, 192))
_SIDE_FOR_MANY = 128
# Decode at most this many times the preview's side (then LANCZOS does the rest), so a 64 MP
# result is decoded reduced (JPEG) or reduced right after decoding (other formats).
_DECODE_SIDE_FACTOR = 2
# A preview is an extra: it waits less for a decode slot than an input does.
_SLOT_WAIT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Preview:
    """An encoded preview image."""

    data: bytes
    mime_type: Literal["image/jpeg"]
    width: int
    height: int


def preview_budget(n_images: int, *, max_side_cap: int, total_chars: int = 60_000) -> tuple[int, int]:
    """(max_side, max_bytes_per_image) so that ``n_images`` Base64 previews fit in ``total_chars``.

    ``max_side_cap`` is the configured ``KLING_PREVIEW_SIZE`` (0 turns previews off: (0, 0)).
    """
    if n_images <= 0 or max_side_cap <= 0 or total_chars <= 0:
        return 0, 0
    side = next((s for limit, s in _SIDE_BY_COUNT if n_images <= limit), _SIDE_FOR_MANY)
    side = min(side, max_side_cap)
    # Base64 turns each 3 bytes (rounded up) into 4 characters.
    per_image_chars = total_chars // n_images
    max_bytes = (per_image_chars // 4) * 3
    if max_bytes <= 0:
        return 0, 0
    return side, max_bytes


def _encode(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def _decode_small(path: Path, max_side: int) -> Image.Image:
    """``path`` decoded at about twice ``max_side``, upright, RGB; within the memory budget."""
    from PIL import ImageOps

    img = open_image(path, what=f"The image {path}", error=MediaError)
    with img:
        decode_side = max_side * _DECODE_SIDE_FACTOR
        small = load_bounded(
            img,
            what=f"The image {path}",
            error=MediaError,
            held_bytes=0,
            max_pixels=decode_side**2,
            min_side=1,
        )
        with small:
            ImageOps.exif_transpose(small, in_place=True)
            rgb = flatten_to_rgb(small)
            return rgb.copy() if rgb is small else rgb


def make_preview(path: Path, *, max_side: int, max_bytes: int) -> Preview | None:
    """A JPEG of ``path`` with its longest side ≤ ``max_side`` and at most ``max_bytes`` bytes.

    Steps quality down (85→40), then the side, until it fits. Returns None when ``max_side`` is 0,
    when even a 64-px version does not fit, or when the file cannot be read (logged: a preview
    is an extra, the saved file is the result). Synchronous: run it in a worker thread.
    """
    if max_side <= 0 or max_bytes <= 0:
        return None
    from PIL import Image

    try:
        with decode_slot(MediaError, wait_seconds=_SLOT_WAIT_SECONDS):
            base = _decode_small(Path(path), max_side)
    except MediaError as exc:
        logger.warning("No preview for %s: %s", path, exc)
        return None
    except Exception as exc:  # a damaged file means no preview, not a failed tool call
        logger.warning("No preview for %s: cannot decode it (%s)", path, exc.__class__.__name__)
        return None

    floor = min(MIN_PREVIEW_SIDE, max_side)
    side = min(max_side, max(base.size))
    for _ in range(_MAX_SIDE_STEPS):
        thumb = base.copy()
        thumb.thumbnail((side, side), Image.Resampling.LANCZOS)
        for quality in _QUALITIES:
            data = _encode(thumb, quality)
            if len(data) <= max_bytes:
                return Preview(data=data, mime_type="image/jpeg", width=thumb.width, height=thumb.height)
        if side <= floor:
            break
        side = max(floor, int(side * _SIDE_FACTOR))
    return None
