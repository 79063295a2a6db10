"""Bounded decoding of untrusted images: a process-wide limit on concurrent decodes, and a memory
budget checked from the header before a single pixel is decoded.

A file a few bytes long can decode to gigabytes (an 8000x8000 lossless WEBP is 38 bytes; libwebp
then needs about 16 bytes per pixel). So each decode is planned first: the cost is estimated from
the header (size, mode, format), JPEGs are decoded at a reduced scale by libjpeg itself
(``draft``), other formats are decoded once and reduced strip by strip (never a second full-size
copy, which Pillow's own ``reduce``/``resize`` of RGBA images would make), and what cannot fit the
budget is refused with the figures. At most ``MAX_CONCURRENT_DECODES`` plans run at once in the
whole process (inputs and previews share the slots), so the worst case is bounded too.
"""

from __future__ import annotations

import ctypes
import functools
import math
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .errors import MediaError

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "MAX_CONCURRENT_DECODES",
    "MEMORY_BUDGET_BYTES",
    "decode_cost",
    "decode_slot",
    "load_bounded",
    "verify_decodes",
]

#: Extra memory one preparation (or preview) may use, all copies included.
MEMORY_BUDGET_BYTES = 350 * 1024 * 1024
#: Decodes running at once in the whole process (threads of the worker pool share them).
MAX_CONCURRENT_DECODES = 2
#: How long a call waits for a free slot before it is refused as "busy".
SLOT_WAIT_SECONDS = 120.0

_MB = 1024 * 1024
# Bytes per pixel a format's decoder needs in total (its own buffers plus the decoded image),
# measured with Pillow 13: libwebp's animation decoder keeps two canvases, Pillow copies the
# frame into a bytes object and then into the image (4 + 4 + 4 + 4).
_DECODER_BYTES_PER_PIXEL = {"WEBP": 16, "AVIF": 16}
# Formats Pillow decodes straight into the image; others (TIFF strips, GIF frames, BMP, ICO)
# may buffer as much again, so they are counted twice.
_DIRECT_FORMATS = ("PNG", "JPEG")
# A progressive JPEG keeps 16-bit DCT coefficients of the whole image while decoding, whatever
# the draft scale.
_PROGRESSIVE_COEFFICIENT_BYTES = 2
# Reduction works on strips of about this many bytes of the decoded image.
_STRIP_BYTES = 8 * _MB
_JPEG_SCALES = (1, 2, 4, 8)

# glibc's mallopt(M_MMAP_THRESHOLD, ...): allocations from this size up are mmap'd, and so go back
# to the system when freed.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 1024 * 1024

_slots = threading.BoundedSemaphore(MAX_CONCURRENT_DECODES)


@functools.cache
def _return_big_buffers_to_the_system() -> None:
    """Make glibc hand big freed buffers (decoded images) back to the system at once.

    By default glibc raises its mmap threshold after the first big buffer is freed; from then on
    Pillow's 16 MB image blocks come from per-thread heaps that keep the memory. With a pool of
    worker threads each decode then lands in another heap, and the process grows far past what
    two decodes at a time need (measured with six concurrent 64 MP PNGs: 1084 MB peak instead of
    561 MB). Setting the threshold fixes it (and turns the adjustment off). glibc only; musl and
    other systems return big buffers already.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return
    libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)


@contextmanager
def decode_slot(error: type[MediaError], *, wait_seconds: float | None = None) -> Iterator[None]:
    """Hold one of the process's decode slots; raise ``error`` if none frees up in ``wait_seconds``.

    ``wait_seconds`` defaults to ``SLOT_WAIT_SECONDS``. Taken inside the worker thread, so waiting
    never blocks the event loop.
    """
    _return_big_buffers_to_the_system()
    if wait_seconds is None:
        wait_seconds = SLOT_WAIT_SECONDS
    if not _slots.acquire(timeout=wait_seconds):
        raise error(
            f"The server is busy preparing other images (at most {MAX_CONCURRENT_DECODES} at once) and "
            f"none finished within {wait_seconds:.0f} s: try again in a minute."
        )
    try:
        yield
    finally:
        _slots.release()


def _bytes_per_stored_pixel(mode: str) -> int:
    """How Pillow stores a pixel: 1 byte for L/P/1, 2 for 16-bit grey, else 4 (RGB is padded)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def decode_cost(img: Image.Image) -> int:
    """Bytes needed to load ``img`` at its current size (after any ``draft``), decoder included."""
    width, height = img.size
    pixels = width * height
    fmt = img.format or ""
    if fmt in _DECODER_BYTES_PER_PIXEL:
        return pixels * _DECODER_BYTES_PER_PIXEL[fmt]
    stored = pixels * _bytes_per_stored_pixel(img.mode)
    return stored if fmt in _DIRECT_FORMATS else 2 * stored


def _refuse(error: type[MediaError], what: str, size: tuple[int, int], cost: int, held: int) -> MediaError:
    """The refusal, with the measured figures and what to do."""
    width, height = size
    available = MEMORY_BUDGET_BYTES - held
    held_note = f", of which its data already takes {held / _MB:.0f} MB" if held >= _MB else ""
    fits = available // max(1, cost // max(1, width * height)) / 1e6
    return error(
        f"{what} is {width}x{height} px ({width * height / 1e6:.0f} megapixels); decoding it would take "
        f"about {cost / _MB:.0f} MB of memory, over this server's budget of "
        f"{MEMORY_BUDGET_BYTES / _MB:.0f} MB per image{held_note}: scale it down to at most "
        f"{fits:.0f} megapixels, or save it as JPEG (which this server decodes at a reduced scale), "
        "and try again."
    )


