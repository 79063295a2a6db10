"""The spending settings as hosts pass them, and the UTC day the ledger counts in."""

from __future__ import annotations

import datetime as dt

import pytest

from kling_omni_mcp.budget import DayBudget, Spending, utc_day
from kling_omni_mcp.config import SettingsError, load_settings
from kling_omni_mcp.kling.models import CreateImageRequest
from kling_omni_mcp.ledger import FileLedger

UTC_PLUS_8 = dt.timezone(dt.timedelta(hours=8))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", None), ("  ", None), ("${user_config.max_units_per_day}", None), ("200", 200), ("200.0", 200)],
)
def test_budget_settings_as_a_bundle_passes_them(
    raw: str, expected: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KLING_MAX_UNITS_PER_DAY", raw)
    monkeypatch.setenv("KLING_CONFIRM_ABOVE_UNITS", raw)
    settings = load_settings()
    assert settings.max_units_per_day == expected and settings.confirm_above_units == expected


def test_a_zero_daily_budget_is_refused_with_the_variable_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLING_MAX_UNITS_PER_DAY", "0")
    with pytest.raises(SettingsError, match="KLING_MAX_UNITS_PER_DAY"):
        load_settings()


@pytest.mark.parametrize(
    ("now", "day", "resets"),
    [
        (dt.datetime(2026, 11, 30, 23, 30, tzinfo=dt.UTC), "2026-11-30", "in 0 h 30 min"),
        (dt.datetime(2026, 12, 1, 0, 0, 1, tzinfo=dt.UTC), "2026-12-01", "in 23 h 59 min"),
        # 01:00 in UTC+8 is still the previous UTC day
        (
            dt.datetime(2026, 12, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=8))),
            "2026-11-30",
            "in 7 h 00 min",
        ),
    ],
)
@pytest.mark.anyio
async def test_days_are_utc_and_the_reset_is_utc_midnight(
    now: dt.datetime, day: str, resets: str, tmp_path: object
) -> None:
    assert utc_day(now) == day
    spending = Spending(None, max_units_per_day=10, now=lambda: now)
    budget = await spending.today()
    assert budget == DayBudget(day, 0, 10, f"00:00 UTC ({resets})")


@pytest.mark.anyio
async def test_yesterdays_units_do_not_count_today(tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    ledger = FileLedger(folder)
    assert ledger.reserve("2026-11-29", "old-task", 10, 10).accepted
    clock = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)
    spending = Spending(ledger, max_units_per_day=10, now=lambda: clock)
    request = CreateImageRequest(prompt="x", n=1, external_task_id="new-task")
    async with spending.guard(request, 8) as notes:
        pass
    assert notes == [
        "Estimated cost: 8 units.",
        "Daily budget (KLING_MAX_UNITS_PER_DAY): 8 of 10 units used today, 2 left; "
        "it resets at 00:00 UTC (in 16 h 00 min).",
    ]
