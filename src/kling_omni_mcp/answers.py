"""The answers users see, in plain words: one task model shared by every tool.

``TaskAnswer`` is the structured output of ``create_image``, ``get_task`` and ``wait_for_task``
(its JSON schema is the tools' ``outputSchema``); ``summary()`` renders the short text the model
reads first. ``from_task`` reads a vendor task only through ``TaskData``'s plain-word properties.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from kling_omni_mcp.kling.models import PlainStatus, TaskData

__all__ = ["ImageInfo", "Status", "TaskAnswer", "TaskListAnswer", "TaskSummary", "iso_time"]

Status = PlainStatus


def iso_time(ms: int | None) -> str | None:
    """Vendor milliseconds → ISO 8601 UTC, or None."""
    if ms is None or ms <= 0:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class ImageInfo(BaseModel):
    """One generated image: where it came from and, once saved, where it is on disk."""

    index: int
    url: str  # the vendor's link: it expires after 30 days
    path: str | None = None  # the local file, once saved (stdio only: over HTTP it means nothing)
    # Over HTTP, once saved: a signed download link, or the kling:// resource to read.
    link: str | None = None
    mime_type: str | None = None
    width: int | None = None
    height: int | None = None


class TaskAnswer(BaseModel):
    """A task as the user sees it."""

    task_id: str
    external_task_id: str | None = None
    status: Status
    done: bool = Field(description="True once succeeded or failed.")
    status_message: str | None = None
    model: str | None = None
    simulated: bool = False
    estimated_units: int | None = None
    units_charged: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    images: list[ImageInfo] = Field(default_factory=list)
    waited_seconds: float | None = None
    next_call: str | None = Field(default=None, description="The exact tool call to make next.")
    notes: list[str] = Field(default_factory=list)

    @classmethod
    def from_task(cls, task: TaskData, **extra: object) -> TaskAnswer:
        """Translate a vendor task into plain words; ``extra`` fills the fields the vendor lacks."""
        answer = cls(
            task_id=task.task_id,
            external_task_id=task.external_task_id,
            status=task.plain_status,
            done=task.is_final,
            status_message=task.status_message,
            units_charged=task.units_charged,
            created_at=iso_time(task.created_at),
            updated_at=iso_time(task.updated_at),
            images=[ImageInfo(index=img.index, url=img.url) for img in task.result_images],
        )
        answer = answer.model_copy(update=extra)
        notes = task.vendor_notes  # what the vendor sent that could not be used as is
        return answer.model_copy(update={"notes": [*notes, *answer.notes]}) if notes else answer

    def failure_note(self) -> str:
        """For a failed task: the vendor's reason and what to try instead."""
        reason = self.status_message or "no reason given"
        text = reason.lower()
        if any(word in text for word in ("policy", "safety", "sensitive", "risk", "refus", "violat")):
            advice = "Rephrase the prompt or use other reference images, then call create_image again."
        else:
            advice = (
                "Check the prompt and inputs, then call create_image again (a failed task is not charged)."
            )
        return f"Task {self.task_id} failed: {reason}. {advice}"

    def summary(self) -> str:
        """A few lines for the model: what happened, where the files are, what to do next."""
        tag = "[simulated] " if self.simulated else ""
        head = f"{tag}Task {self.task_id} {self.status}"
        if self.model:
            head += f" ({self.model})"
        lines = [head + "."]
        if self.status == "failed" and self.status_message:
            lines.append(f"Reason: {self.status_message}")
        if self.estimated_units is not None and not self.done:
            lines.append(f"Estimated cost: {self.estimated_units} units.")
        if self.units_charged is not None and self.done:
            lines.append(f"Units charged: {self.units_charged}.")
        if self.waited_seconds is not None and not self.done:
            lines.append(f"Still {self.status} after waiting {self.waited_seconds:.0f} s.")
        saved = [img for img in self.images if img.path or img.link]
        if saved:
            lines.append(f"Saved {len(saved)} image(s):")
            lines.extend(f"  [{img.index}] {img.path or img.link}" for img in saved)
        unsaved = [img for img in self.images if not (img.path or img.link)]
        if unsaved:
            lines.append(f"{len(unsaved)} image(s) not saved locally yet (URLs in the structured result).")
        lines.extend(self.notes)
        if self.next_call:
            lines.append(f"Next: {self.next_call}")
        return "\n".join(lines)


class TaskSummary(BaseModel):
    """One line of ``list_tasks``."""

    task_id: str
    external_task_id: str | None = None
    status: Status
    created_at: str | None = None
    image_count: int = 0
    paths: list[str] = Field(default_factory=list)  # stdio only: the saved files
    # The saved images: kling:// resource URIs (signed download links over HTTP with a public URL).
    links: list[str] = Field(default_factory=list)


class TaskListAnswer(BaseModel):
    """A page of recent tasks, newest first."""

    page: int
    page_size: int
    simulated: bool = False
    tasks: list[TaskSummary] = Field(default_factory=list)

    def summary(self) -> str:
        tag = "[simulated] " if self.simulated else ""
        if not self.tasks:
            return f"{tag}No tasks on page {self.page}."
        lines = [f"{tag}{len(self.tasks)} task(s) on page {self.page}:"]
        for t in self.tasks:
            count = len(t.links or t.paths)
            saved = f", {count} saved" if count else ""
            lines.append(f"  {t.task_id} {t.status}, {t.image_count} image(s){saved}")
        return "\n".join(lines)