def verify_decodes(img: Image.Image, *, what: str, error: type[MediaError], held_bytes: int) -> None:
    """Decode ``img`` only to prove its data is whole, as cheaply as the format allows.

    JPEGs are decoded at 1/8 scale (every byte of the entropy-coded data is still read).
    Raises ``error`` with the figures when even that would not fit the budget.
    """
    available = MEMORY_BUDGET_BYTES - held_bytes
    size = img.size
    if img.format == "JPEG":
        img.draft(None, (max(1, size[0] // 8), max(1, size[1] // 8)))
    cost = decode_cost(img) + _progressive_cost_of(img, size)
    if cost > available:
        raise _refuse(error, what, size, cost, held_bytes)
    img.load()


def _progressive_cost_of(img: Image.Image, original: tuple[int, int]) -> int:
    # After draft() the image reports its reduced size; coefficients are kept at full size.
    if img.format != "JPEG" or not (img.info.get("progressive") or img.info.get("progression")):
        return 0
    return original[0] * original[1] * len(img.getbands()) * _PROGRESSIVE_COEFFICIENT_BYTES


def load_bounded(
    img: Image.Image,
    *,
    what: str,
    error: type[MediaError],
    held_bytes: int,
    max_pixels: int,
    min_side: int,
) -> Image.Image:
    """Decode ``img`` within the memory budget, at most ``max_pixels`` large (aspect kept).

    ``held_bytes`` is what the caller already holds (file data, payload to come). The result has
    at least ``min_side`` px on its shorter side when the original has. Returns ``img`` itself
    (loaded) or a smaller image; in the latter case ``img`` is closed to free its pixels early.
    Raises ``error`` with the measured figures when no plan fits.
    """
    available = MEMORY_BUDGET_BYTES - held_bytes
    original = img.size
    if img.format == "JPEG":
        _draft_jpeg(img, max_pixels, min_side)
    cost = decode_cost(img) + _progressive_cost_of(img, original)
    width, height = img.size
    factor = 1
    if width * height > max_pixels:
        factor = math.ceil(math.sqrt(width * height / max_pixels))
    largest = max(1, min(width, height) // max(1, min_side))

    def total(f: int) -> int:
        if f == 1:
            return cost
        reduced = math.ceil(width / f) * math.ceil(height / f) * 4
        return cost + reduced + _STRIP_BYTES * 4

    while total(factor) > available and factor < largest:
        factor += 1
    factor = min(factor, largest)
    if total(factor) > available:
        raise _refuse(error, what, original, total(factor), held_bytes)
    img.load()
    if factor == 1:
        return img
    reduced = reduce_in_strips(img, factor)
    img.close()
    return reduced


def _draft_jpeg(img: Image.Image, max_pixels: int, min_side: int) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale: the smallest scale that still has the pixels."""
    width, height = img.size
    chosen = 1
    for scale in _JPEG_SCALES:
        w, h = math.ceil(width / scale), math.ceil(height / scale)
        if scale > 1 and min(w, h) < min_side:
            break
        chosen = scale
        if w * h <= max_pixels:
            break
    if chosen > 1:
        img.draft(None, (math.ceil(width / chosen), math.ceil(height / chosen)))


def _strip_mode(img: Image.Image) -> str:
    """The mode strips are reduced in: Pillow's reduce takes L, RGB, RGBA (not P, 1, I;16, CMYK)."""
    if img.mode in ("L", "RGB", "RGBA"):
        return img.mode
    if img.mode in ("LA", "La", "PA", "RGBa") or "transparency" in img.info:
        return "RGBA"
    if img.mode in ("1", "I", "F") or img.mode.startswith("I;16"):
        return "L"
    return "RGB"


def reduce_in_strips(img: Image.Image, factor: int) -> Image.Image:
    """``img`` shrunk ``factor`` times (box average), one horizontal strip at a time.

    Pillow's ``reduce`` of an RGBA image first converts the whole image (a second full copy);
    strips keep the extra memory to one strip plus the result.
    """
    from PIL import Image

    from ._imaging import flatten_to_rgb

    mode = _strip_mode(img)
    width, height = img.size
    row_bytes = width * 4
    rows = max(factor, (_STRIP_BYTES // row_bytes) // factor * factor)
    out = Image.new(mode, (math.ceil(width / factor), math.ceil(height / factor)))
    for top in range(0, height, rows):
        strip = img.crop((0, top, width, min(height, top + rows)))
        if strip.mode != mode:
            # 16-bit and float grey need scaling, not clipping: flatten_to_rgb knows how.
            wide_grey = mode == "L" and strip.mode != "1"
            strip = flatten_to_rgb(strip).convert("L") if wide_grey else strip.convert(mode)
        out.paste(strip.reduce(factor), (0, top // factor))
    out.info.update({k: v for k, v in img.info.items() if k == "exif"})
    return out
