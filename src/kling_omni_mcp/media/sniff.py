"""What kind of file a byte string is, from its first bytes (magic numbers), never its name.

Used for inputs (a ``cat.png`` that is really a PDF) and for downloads (an HTML error page
served with status 200). No Pillow here: this runs before deciding whether Pillow is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SNIFF_BYTES", "Sniffed", "sniff"]

#: How many leading bytes ``sniff`` looks at.
SNIFF_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Sniffed:
    """The detected kind: ``label`` is for messages ("PNG", "PDF document", "text")."""

    kind: str
    label: str
    mime: str | None
    is_image: bool


_IMAGE_MAGIC: tuple[tuple[bytes, Sniffed], ...] = (
    (b"\x89PNG\r\n\x1a\n", Sniffed("png", "PNG", "image/png", True)),
    (b"\xff\xd8\xff", Sniffed("jpeg", "JPEG", "image/jpeg", True)),
    (b"GIF87a", Sniffed("gif", "GIF", "image/gif", True)),
    (b"GIF89a", Sniffed("gif", "GIF", "image/gif", True)),
    (b"II*\x00", Sniffed("tiff", "TIFF", "image/tiff", True)),
    (b"MM\x00*", Sniffed("tiff", "TIFF", "image/tiff", True)),
    (b"\x00\x00\x01\x00", Sniffed("ico", "ICO", "image/x-icon", True)),
)

_OTHER_MAGIC: tuple[tuple[bytes, Sniffed], ...] = (
    (b"%PDF-", Sniffed("pdf", "PDF document", "application/pdf", False)),
    (b"PK\x03\x04", Sniffed("zip", "ZIP archive (or an Office document)", "application/zip", False)),
    (b"\x1f\x8b", Sniffed("gzip", "gzip archive", "application/gzip", False)),
    (b"%!PS", Sniffed("postscript", "PostScript document", "application/postscript", False)),
)

_BMP = Sniffed("bmp", "BMP", "image/bmp", True)
# "BM" alone would also match text such as "BMW"; the DIB header size pins it down.
_BMP_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


def _sniff_text(head: bytes) -> Sniffed | None:
    if b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the window is still text.
        if exc.start < len(head) - 4:
            return None
        text = head[: exc.start].decode("utf-8")
    lowered = text.lstrip("\ufeff \t\r\n").lower()
    if lowered.startswith(("<!doctype html", "<html")) or "<html" in lowered[:300]:
        return Sniffed("html", "HTML page", "text/html", False)
    if lowered.startswith("<svg") or (lowered.startswith("<?xml") and "<svg" in lowered):
        return Sniffed("svg", "SVG vector image", "image/svg+xml", False)
    if lowered.startswith(("{", "[")):
        return Sniffed("json", "JSON text", "application/json", False)
    return Sniffed("text", "text", "text/plain", False)


def sniff(data: bytes) -> Sniffed:
    """Classify ``data`` by its leading bytes; unknown binary data is ``kind="unknown"``."""
    head = data[:SNIFF_BYTES]
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return Sniffed("webp", "WEBP", "image/webp", True)
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return Sniffed("heif", "HEIC/HEIF", "image/heif", True)
        if brand in _AVIF_BRANDS:
            return Sniffed("avif", "AVIF", "image/avif", True)
        return Sniffed("video", "video (MP4/MOV)", "video/mp4", False)
    if head.startswith(b"BM") and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return _BMP
    for magic, found in (*_IMAGE_MAGIC, *_OTHER_MAGIC):
        if head.startswith(magic):
            return found
    text = _sniff_text(head)
    if text is not None:
        return text
    return Sniffed("unknown", "unknown binary data", None, False)
