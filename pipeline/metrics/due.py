"""The latest time a timetable entry fell due: what its last fire should have been.

`DueTimes` keeps each entry's answer until its next fire time: scrapes every few seconds ask the
trigger (a few hundred microseconds per fire time) once per fire, not once per scrape.

APScheduler's triggers only look forward, so this looks forward from ever further back (an hour, a
day, a month, a year, ten years) until a window holds a fire time that has come. An `every:`
entry fires once per interval, so one interval back is enough.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pipeline.timetable.entries import Entry, fire_times, parse_duration

_WINDOWS = (timedelta(hours=1), timedelta(days=1), timedelta(days=32), timedelta(days=367),
            timedelta(days=3660))
_MOST = 1024     # fire times asked for at once


class DueTimes:
    """`last_due` of the entries of one timetable (by name), each kept until the entry's next fire
    time. Two scrapes at once may both work out the same answer; nothing worse."""

    def __init__(self, default_tz: str) -> None:
        self.default_tz = default_tz
        self._kept: dict[str, tuple[datetime | None, datetime | None]] = {}

    def last_due(self, entry: Entry, now: datetime) -> datetime | None:
        """The latest fire time of `entry` at or before `now`."""
        due, until = self._kept.get(entry.name, (None, now))
        if until is not None and now >= until:
            due = last_due(entry, self.default_tz, now)
            after = fire_times(entry, self.default_tz, now, 1)
            self._kept[entry.name] = (due, after[0] if after else None)
        return due


def last_due(entry: Entry, default_tz: str, now: datetime) -> datetime | None:
    """The latest fire time of `entry` at or before `now`; None if it has never fallen due (an
    `at:` still ahead, or nothing within ten years)."""
    if entry.every:
        return _latest(entry, default_tz, now - parse_duration(entry.every), now)
    for window in _WINDOWS:
        found = _latest(entry, default_tz, now - window, now)
        if found is not None:
            return found
    return None


def _latest(entry: Entry, default_tz: str, start: datetime, now: datetime) -> datetime | None:
    """The last fire time in (start, now], read forward a few at a time (a weekly entry looked
    at from an hour back needs one fire time, not hundreds), more at a time as they keep coming."""
    found, count = None, 4
    while True:
        batch = fire_times(entry, default_tz, start, count)
        come = [t for t in batch if t <= now]
        if come:
            found = come[-1]
        if len(come) < count:
            return found
        start, count = come[-1], min(count * 4, _MOST)
