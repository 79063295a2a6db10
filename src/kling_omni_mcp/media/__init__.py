"""Media layer: input images in, result images out, small previews for tool results.

Nothing here knows MCP or the vendor's client; Pillow is imported only when an image is handled.
"""

from __future__ import annotations

from .errors import InputImageError, MediaError, OutputError
from .inputs import (
    HARD_MAX_INPUT_BYTES,
    MAX_INPUT_BYTES,
    MIN_SIDE,
    PreparedImage,
    prepare_image_input,
)
from .outputs import MAX_DOWNLOAD_BYTES, ResultStore, SavedImage
from .paths import confined_output_path, resolve_input_path
from .previews import Preview, make_preview, preview_budget

__all__ = [
    "HARD_MAX_INPUT_BYTES",
    "MAX_DOWNLOAD_BYTES",
    "MAX_INPUT_BYTES",
    "MIN_SIDE",
    "InputImageError",
    "MediaError",
    "OutputError",
    "PreparedImage",
    "Preview",
    "ResultStore",
    "SavedImage",
    "confined_output_path",
    "make_preview",
    "prepare_image_input",
    "preview_budget",
    "resolve_input_path",
]
