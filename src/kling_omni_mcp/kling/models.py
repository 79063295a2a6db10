"""Wire-format models of the Omni-Image API, spelled exactly as the vendor spells them.

These mirror ``../shared/reference/kling-api.md`` field for field (including the status word
``succeed``). The rest of the project speaks plain words: ``TaskData`` answers ``is_final``,
``succeeded``, ``plain_status``, ``status_message`` and ``units_charged``, so no vendor spelling
or field name is read outside ``kling/`` (and the simulator).
Element ids exceed 2**53, so they are Python ``int`` end to end and leave as exact JSON integers.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kling_omni_mcp.kling.capabilities import DEFAULT_MODEL, AspectRatio, ModelName, Resolution, ResultType
from kling_omni_mcp.kling.errors import KlingValidationError
from kling_omni_mcp.kling.lenient import MAX_RESULT_IMAGES, lenient_task

__all__ = [
    "OMNI_IMAGE_PATH",
    "AspectRatio",
    "CreateImageRequest",
    "ElementRef",
    "ImageRef",
    "ModelName",
    "PlainStatus",
    "Resolution",
    "ResultType",
    "TaskData",
    "TaskImage",
    "TaskInfo",
    "TaskResult",
    "TaskStatus",
    "WatermarkInfo",
    "task_path",
]

#: Where tasks are created (POST) and listed (GET); one task is at ``task_path(id)``.
OMNI_IMAGE_PATH = "/v1/images/omni-image"


def task_path(task_id: str) -> str:
    """The path of one task: ``task_id`` as one escaped segment, so ``../x`` or ``a/b`` can never
    change the path."""
    if not isinstance(task_id, str) or not task_id.strip():
        raise KlingValidationError("task_id", task_id, "must be a non-empty task id or external task id")
    segment = quote(task_id, safe="")
    if set(segment) == {"."}:
        # "." and ".." survive quote() and would be folded away as dot segments by URL handling.
        segment = segment.replace(".", "%2E")
    return f"{OMNI_IMAGE_PATH}/{segment}"


TaskStatus = Literal["submitted", "processing", "succeed", "failed"]
#: A task's status in plain words, as every answer shows it.
PlainStatus = Literal["submitted", "processing", "succeeded", "failed"]

_PLAIN_STATUS: dict[str, PlainStatus] = {
    "submitted": "submitted",
    "processing": "processing",
    "succeed": "succeeded",
    "failed": "failed",
}


class _Wire(BaseModel):
    # Answers may grow new fields; requests we build ourselves never carry unknown ones.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ImageRef(_Wire):
    """One entry of ``image_list``: an http(s) URL or a bare Base64 string."""

    image: str


class ElementRef(_Wire):
    """One entry of ``element_list``; the id is a 64-bit integer (beyond 2**53)."""

    element_id: int


class WatermarkInfo(_Wire):
    enabled: bool


class CreateImageRequest(_Wire):
    """Body of ``POST /v1/images/omni-image``. Rules are checked in ``kling.rules``."""

    model_name: ModelName = DEFAULT_MODEL
    prompt: str
    image_list: list[ImageRef] | None = None
    element_list: list[ElementRef] | None = None
    resolution: Resolution = "1k"
    result_type: ResultType = "single"
    n: int = 1
    series_amount: int | Literal["auto"] | None = None
    aspect_ratio: AspectRatio = "auto"
    watermark_info: WatermarkInfo | None = None
    callback_url: str | None = None
    external_task_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The JSON body to send: unset optional fields are left out, ints stay exact."""
        return self.model_dump(mode="json", exclude_none=True)


class TaskInfo(_Wire):
    external_task_id: str | None = None


class TaskImage(_Wire):
    index: int = 0
    url: str
    watermark_url: str | None = None


class TaskResult(_Wire):
    result_type: str | None = None
    images: list[TaskImage] = Field(default_factory=list)
    series_images: list[TaskImage] = Field(default_factory=list)


class TaskData(_Wire):
    """``data`` of a create, query, list item or callback body."""

    task_id: str
    task_status: TaskStatus
    task_status_msg: str | None = None
    task_info: TaskInfo = Field(default_factory=TaskInfo)
    task_result: TaskResult | None = None
    watermark_info: WatermarkInfo | None = None
    final_unit_deduction: str | None = None
    created_at: int | None = None
    updated_at: int | None = None
    #: Fields the vendor sent with values this server cannot use; they read as unknown (None).
    odd_fields: list[str] = Field(default_factory=list, exclude=True)
    #: Images beyond the API's maximum of 9 that were dropped from the answer.
    images_dropped: int = Field(default=0, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _lenient(cls, value: Any) -> Any:
        # An odd optional field must not make the whole task unreadable (see kling.lenient).
        return lenient_task(value) if isinstance(value, dict) else value

    @property
    def vendor_notes(self) -> list[str]:
        """Sentences for the answer about what the vendor sent that could not be used as is."""
        notes = []
        if self.odd_fields:
            notes.append(
                "The Kling API sent values this server could not read for "
                f"{', '.join(self.odd_fields[:5])}{', ...' if len(self.odd_fields) > 5 else ''}; "
                "they are shown as unknown."
            )
        if self.images_dropped:
            notes.append(
                f"The Kling API listed {self.images_dropped + MAX_RESULT_IMAGES} images, more than the "
                f"{MAX_RESULT_IMAGES} a task can make: kept the first {MAX_RESULT_IMAGES}."
            )
        return notes

    @property
    def external_task_id(self) -> str | None:
        return self.task_info.external_task_id

    @property
    def plain_status(self) -> PlainStatus:
        """The status in plain words (``succeed`` → ``succeeded``)."""
        return _PLAIN_STATUS.get(self.task_status, "processing")

    @property
    def is_final(self) -> bool:
        """True once the task succeeded or failed: it will not change again."""
        return self.plain_status in ("succeeded", "failed")

    @property
    def succeeded(self) -> bool:
        """True when the task finished with images."""
        return self.plain_status == "succeeded"

    @property
    def status_message(self) -> str | None:
        """The vendor's reason (for a failure), or None when it gave none."""
        return self.task_status_msg or None

    @property
    def units_charged(self) -> str | None:
        """What the task cost, as the vendor reports it (a decimal string)."""
        return self.final_unit_deduction

    @property
    def result_images(self) -> list[TaskImage]:
        """The generated images: ``series_images`` for a series task, ``images`` otherwise."""
        if self.task_result is None:
            return []
        if self.task_result.result_type == "series" or (
            self.task_result.series_images and not self.task_result.images
        ):
            return list(self.task_result.series_images)
        return list(self.task_result.images)
