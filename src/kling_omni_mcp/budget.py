"""Spending guards around each create: the daily ceiling and the confirmation above a threshold.

``Spending.guard`` runs where a create's estimate is known and before anything is sent:

1. ``KLING_MAX_UNITS_PER_DAY``: refuse when today's (UTC) booked units plus this estimate would
   pass the ceiling;
2. ``KLING_CONFIRM_ABOVE_UNITS``: above it, ask through the caller's ``confirm`` callback (the MCP
   layer elicits the user); no callback, or no confirmation, creates nothing;
3. book the units in the ledger atomically (the ceiling is checked again under the ledger's
   lock, so two concurrent creates cannot both pass it), run the create, and release the units
   if the create fails.

Refusals are ``SpendingRefusal``; their messages say what was spent, what is left, and when the
day resets.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio.to_thread

from kling_omni_mcp.kling.models import CreateImageRequest
from kling_omni_mcp.ledger import Ledger

__all__ = [
    "ConfirmFn",
    "CreateNotConfirmedError",
    "DayBudget",
    "Spending",
    "SpendingRefusal",
    "describe_request",
    "utc_day",
]

#: ``confirm(units, summary)``: True when the user agrees to spend ``units`` on ``summary``.
ConfirmFn = Callable[[int, str], Awaitable[bool]]

_SUMMARY_PROMPT_CHARS = 200


class SpendingRefusal(Exception):
    """A create refused by a spending setting before anything was sent to the vendor."""


class CreateNotConfirmedError(SpendingRefusal):
    """The user declined (or cancelled) the confirmation: nothing was created."""


def utc_day(now: dt.datetime) -> str:
    """The UTC calendar day of ``now``, as the ledger keys it (``YYYY-MM-DD``)."""
    return now.astimezone(dt.UTC).date().isoformat()


def _reset_text(now: dt.datetime) -> str:
    utc = now.astimezone(dt.UTC)
    midnight = dt.datetime.combine(utc.date() + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    minutes = max(1, int((midnight - utc).total_seconds() // 60))
    return f"00:00 UTC (in {minutes // 60} h {minutes % 60:02d} min)"


def describe_request(request: CreateImageRequest) -> str:
    """One line a person can check before paying: model, size, count and the prompt's start."""
    images = request.series_amount if request.result_type == "series" else request.n
    inputs = len(request.image_list or []) + len(request.element_list or [])
    prompt = request.prompt if len(request.prompt) <= _SUMMARY_PROMPT_CHARS else request.prompt[:197] + "..."
    kind = "series" if request.result_type == "series" else "image(s)"
    return (
        f"{request.model_name}, {request.resolution}, {images} {kind}, aspect {request.aspect_ratio}, "
        f"{inputs} reference input(s); prompt: {prompt!r}"
    )


@dataclass(frozen=True)
class DayBudget:
    """Today's spending as the ledger sees it."""

    day: str
    spent: int
    ceiling: int | None
    resets: str

    @property
    def left(self) -> int | None:
        return None if self.ceiling is None else max(self.ceiling - self.spent, 0)

    def sentence(self) -> str:
        """Today's figures in one sentence."""
        if self.ceiling is None:
            return f"Estimated units created today (UTC): {self.spent}; no daily budget is set."
        return (
            f"Daily budget (KLING_MAX_UNITS_PER_DAY): {self.spent} of {self.ceiling} units used today, "
            f"{self.left} left; it resets at {self.resets}."
        )


class Spending:
    """The spending settings plus the ledger they count in."""

    def __init__(
        self,
        ledger: Ledger | None,
        *,
        max_units_per_day: int | None = None,
        confirm_above_units: int | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.ledger = ledger
        self.max_units_per_day = max_units_per_day
        self.confirm_above_units = confirm_above_units
        self._now = now

    async def today(self) -> DayBudget:
        """What the ledger holds for today (UTC)."""
        now = self._now()
        day = utc_day(now)
        spent = await anyio.to_thread.run_sync(self.ledger.spent, day) if self.ledger else 0
        return DayBudget(day, spent, self.max_units_per_day, _reset_text(now))

    def _over_budget(self, units: int, budget: DayBudget) -> SpendingRefusal:
        return SpendingRefusal(
            f"create_image was refused by the daily budget: this request is estimated at {units} units, "
            f"and {budget.spent} of the {budget.ceiling} units allowed per UTC day (KLING_MAX_UNITS_PER_DAY) "
            f"are already used, so {budget.left} are left. Nothing was sent and nothing was charged. "
            f"The budget resets at {budget.resets}. Ask for fewer images (n, series_amount) or a lower "
            "resolution, wait for the reset, or ask whoever runs this server to raise "
            "KLING_MAX_UNITS_PER_DAY."
        )

    async def _confirm(self, units: int, summary: str, confirm: ConfirmFn | None) -> None:
        threshold = self.confirm_above_units
        if threshold is None or units <= threshold:
            return
        if confirm is None:
            raise SpendingRefusal(
                f"This create is estimated at {units} units, above KLING_CONFIRM_ABOVE_UNITS={threshold}, so "
                "the server must ask the user to confirm it, but this client cannot show a confirmation "
                "(it does not support MCP elicitation). Nothing was created. Ask for fewer images or a lower "
                "resolution (at most the threshold), use a client that supports elicitation, or ask whoever "
                "runs this server to raise or unset KLING_CONFIRM_ABOVE_UNITS."
            )
        if not await confirm(units, summary):
            raise CreateNotConfirmedError(
                f"The user did not confirm spending {units} units (declined or cancelled), so nothing was "
                "created and nothing was charged. Do not retry unless the user asks for it."
            )

    @asynccontextmanager
    async def guard(
        self, request: CreateImageRequest, units: int, confirm: ConfirmFn | None = None
    ) -> AsyncIterator[list[str]]:
        """Check, confirm and book ``units`` for ``request``; yield the notes for the answer.

        The body of the ``async with`` sends the create; if it raises, the units are released.
        """
        budget = await self.today()
        if budget.ceiling is not None and budget.spent + units > budget.ceiling:
            raise self._over_budget(units, budget)
        await self._confirm(units, describe_request(request), confirm)
        key = request.external_task_id or ""
        if self.ledger is not None:
            booked = await anyio.to_thread.run_sync(
                self.ledger.reserve, budget.day, key, units, self.max_units_per_day
            )
            if not booked.accepted:  # another create got there first
                now_full = DayBudget(budget.day, booked.spent_before, budget.ceiling, budget.resets)
                raise self._over_budget(units, now_full)
            budget = DayBudget(budget.day, booked.spent_before + units, budget.ceiling, budget.resets)
        notes = [f"Estimated cost: {units} units."]
        if budget.ceiling is not None:
            notes.append(budget.sentence())
        try:
            yield notes
        except Exception:
            # A refused or failed create releases its units. A cancelled one keeps them: it may
            # have reached the vendor, and counting too much is the safe side of a ceiling.
            if self.ledger is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self.ledger.release, budget.day, key)
            raise
