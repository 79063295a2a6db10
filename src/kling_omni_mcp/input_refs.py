"""What a caller may name as an input image, beyond what media/inputs.py reads.

- ``kling://tasks/{task_id}/images/{index}``: an image this server saved, read from its output
  folder (the caller's own task under isolation), so "make it bluer" chains work in every transport.
- Over HTTP a local path names a file on the server's disk, not the caller's: it is refused unless
  ``KLING_INPUT_DIRS`` was set explicitly (then the operator chose what remote callers may read).
"""

from __future__ import annotations

import re

__all__ = ["KLING_IMAGE_URI", "local_path_refusal", "looks_like_local_path", "parse_image_uri"]

#: The resource URI of a saved image (server/app.py registers the same template).
KLING_IMAGE_URI = "kling://tasks/{task_id}/images/{index}"
_KLING_URI = re.compile(
    r"^kling://tasks/(?P<task_id>[A-Za-z0-9][A-Za-z0-9._:-]{0,127})/images/(?P<index>\d{1,4})$"
)
_REMOTE_FORMS = ("http://", "https://", "data:", "kling:")
_BASE64ISH = re.compile(r"^[A-Za-z0-9+/=_-]+$")
#: Shorter strings without spaces could be file names such as "cat" as easily as Base64.
_MIN_BASE64_CHARS = 64


def parse_image_uri(value: str) -> tuple[str, int] | None:
    """``(task_id, index)`` of a ``kling://`` image URI; None for any other value.

    Raises ``ValueError`` for a ``kling://`` value that is not a saved-image URI.
    """
    text = value.strip()
    if not text.lower().startswith("kling:"):
        return None
    match = _KLING_URI.match(text)
    if match is None:
        raise ValueError(
            f"{text[:80]!r} is not a saved-image reference: use {KLING_IMAGE_URI} as given by "
            "get_task or wait_for_task (index is a number)."
        )
    return match["task_id"], int(match["index"])


def looks_like_local_path(value: str) -> bool:
    """True for anything but a URL, a ``data:`` URI, a ``kling://`` URI or bare Base64."""
    text = value.strip()
    if text[:8].lower().startswith(_REMOTE_FORMS):
        return False
    compact = re.sub(r"\s+", "", text)
    return not (len(compact) >= _MIN_BASE64_CHARS and _BASE64ISH.match(compact))


def local_path_refusal() -> str:
    """Why a remote caller's local path is refused, and what to send instead."""
    return (
        "this server runs remotely, so a file path names a file on the server, not on your machine: "
        "local paths are not accepted over HTTP. Send the image as an https URL, as a data: URL or "
        "Base64 text, or as kling://tasks/<task_id>/images/<index> for an image this server made for you."
    )
