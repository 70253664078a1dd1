"""The entries' APScheduler triggers, and the cron trigger that fires a time skipped by a
spring-forward change at the end of the gap. Imported where fire times are computed: APScheduler
(and the asyncio it imports) is a twentieth of a second that loading the config does not need."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

from apscheduler.triggers.cron import CronTrigger


class GapAwareCronTrigger(CronTrigger):
    """A CronTrigger that fires a wall-clock time skipped by a spring-forward change at the end
    of the gap (APScheduler 3 would fire it an hour past the gap's end)."""

    def get_next_fire_time(self, previous_fire_time, now):  # type: ignore[no-untyped-def]
        fire = super().get_next_fire_time(previous_fire_time, now)
        if fire is None or _exists(fire):
            return fire
        return _gap_end(fire)


def _exists(moment: datetime) -> bool:
    naive = moment.replace(tzinfo=None)
    return moment.astimezone(UTC).astimezone(moment.tzinfo).replace(tzinfo=None) == naive


def _gap_end(moment: datetime) -> datetime:
    """The first valid instant after a wall-clock time that does not exist."""
    tz: tzinfo = moment.tzinfo  # type: ignore[assignment]
    late = moment.astimezone(UTC)                      # somewhere after the transition
    early = late - timedelta(hours=3)
    while late - early > timedelta(seconds=1):         # the transition instant, to the second
        mid = early + (late - early) / 2
        if mid.astimezone(tz).utcoffset() == late.astimezone(tz).utcoffset():
            late = mid
        else:
            early = mid
    return late.replace(microsecond=0).astimezone(tz)
