"""Fixtures of the media tests: real encoded images (made with Pillow), written under ``tmp_path``."""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ImageMaker = Callable[..., Path]


def image_bytes(
    size: tuple[int, int] = (400, 400),
    *,
    fmt: str = "PNG",
    mode: str = "RGB",
    color: Any = (200, 30, 30),
    noise: bool = False,
    **save: Any,
) -> bytes:
    """Encoded image bytes; ``noise`` makes incompressible pixels (random bytes)."""
    from PIL import Image

    if noise:
        channels = len(mode) if mode in ("RGB", "RGBA", "L") else 3
        img = Image.frombytes(mode, size, os.urandom(size[0] * size[1] * channels))
    else:
        img = Image.new(mode, size, color)
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` 1-bit pixels (no real pixel data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def make_image(tmp_path: Path) -> ImageMaker:
    """``make_image("name.png", (w, h), fmt=..., ...)`` writes an image file under ``tmp_path``."""

    def make(name: str, size: tuple[int, int] = (400, 400), **kwargs: Any) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image_bytes(size, **kwargs))
        return path

    return make


@pytest.fixture
def encode_image() -> Callable[..., bytes]:
    """``encode_image((w, h), fmt=..., noise=...)``: image bytes without a file."""
    return image_bytes


@pytest.fixture
def make_bomb() -> Callable[[int, int], bytes]:
    """``make_bomb(w, h)``: a PNG header claiming w x h pixels, a few hundred bytes long."""
    return bomb_png
