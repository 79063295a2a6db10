"""Lenient reading of a vendor task: an odd optional field becomes "unknown", the rest stands.

A broken or hostile vendor may send timestamps like ``1e17``, negative counts, unknown statuses,
wrong types in optional fields, or more images than the API can make. None of that may crash a
tool: ``lenient_task`` rewrites the raw ``data`` object before validation, replacing each odd
optional value by "unknown" (None or a safe default) and recording which fields it replaced, so
the answer can say so. Only a missing or unusable ``task_id`` still makes the task unreadable.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_ID_CHARS", "MAX_RESULT_IMAGES", "MAX_TIMESTAMP_MS", "ODD_FIELDS_KEY", "lenient_task"]

#: The API makes at most 9 images per task (``n`` and ``series_amount`` are 1..9).
MAX_RESULT_IMAGES = 9
#: Milliseconds of 9999-12-31T23:59:59Z: later timestamps cannot be shown as dates.
MAX_TIMESTAMP_MS = 253_402_300_799_999
#: Longest task id or external id accepted (the vendor's are ~19 digits; ours 36 characters).
MAX_ID_CHARS = 256
#: Where the names of replaced fields and the count of dropped images travel into the model.
ODD_FIELDS_KEY = "odd_fields"
DROPPED_IMAGES_KEY = "images_dropped"

_STATUSES = ("submitted", "processing", "succeed", "failed")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _timestamp(value: object) -> tuple[int | None, bool]:
    """(milliseconds or None, odd?)."""
    if value is None:
        return None, False
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.isdigit() and len(value) < 20:
        value = int(value)
    if _is_int(value) and 0 <= value <= MAX_TIMESTAMP_MS:  # type: ignore[operator]
        return int(value), False  # type: ignore[call-overload]
    return None, True


def _images(value: object, odd: list[str], where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        odd.append(where)
        return []
    out: list[dict[str, Any]] = []
    for position, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("url"), str) or not item["url"]:
            odd.append(f"{where}[{position}]")
            continue
        image = dict(item)
        index = image.get("index", position)
        if not _is_int(index) or not 0 <= index < 10_000:
            odd.append(f"{where}[{position}].index")
            image["index"] = position
        if image.get("watermark_url") is not None and not isinstance(image["watermark_url"], str):
            odd.append(f"{where}[{position}].watermark_url")
            image["watermark_url"] = None
        out.append(image)
    return out


def lenient_task(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of a raw task object whose optional fields all validate; see the module docstring."""
    # Models built in code (TaskData(task_info=TaskInfo(...))) pass their parts as model
    # instances: those are already valid, only raw JSON values are checked here.
    built = {k: v for k, v in raw.items() if hasattr(v, "model_dump")}
    data = {k: v for k, v in raw.items() if k not in built}
    odd: list[str] = []
    task_id = data.get("task_id")
    if _is_int(task_id):
        data["task_id"] = str(task_id)
    if isinstance(data.get("task_id"), str) and len(data["task_id"]) > MAX_ID_CHARS:
        data["task_id"] = None  # fails validation: an id we cannot use is no task at all
    status = data.get("task_status")
    # A missing status means this is not a task at all (validation says so); a present but
    # unknown one is an odd value.
    if "task_status" in data and status not in _STATUSES:
        # Not final, so callers keep polling; the answer says the vendor's word was not understood.
        odd.append("task_status")
        data["task_status"] = "processing"
    if data.get("task_status_msg") is not None and not isinstance(data["task_status_msg"], str):
        odd.append("task_status_msg")
        data["task_status_msg"] = None
    info = data.get("task_info")
    if info is not None and not isinstance(info, dict):
        odd.append("task_info")
        info = None
    info = dict(info or {})
    external = info.get("external_task_id")
    if external is not None and (not isinstance(external, str) or len(external) > MAX_ID_CHARS):
        odd.append("task_info.external_task_id")
        info["external_task_id"] = None
    data["task_info"] = info
    for name in ("created_at", "updated_at"):
        data[name], bad = _timestamp(data.get(name))
        if bad:
            odd.append(name)
    units = data.get("final_unit_deduction")
    if units is not None:
        if _is_int(units) or isinstance(units, float):
            units = str(units)
        if not isinstance(units, str) or not _non_negative_number(units):
            odd.append("final_unit_deduction")
            units = None
        data["final_unit_deduction"] = units
    watermark = data.get("watermark_info")
    if watermark is not None and not (
        isinstance(watermark, dict) and isinstance(watermark.get("enabled"), bool)
    ):
        odd.append("watermark_info")
        data["watermark_info"] = None
    result = data.get("task_result")
    dropped = 0
    if result is not None and not isinstance(result, dict):
        odd.append("task_result")
        result = None
    if result is not None:
        result = dict(result)
        if result.get("result_type") is not None and not isinstance(result["result_type"], str):
            odd.append("task_result.result_type")
            result["result_type"] = None
        for key in ("images", "series_images"):
            images = _images(result.get(key), odd, f"task_result.{key}")
            dropped = max(dropped, len(images) - MAX_RESULT_IMAGES)
            result[key] = images[:MAX_RESULT_IMAGES]
    data["task_result"] = result
    for key in built:
        if key in ("task_info", "task_result", "watermark_info"):
            data[key] = built[key]
    data[ODD_FIELDS_KEY] = odd
    data[DROPPED_IMAGES_KEY] = max(0, dropped)
    return data


def _non_negative_number(text: str) -> bool:
    try:
        number = float(text)
    except ValueError:
        return False
    return 0 <= number < 1e12
