"""The timetable in config.yaml: entries, their triggers, and the times they fire.

An entry fires on a 5-field `cron` expression, once `at` a date-time, or `every` interval. Times
are wall-clock times in the entry's time zone. Across daylight-saving changes: a time that happens
twice (fall back) is listed once (APScheduler 3 fires it twice; the ledger sends once), and a
time that does not exist (spring forward) fires once, at the first valid time after it (the end
of the gap: 02:30 on the night clocks jump from 02:00 to 03:00 fires at 03:00).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.fields import RANGE, date_in_range, out_of_range, year_out_of_range

# APScheduler is imported where a trigger is made (`Entry.trigger`, in `triggers.py`) or a cron
# expression is not one `_plain_cron` can vouch for: every command loads the config, few of them
# compute fire times.
if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)", re.I)
_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_LONGEST = timedelta(days=3653)
# Intervals count from a fixed point, so `every: 6h` fires at the same times after a restart.
_ANCHOR = datetime(2020, 1, 6)


# `_plain_cron`: crontab's fields in order, each one's range as APScheduler 3 numbers it (0 is
# Monday), and its names.
_CRON_FIELDS = ((0, 59, ()), (0, 23, ()), (1, 31, ()),
                (1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
                (0, 6, ("mon", "tue", "wed", "thu", "fri", "sat", "sun")))
_CRON_ALL = re.compile(r"\*(?:/([0-9]+))?")
_CRON_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?(?:/([0-9]+))?")
_CRON_NAMES = re.compile(r"([a-z]{3})(?:-([a-z]{3}))?", re.I | re.A)


def _plain_cron(expression: str) -> bool:
    """True if every field of the 5-field `expression` is a comma-separated list of `*`, `*/S`,
    `N`, `N-M`, `N-M/S`, `N/S` or (months, weekdays) `NAME` and `NAME-NAME`, each within its
    field's range as APScheduler checks it: a strict subset of what `CronTrigger.from_crontab`
    accepts (tests/test_cron_check.py compares the two), decided without importing it. False
    means "ask APScheduler", which accepts more (`last`, `1st mon`, `0-0/5`) and words the error."""
    for text, (low, high, names) in zip(expression.split(), _CRON_FIELDS, strict=True):
        for item in text.split(","):
            if every := _CRON_ALL.fullmatch(item):
                step = every.group(1)
                if step is not None and not 1 <= int(step) <= high - low:
                    return False
            elif numbers := _CRON_RANGE.fullmatch(item):
                first, last, step = numbers.groups()
                if not _plain_range(int(first), None if last is None else int(last),
                                    None if step is None else int(step), low, high):
                    return False
            elif names and (named := _CRON_NAMES.fullmatch(item)):
                first, last = (n.lower() if n else None for n in named.groups())
                if first not in names or (last is not None and last not in names):
                    return False
                # A month's number is its index + 1 (its field starts at 1), a weekday's its index.
                if not _plain_range(names.index(first) + low,
                                    None if last is None else names.index(last) + low, None, low, high):
                    return False
            else:
                return False
    return True


def _plain_range(first: int, last: int | None, step: int | None, low: int, high: int) -> bool:
    """`first[-last][/step]` within low..high, ascending, its step at most its span."""
    end = high if last is None else last
    if not low <= first <= end <= high:
        return False
    return step is None or 1 <= step <= end - first


def parse_duration(text: str) -> timedelta:
    """"90s", "15m", "6h", "1h30m", "2d", "1w" -> timedelta. Raises ValueError naming the forms,
    or the limit (ten years) for a longer one."""
    compact = str(text).replace(" ", "").lower()
    parts = _DURATION.findall(compact)
    if not compact or not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{text!r} is not a duration; write e.g. 90s, 15m, 6h, 1h30m, 2d or 1w")
    seconds = sum(float(n) * _SECONDS[u] for n, u in parts)
    # `now - max_lateness` or an interval of centuries overflows a date-time (or timedelta itself).
    if seconds > _LONGEST.total_seconds():
        raise ValueError(f"{text!r} is too long; at most 10 years ({_LONGEST.days}d)")
    return timedelta(seconds=seconds)


class Entry(BaseModel):
    """One line of the timetable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    channels: list[str] = Field(min_length=1)
    cron: str | None = None
    at: datetime | None = None
    every: str | None = None
    edition: Literal["digest", "latest", "queue"] = "latest"
    max_lateness: str = "1h"
    timezone: str | None = None

    @model_validator(mode="after")
    def _one_trigger(self) -> Entry:
        given = [k for k in ("cron", "at", "every") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"entry {self.name!r}: give exactly one of cron:, at: or every: "
                             f"(got {', '.join(given) or 'none'})")
        return self

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v!r}; use an IANA name such as Europe/Paris") from None
        return v

    @field_validator("max_lateness", "every")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @field_validator("every")
    @classmethod
    def _positive(cls, v: str | None) -> str | None:
        if v is not None and not parse_duration(v):
            raise ValueError(f"{v!r} is no interval; give one of at least 1s")
        return v

    @field_validator("at", mode="before")
    @classmethod
    def _at_year(cls, v: object) -> object:
        # A year `datetime` cannot hold (99999) would read as a malformed date-time.
        if isinstance(v, str) and year_out_of_range(v):
            raise ValueError(f"{v.strip()} is outside {RANGE}")
        return v

    @field_validator("at")
    @classmethod
    def _at_in_range(cls, v: datetime | None) -> datetime | None:
        # Fire times and `run --once` do date-time arithmetic on it: year 1 minus a week overflows.
        if v is not None and not date_in_range(v):
            raise ValueError(out_of_range(v))
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None:
            if len(v.split()) != 5:
                raise ValueError(f"cron {v!r} must have 5 fields: minute hour day-of-month month day-of-week")
            if not _plain_cron(v):
                from apscheduler.triggers.cron import CronTrigger

                try:
                    CronTrigger.from_crontab(v, timezone=UTC)
                except ValueError as exc:
                    raise ValueError(f"cron {v!r} is not valid ({exc})") from None
        return v

    @property
    def lateness(self) -> timedelta:
        return parse_duration(self.max_lateness)

    def zone(self, default: str) -> ZoneInfo:
        return ZoneInfo(self.timezone or default)

    def trigger(self, default_tz: str) -> BaseTrigger:
        """The APScheduler trigger of this entry."""
        from apscheduler.triggers.date import DateTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        from pipeline.timetable.triggers import GapAwareCronTrigger

        tz = self.zone(default_tz)
        if self.cron:
            return GapAwareCronTrigger.from_crontab(self.cron, timezone=tz)
        if self.at:
            return DateTrigger(run_date=self.at if self.at.tzinfo else self.at.replace(tzinfo=tz))
        return IntervalTrigger(seconds=parse_duration(self.every or "").total_seconds(),
                               start_date=_ANCHOR.replace(tzinfo=tz), timezone=tz)


def fire_times(entry: Entry, default_tz: str, after: datetime, count: int) -> list[datetime]:
    """The next `count` distinct wall-clock fire times after `after`, in the entry's time zone (a
    time repeated by a fall-back change is listed once)."""
    trigger = entry.trigger(default_tz)
    tz = entry.zone(default_tz)
    out: list[datetime] = []
    previous, now = None, (after.astimezone(UTC) + timedelta(microseconds=1)).astimezone(tz)
    while len(out) < count:
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None:
            break
        if not out or fire.replace(tzinfo=None) != out[-1].replace(tzinfo=None):
            out.append(fire)
        # In UTC: wall-clock arithmetic would loop on a repeated (fall-back) hour.
        previous, now = fire, (fire.astimezone(UTC) + timedelta(microseconds=1)).astimezone(tz)
    return out


def last_fire_within(entry: Entry, default_tz: str, now: datetime) -> datetime | None:
    """The latest fire time in (now - max_lateness, now], if any: what `run --once` runs."""
    start = now - entry.lateness
    times = [t for t in fire_times(entry, default_tz, start, 1000) if t <= now]
    return times[-1] if times else None


ScheduleKind = Literal["digest", "latest", "queue"]
