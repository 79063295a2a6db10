"""Vendor callback bodies, in either of the vendor's two formats, read into one small value.

Omni-Image sends the legacy body, shaped like a query's ``data`` (``task_id``, ``task_status``,
``task_info.external_task_id``); the vendor's newer APIs and its console's "Send test callback"
button send the new one (``id``, ``status``, ``external_id``, ``outputs``). A callback is only a
hint that a task changed: the server re-queries the task rather than trusting the body, so only
the ids and whether the status is final are kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["CallbackNotice", "parse_callback"]

#: Final statuses in both formats (legacy ``succeed``, new ``succeeded``).
_FINAL = frozenset({"succeed", "succeeded", "failed"})
#: Ids are short vendor strings; anything longer is not a callback we can act on.
_MAX_ID_LENGTH = 256


@dataclass(frozen=True)
class CallbackNotice:
    """What a callback says: which task (by vendor id and/or external id), its status, final or not."""

    task_id: str | None
    external_id: str | None
    status: str
    final: bool

    @property
    def keys(self) -> tuple[str, ...]:
        """Every id the task may be known by here, vendor id first."""
        return tuple(k for k in (self.task_id, self.external_id) if k)


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text if 0 < len(text) <= _MAX_ID_LENGTH else None


def parse_callback(body: bytes) -> CallbackNotice | None:
    """The notice a callback body carries, or None when it is neither format (or not JSON)."""
    try:
        payload: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(payload, dict):
        return None
    if isinstance(payload.get("data"), dict) and "task_id" not in payload and "id" not in payload:
        payload = payload["data"]  # tolerate an enveloped body
    if "task_id" in payload:  # legacy format
        info = payload.get("task_info")
        task_id = _text(payload.get("task_id"))
        external = _text(info.get("external_task_id")) if isinstance(info, dict) else None
        status = payload.get("task_status")
    else:  # new format
        task_id = _text(payload.get("id"))
        external = _text(payload.get("external_id"))
        status = payload.get("status")
    if not isinstance(status, str) or (task_id is None and external is None):
        return None
    return CallbackNotice(task_id=task_id, external_id=external, status=status, final=status in _FINAL)
