"""What counts as a saved-image reference and as a local path (input_refs.py)."""

from __future__ import annotations

import base64

import pytest

from kling_omni_mcp.input_refs import looks_like_local_path, parse_image_uri

PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(80)).decode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("kling://tasks/abc123/images/0", ("abc123", 0)),
        ("  kling://tasks/ext:my-id.1/images/12 ", ("ext:my-id.1", 12)),
        ("https://example.com/kling://tasks/a/images/0", None),
        ("/home/me/a.png", None),
    ],
)
def test_saved_image_references_are_parsed(value: str, expected: tuple[str, int] | None) -> None:
    assert parse_image_uri(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "kling://tasks/a/images/x",
        "kling://tasks/../images/0",
        "kling://other",
        "KLING://tasks/a/images/99999",
    ],
)
def test_malformed_references_are_refused_with_the_form_to_use(value: str) -> None:
    with pytest.raises(ValueError, match=r"kling://tasks/\{task_id\}/images/\{index\}"):
        parse_image_uri(value)


@pytest.mark.parametrize(
    ("value", "local"),
    [
        ("/home/me/photo.png", True),
        ("~/photo.png", True),
        ("photo.png", True),
        ("C:\\Users\\me\\photo.png", True),
        ("https://example.com/a.png", False),
        ("HTTP://example.com/a.png", False),
        ("data:image/png;base64," + PNG_B64, False),
        (PNG_B64, False),
        ("kling://tasks/a/images/0", False),
    ],
)
def test_local_paths_are_told_apart_from_what_a_remote_caller_can_send(value: str, local: bool) -> None:
    assert looks_like_local_path(value) is local
