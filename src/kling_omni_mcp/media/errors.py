"""Errors raised by the media layer (input images, saved results, previews).

The MCP layer shows ``str(error)`` to the model as the tool error, so every message says what
was wrong, the value that was wrong (a path, a size, a ratio: never file contents) and what to
do instead, in one or two sentences::

    MediaError              base of everything below
    ├── InputImageError     an input image or its path was refused (nothing was sent)
    └── OutputError         a result could not be downloaded or saved
"""

from __future__ import annotations

__all__ = ["InputImageError", "MediaError", "OutputError"]


class MediaError(Exception):
    """Base of every media error; ``str()`` is a complete, actionable sentence."""


class InputImageError(MediaError):
    """An input image (URL, path, Base64) was refused before anything was sent."""


class OutputError(MediaError):
    """A result image or sidecar could not be downloaded or written."""
