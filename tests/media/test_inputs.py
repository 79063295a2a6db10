"""Input images: every accepted form, every documented vendor rule, every refusal's message."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kling_omni_mcp.media import (
    MAX_INPUT_BYTES,
    InputImageError,
    PreparedImage,
    prepare_image_input,
)

ImageMaker = Callable[..., Path]


def _decoded_size(payload: str) -> tuple[str, tuple[int, int]]:
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(payload, validate=True))) as img:
        return str(img.format), img.size


def _prepare(value: str, tmp_path: Path, **kwargs: Any) -> PreparedImage:
    return prepare_image_input(value, allowed_dirs=[tmp_path], **kwargs)


# --- files that are sent as they are -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "size", "fmt", "mime"),
    [
        ("photo.png", (400, 400), "PNG", "image/png"),
        ("photo.jpg", (640, 480), "JPEG", "image/jpeg"),
        ("tall.png", (300, 750), "PNG", "image/png"),  # exactly 1:2.5 is allowed
        ("wide.jpg", (750, 300), "JPEG", "image/jpeg"),  # exactly 2.5:1 is allowed
        ("jpeg-named.png", (500, 400), "JPEG", "image/jpeg"),  # the bytes decide, not the name
    ],
)
def test_png_and_jpeg_within_limits_are_sent_unchanged(
    tmp_path: Path, make_image: ImageMaker, name: str, size: tuple[int, int], fmt: str, mime: str
) -> None:
    path = make_image(name, size, fmt=fmt)
    got = _prepare(str(path), tmp_path)
    assert base64.b64decode(got.payload) == path.read_bytes()
    assert not got.payload.startswith("data:")
    assert (got.source_kind, got.source, got.mime_type) == ("file", str(path.resolve()), mime)
    assert (got.width, got.height, got.byte_size) == (*size, path.stat().st_size)
    assert got.converted is False and got.note is None


# --- files that are converted ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "out_format", "note_fragment"),
    [
        ("photo.webp", {"fmt": "WEBP"}, "JPEG", "converted WEBP to JPEG"),
        ("logo.webp", {"fmt": "WEBP", "mode": "RGBA", "color": (0, 0, 255, 100)}, "PNG", "kept transparency"),
        ("opaque.webp", {"fmt": "WEBP", "mode": "RGBA", "color": (0, 0, 255, 255)}, "JPEG", "to JPEG"),
        ("anim.gif", {"fmt": "GIF", "mode": "P", "color": 3}, "JPEG", "converted GIF"),
        ("scan.bmp", {"fmt": "BMP"}, "JPEG", "converted BMP"),
        ("scan.tiff", {"fmt": "TIFF"}, "JPEG", "converted TIFF"),
    ],
)
def test_other_formats_are_converted_and_say_so(
    tmp_path: Path,
    make_image: ImageMaker,
    name: str,
    kwargs: dict[str, Any],
    out_format: str,
    note_fragment: str,
) -> None:
    path = make_image(name, (500, 400), **kwargs)
    got = _prepare(str(path), tmp_path)
    assert got.converted is True
    assert got.note is not None and note_fragment in got.note
    assert _decoded_size(got.payload) == (out_format, (500, 400))
    assert got.mime_type == f"image/{out_format.lower()}"
    assert got.byte_size == len(base64.b64decode(got.payload))


def test_a_png_over_10_mb_is_reencoded_under_the_limit(tmp_path: Path, make_image: ImageMaker) -> None:
    # Noise does not compress: 2048x2048 RGB at compress_level 0 is about 12.6 MB.
    path = make_image("big.png", (2048, 2048), noise=True, compress_level=0)
    assert path.stat().st_size > 12 * 1024 * 1024
    got = _prepare(str(path), tmp_path)
    assert got.converted is True
    assert got.byte_size <= MAX_INPUT_BYTES
    assert got.note is not None and "to fit 10 MB" in got.note
    fmt, (width, height) = _decoded_size(got.payload)
    assert fmt == "JPEG" and min(width, height) >= 300


def test_scaling_down_when_quality_alone_is_not_enough(tmp_path: Path, make_image: ImageMaker) -> None:
    path = make_image("noise.png", (1200, 900), noise=True, compress_level=1)
    got = _prepare(str(path), tmp_path, max_bytes=150_000)
    assert got.byte_size <= 150_000
    assert got.note is not None and got.note.startswith("scaled down from 1200x900 to ")
    assert got.width is not None and got.height is not None
    assert min(got.width, got.height) >= 300 and got.width < 1200
    # The aspect ratio survives the scaling.
    assert abs(got.width / got.height - 1200 / 900) < 0.01


def test_an_image_that_cannot_fit_without_going_under_300_px_is_refused(
    tmp_path: Path, make_image: ImageMaker
) -> None:
    path = make_image("noise.png", (320, 320), noise=True)
    with pytest.raises(InputImageError, match=r"cannot be made to fit .* without a side under 300 px"):
        _prepare(str(path), tmp_path, max_bytes=2_000)


# --- files that are refused ----------------------------------------------------------------------


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


REFUSED_FILES: list[tuple[str, Callable[..., bytes] | bytes, str]] = [
    ("empty.png", b"", "is empty (0 bytes)"),
    ("notes.png", b"hello, this is a text file\n" * 10, "not an image (it looks like text)"),
    ("paper.png", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "not an image (it looks like PDF document)"),
    ("page.jpg", b"<!DOCTYPE html><html><body>Not found</body></html>", "HTML page"),
    ("icon.png", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "SVG vector image"),
    ("fake.png", b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50, "is not a valid image"),
]


@pytest.mark.parametrize(("name", "data", "fragment"), REFUSED_FILES)
def test_files_that_are_not_images_are_refused(tmp_path: Path, name: str, data: bytes, fragment: str) -> None:
    path = _write(tmp_path, name, data)
    with pytest.raises(InputImageError) as info:
        _prepare(str(path), tmp_path)
    assert fragment in str(info.value)
    assert str(path.resolve()) in str(info.value)
    assert "Not found" not in str(info.value)  # never the file's contents


def test_a_truncated_png_is_refused_as_damaged(tmp_path: Path, encode_image: Callable[..., bytes]) -> None:
    data = encode_image((400, 400), noise=True)
    path = _write(tmp_path, "cut.png", data[: len(data) // 2])
    with pytest.raises(InputImageError, match="is not a valid image: its PNG data is damaged or cut off"):
        _prepare(str(path), tmp_path)


@pytest.mark.parametrize(
    ("size", "fragment"),
    [
        ((20, 20), "is 20x20 px; each side must be at least 300 px: upscale it or use a larger image"),
        ((200, 640), "is 200x640 px; each side must be at least 300 px"),
        ((640, 299), "is 640x299 px; each side must be at least 300 px"),
        ((300, 800), "is 300x800 px (aspect ratio 1:2.67); the ratio must be between 1:2.5 and 2.5:1: crop"),
        ((800, 300), "is 800x300 px (aspect ratio 2.67:1)"),
        ((301, 753), "(aspect ratio 1:2.50)"),  # 2.5017 is over the limit even if it rounds to 2.50
    ],
)
def test_size_and_ratio_rules_are_enforced_with_the_measured_values(
    tmp_path: Path, make_image: ImageMaker, size: tuple[int, int], fragment: str
) -> None:
    path = make_image("img.png", size)
    with pytest.raises(InputImageError) as info:
        _prepare(str(path), tmp_path)
    assert fragment in str(info.value)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    ("size", "fragment"),
    [
        ((30000, 30000), "decompression bomb"),  # over twice Pillow's limit: Pillow itself refuses
        ((10000, 10000), "is 10000x10000 px (100 megapixels)"),  # between Pillow's warning and error
        ((9000, 8000), "is 9000x8000 px (72 megapixels); images over 64 megapixels are refused"),
    ],
)
def test_decompression_bombs_are_refused_without_decoding(
    tmp_path: Path, make_bomb: Callable[[int, int], bytes], size: tuple[int, int], fragment: str
) -> None:
    data = make_bomb(*size)
    assert len(data) < 1000
    path = _write(tmp_path, "bomb.png", data)
    with pytest.raises(InputImageError) as info:
        _prepare(str(path), tmp_path)
    assert fragment in str(info.value)


def test_files_over_the_hard_ceiling_are_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    with open(path, "wb") as f:
        f.truncate(101 * 1024 * 1024)  # sparse: costs no disk
    with pytest.raises(InputImageError, match=r"is 101 MB; files over 100 MB are refused"):
        _prepare(str(path), tmp_path)


# --- the other forms: URL, data URI, Base64 ---------------------------------------------------------


def test_https_url_is_passed_through_unfetched(tmp_path: Path) -> None:
    url = "https://cdn.example.com/cat.png?sig=abc"
    got = _prepare(url, tmp_path)
    assert (got.payload, got.source_kind, got.source) == (url, "url", url)
    assert (got.width, got.height, got.mime_type, got.converted) == (None, None, None, False)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda b64: f"data:image/png;base64,{b64}",
        lambda b64: "data:image/png;base64," + "\n".join(textwrap.wrap(b64, 76)),
        lambda b64: b64,
        lambda b64: "\n".join(textwrap.wrap(b64, 76)) + "\n",
        lambda b64: b64.rstrip("="),
        lambda b64: b64.replace("+", "-").replace("/", "_"),
    ],
    ids=["data-uri", "data-uri-wrapped", "bare", "bare-wrapped", "bare-unpadded", "urlsafe"],
)
def test_base64_forms_become_bare_base64_of_the_same_bytes(
    tmp_path: Path, encode_image: Callable[..., bytes], wrap: Callable[[str], str]
) -> None:
    data = encode_image((320, 320), noise=True, compress_level=1)
    got = _prepare(wrap(base64.b64encode(data).decode()), tmp_path)
    assert got.payload == base64.b64encode(data).decode()
    assert got.source_kind == "base64"
    assert got.source == f"inline base64 ({len(data)} bytes)"
    assert (got.width, got.height, got.converted) == (320, 320, False)


def test_base64_of_a_webp_is_converted(tmp_path: Path, encode_image: Callable[..., bytes]) -> None:
    data = encode_image((400, 300), fmt="WEBP")
    got = _prepare(base64.b64encode(data).decode(), tmp_path)
    assert got.converted is True and _decoded_size(got.payload) == ("JPEG", (400, 300))


REFUSED_VALUES = [
    ("file:///etc/passwd", "file: URLs are not accepted: give the file's path itself"),
    ("ftp://example.com/cat.png", "ftp: addresses are not accepted"),
    ("javascript:alert(1)", "javascript: addresses are not accepted"),
    ("https://", "is not a valid http(s) URL"),
    ("http://[::1/cat.png", "is not a valid http(s) URL"),
    ("a cat sitting on a sofa", "is not an image reference. Give one of: an absolute file path"),
    ("", "An input image is empty"),
    ("cat.png", "cat.png is a relative path"),
    ("pictures/cat.png", "relative path"),
    ("data:image/png,rawbytes", "not Base64-encoded"),
    ("data:image/png;base64,!!!not base64!!!", "not valid Base64"),
    ("data:image/png;base64,SGVsbG8sIHdvcmxkIQ==", "not an image (it looks like text)"),
    (
        base64.b64encode(b"plain text, long enough to be taken for base64 data " * 3).decode(),
        "looks like text",
    ),
]


@pytest.mark.parametrize(("value", "fragment"), REFUSED_VALUES)
def test_unusable_values_are_refused_with_the_accepted_forms(
    tmp_path: Path, value: str, fragment: str
) -> None:
    with pytest.raises(InputImageError) as info:
        _prepare(value, tmp_path)
    assert fragment in str(info.value)


def test_a_wrong_path_gets_a_did_you_mean(tmp_path: Path, make_image: ImageMaker) -> None:
    make_image("pics/cat.png")
    with pytest.raises(InputImageError, match=r"No file at .*/pics/cat\.pgn\. Did you mean: cat\.png"):
        _prepare(str(tmp_path / "pics" / "cat.pgn"), tmp_path)


def test_paths_outside_the_allowed_folders_are_refused(tmp_path: Path, make_image: ImageMaker) -> None:
    path = make_image("elsewhere/cat.png")
    with pytest.raises(InputImageError, match="outside the folders"):
        prepare_image_input(str(path), allowed_dirs=[tmp_path / "pics"])


# --- describing, and start-up cost ------------------------------------------------------------------


def test_importing_the_media_layer_does_not_import_pillow() -> None:
    code = "import sys, kling_omni_mcp.media; print('PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
