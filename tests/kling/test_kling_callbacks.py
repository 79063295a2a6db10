"""Both vendor callback formats read into one notice (table-driven)."""

from __future__ import annotations

import json

import pytest

from kling_omni_mcp.kling.callbacks import CallbackNotice, parse_callback

CASES = [
    (
        {"task_id": "t1", "task_status": "succeed", "task_info": {"external_task_id": "e1"}},
        CallbackNotice("t1", "e1", "succeed", True),
    ),
    ({"task_id": "t1", "task_status": "processing"}, CallbackNotice("t1", None, "processing", False)),
    (
        {"code": 0, "data": {"task_id": "t2", "task_status": "failed"}},
        CallbackNotice("t2", None, "failed", True),
    ),
    (
        {"id": "n1", "status": "succeeded", "external_id": "e2", "outputs": [{"type": "image", "url": "u"}]},
        CallbackNotice("n1", "e2", "succeeded", True),
    ),
    # The console's "Send test callback".
    (
        {"id": "test-123", "status": "submitted", "message": "", "outputs": [], "billing": []},
        CallbackNotice("test-123", None, "submitted", False),
    ),
    ({"id": 99, "status": "failed"}, CallbackNotice("99", None, "failed", True)),
    (
        {"external_id": "only-ext", "status": "processing"},
        CallbackNotice(None, "only-ext", "processing", False),
    ),
]


@pytest.mark.parametrize(("payload", "expected"), CASES)
def test_parses_both_formats(payload: dict[str, object], expected: CallbackNotice) -> None:
    assert parse_callback(json.dumps(payload).encode()) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"task_id": "t1"}',
        b'{"id": "x"}',
        b'{"status": "succeeded"}',
        b'{"task_id": true, "task_status": "succeed"}',
        json.dumps({"task_id": "x" * 300, "task_status": "succeed"}).encode(),
        b'{"task_id": "t", "task_status": 5}',
    ],
)
def test_refuses_what_is_not_a_callback(body: bytes) -> None:
    assert parse_callback(body) is None
