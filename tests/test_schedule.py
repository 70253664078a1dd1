"""The timetable: validation with the entry's name, DST-correct fire times, `pipeline schedule`."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.timetable.entries import Entry, fire_times, last_fire_within, parse_duration

pytestmark = pytest.mark.state_backends     # each test on SQLite and on PostgreSQL

NY = ZoneInfo("America/New_York")


def entry(**kw) -> Entry:  # type: ignore[no-untyped-def]
    return Entry(**{"name": "e", "channels": ["outbox"], **kw})


def test_fall_back_time_is_listed_once():
    start = datetime(2026, 10, 31, 12, tzinfo=NY)
    fires = fire_times(entry(cron="30 1 * * *"), "America/New_York", start, 3)
    assert [f.isoformat() for f in fires] == [
        "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00", "2026-11-03T01:30:00-05:00"]


def test_spring_forward_time_is_listed_once_at_the_end_of_the_gap():
    start = datetime(2026, 3, 7, 12, tzinfo=NY)
    fires = fire_times(entry(cron="30 2 * * *"), "America/New_York", start, 3)
    assert [f.isoformat() for f in fires] == [
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"]


def test_entry_time_zone_overrides_the_default_and_every_and_at_work():
    paris = fire_times(entry(cron="0 9 * * *", timezone="Europe/Paris"), "America/New_York",
                       datetime(2026, 6, 1, tzinfo=ZoneInfo("UTC")), 1)
    assert paris[0].isoformat() == "2026-06-01T09:00:00+02:00"
    every = fire_times(entry(every="6h"), "UTC", datetime(2026, 1, 1, 1, tzinfo=ZoneInfo("UTC")), 3)
    assert [f.hour for f in every] == [6, 12, 18]
    once = fire_times(entry(at=datetime(2026, 12, 1, 9, tzinfo=NY)), "UTC",
                      datetime(2026, 1, 1, tzinfo=NY), 3)
    assert [f.isoformat() for f in once] == ["2026-12-01T09:00:00-05:00"]


def test_fire_times_are_strictly_after_the_start():
    fires = fire_times(entry(every="6h"), "UTC", datetime(2026, 1, 1, 12, tzinfo=ZoneInfo("UTC")), 1)
    assert fires[0].hour == 18


def test_last_fire_within_max_lateness():
    weekly = entry(cron="0 9 * * mon", max_lateness="6h")
    assert last_fire_within(weekly, "America/New_York", datetime(2026, 11, 30, 14, tzinfo=NY)) == \
        datetime(2026, 11, 30, 9, tzinfo=NY)
    assert last_fire_within(weekly, "America/New_York", datetime(2026, 11, 30, 16, tzinfo=NY)) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("90s", timedelta(seconds=90)), ("1h30m", timedelta(minutes=90)), ("2d", timedelta(days=2)),
    ("1w", timedelta(weeks=1))])
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["6 hours", "h", "", "5x", "1h 30"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match=r"not a duration; write e\.g\. 90s"):
        parse_duration(text)


def _config(project, schedule: str):  # type: ignore[no-untyped-def]
    path = project / "config.yaml"
    path.write_text(path.read_text(encoding="utf-8") + schedule, encoding="utf-8")
    return path


@pytest.mark.parametrize(("schedule", "message"), [
    ('schedule:\n  - {name: weekly, channels: [outbox], cron: "0 9 * mon"}\n',
     "schedule.0.cron: entry 'weekly': cron '0 9 * mon' must have 5 fields"),
    ('schedule:\n  - {name: weekly, channels: [outbox], cron: "0 25 * * *"}\n',
     "schedule.0.cron: entry 'weekly': cron '0 25 * * *' is not valid"),
    ("schedule:\n  - {name: slots, channels: [outbox], every: 6 hours}\n",
     "schedule.0.every: entry 'slots': '6 hours' is not a duration"),
    ('schedule:\n  - {name: w, channels: [outbox], cron: "0 9 * * *", timezone: Mars/Base}\n',
     "entry 'w': unknown time zone 'Mars/Base'; use an IANA name"),
    ('schedule:\n  - {name: w, channels: [outbox], cron: "0 9 * * *", max_lateness: soon}\n',
     "entry 'w': 'soon' is not a duration"),
    ("schedule:\n  - {name: w, channels: [pigeon], every: 1h}\n",
     "entry 'w': unknown channel 'pigeon' (configured: outbox)"),
    ("schedule:\n  - {name: w, channels: [outbox], every: 1h}\n"
     "  - {name: w, channels: [outbox], every: 2h}\n",
     "two entries are named 'w'; give each a unique name"),
    ("schedule:\n  - {name: w, channels: [outbox], at: 0001-01-01T00:00:00}\n",
     "schedule.0.at: entry 'w': 0001-01-01T00:00:00 is outside 1970-2200"),
    ('schedule:\n  - {name: w, channels: [outbox], at: "0001-01-01T00:00:00+05:00"}\n',
     "schedule.0.at: entry 'w': 0001-01-01T00:00:00+05:00 is outside 1970-2200"),
    ("schedule:\n  - {name: w, channels: [outbox], at: 9999-12-31T23:59:59-05:00}\n",
     "schedule.0.at: entry 'w': 9999-12-31T23:59:59-05:00 is outside 1970-2200"),
    ("schedule:\n  - {name: w, channels: [outbox], at: 99999-01-01T00:00:00}\n",
     "schedule.0.at: entry 'w': 99999-01-01T00:00:00 is outside 1970-2200"),
    ("schedule:\n  - {name: w, channels: [outbox], every: 1h, max_lateness: 999999999w}\n",
     "schedule.0.max_lateness: entry 'w': '999999999w' is too long; at most 10 years"),
    ("schedule:\n  - {name: w, channels: [outbox], every: 5000000w}\n",
     "schedule.0.every: entry 'w': '5000000w' is too long; at most 10 years"),
    ("schedule:\n  - {name: w, channels: [outbox], every: 0s}\n",
     "schedule.0.every: entry 'w': '0s' is no interval"),
    ('schedule:\n  - {name: w, channels: [outbox], every: 1h, cron: "0 9 * * *"}\n',
     "give exactly one of cron:, at: or every: (got cron, every)"),
])
def test_bad_entries_are_config_errors_naming_the_entry(project, schedule, message):
    with pytest.raises(ConfigError) as err:
        load_config(_config(project, schedule))
    assert message in str(err.value)


def test_schedule_command_lists_fires_across_dst_as_json(project, run_cli):
    path = _config(project, 'schedule:\n  - {name: nightly, channels: [outbox], cron: "30 1 * * *"}\n'
                            '  - {name: spring, channels: [outbox], cron: "30 2 * * *", edition: queue}\n')
    fall = run_cli("--config", path, "schedule", "--next", "2", "--from", "2026-10-31T12:00:00-04:00",
                   "--json")
    assert fall.returncode == 0, fall.stderr
    assert json.loads(fall.stdout) == [
        {"name": "nightly", "fires": ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]},
        {"name": "spring", "fires": ["2026-11-01T02:30:00-05:00", "2026-11-02T02:30:00-05:00"]}]
    spring = run_cli("--config", path, "schedule", "--next", "1", "--from", "2026-03-07T12:00:00-05:00")
    assert "Sun 2026-03-08 03:00 EDT (07:00Z)" in spring.stdout
    assert "Sun 2026-03-08 01:30 EST (06:30Z)" in spring.stdout


def test_schedule_shows_what_each_entry_would_send(project, run_cli):
    path = _config(project, "schedule:\n  - {name: latest, channels: [outbox], every: 1h, edition: latest}\n"
                            "  - {name: queue, channels: [outbox], every: 1h, edition: queue}\n")
    result = run_cli("--config", path, "schedule", "--next", "1", env={"COLUMNS": "250"})
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│ latest" in line
            or "│ queue" in line}
    assert "mood-journal" in rows["latest"]
    assert "2020-09-01-ketamine-neurological-damage" in rows["queue"]
    publish = run_cli("--config", path, "publish", "2020-09-01-ketamine-neurological-damage")
    assert publish.returncode == 0, publish.stderr
    after = run_cli("--config", path, "schedule", "--next", "1", env={"COLUMNS": "250"})
    queue_row = next(line for line in after.stdout.splitlines() if "│ queue" in line)
    assert "2024-03-12-your-first-infusion" in queue_row


def test_schedule_from_without_offset_is_a_one_line_error(project, run_cli):
    result = run_cli("--config", _config(project, ""), "schedule", "--from", "2026-01-01T00:00:00")
    assert result.returncode == 1
    assert "--from '2026-01-01T00:00:00': give an offset" in result.stderr
    assert "Traceback" not in result.stderr


def test_at_inside_the_range_is_kept():
    assert entry(at=datetime(2199, 12, 31, 12, tzinfo=NY)).at == datetime(2199, 12, 31, 12, tzinfo=NY)
    assert entry(at=datetime(1970, 1, 2)).at == datetime(1970, 1, 2)


def test_schedule_and_run_once_with_an_entry_at_year_1_stop_on_one_line(project, run_cli):
    path = _config(project, "schedule:\n"
                            "  - {name: once, channels: [outbox], at: 0001-01-01T00:00:00+05:00}\n")
    for command in (["schedule"], ["run", "--once", "--dry-run"], ["check"]):
        result = run_cli("--config", path, *command)
        assert result.returncode == 1, result
        assert "Traceback" not in result.stderr
        [line] = result.stderr.splitlines()
        assert "schedule.0.at: entry 'once': 0001-01-01T00:00:00+05:00 is outside 1970-2200" in line
