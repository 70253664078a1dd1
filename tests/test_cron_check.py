"""A timetable entry's `cron:` is accepted exactly when APScheduler's `CronTrigger.from_crontab`
accepts it, although loading the config decides the plain expressions without importing
APScheduler (what is imported is tests/test_startup.py's business)."""

from __future__ import annotations

from datetime import UTC

import pytest
from apscheduler.triggers.cron import CronTrigger
from pydantic import ValidationError

from pipeline.timetable.entries import Entry

# Each field's edge values, steps, names and malformed items; a token is tried in every field.
TOKENS = [
    "*", "*/0", "*/1", "*/2", "*/5", "*/6", "*/7", "*/11", "*/12", "*/22", "*/23", "*/24", "*/29", "*/30",
    "*/31", "*/58", "*/59", "*/60", "*/", "**",
    "0", "1", "5", "6", "7", "11", "12", "13", "23", "24", "30", "31", "32", "59", "60", "00", "007", "-1",
    "0-0", "0-0/1", "0-0/5", "1-1/1", "0-59", "0-60", "1-5", "5-1", "5-5", "1-5/2", "1-5/4", "1-5/5",
    "0-23/6", "1-31/30", "1-12/11", "1-12/12", "0-6/6", "0-6/7", "5/15", "5/54", "5/55", "58/1", "59/1",
    "1/0", "1-", "1-5/", "5/", "١",
    "mon", "MON", "Mon", "sun", "mon-fri", "fri-mon", "mon-sun", "sun-mon", "sat-sun", "monday",
    "mon-fri/2", "mon/2", "mo", "jan", "dec", "jan-dec", "dec-jan", "JAN-Mar", "jan/2", "janx",
    "last", "lastx", "xyz", "1,2", "1,,2", ",1", "1,", "mon,wed-fri", "1,5,10-20/5", "*,0", "jan,jul-aug",
]
CORPUS = [" ".join(token if i == field else "*" for i in range(5)) for field in range(5) for token in TOKENS]
# What a timetable usually says: each of these must be decided without APScheduler too.
COMMON = ["0 9 * * mon", "30 10,15 * * mon-fri", "*/15 * * * *", "0 0 1 * *", "0 8 * jan-mar sat,sun",
          "5 4 * * 0", "0 22 * * 1-5", "0 */6 * * *", "15 14 1 * *", "0 0 1 1 *"]


def apscheduler_accepts(expression: str) -> bool:
    try:
        CronTrigger.from_crontab(expression, timezone=UTC)
    except ValueError:
        return False
    return True


def entry_accepts(expression: str) -> bool:
    try:
        Entry(name="e", channels=["outbox"], cron=expression)
    except ValidationError:
        return False
    return True


def test_the_corpus_holds_expressions_apscheduler_accepts_and_refuses() -> None:
    verdicts = [apscheduler_accepts(e) for e in CORPUS]
    assert sum(verdicts) > 100 and verdicts.count(False) > 100


@pytest.mark.parametrize("expression", CORPUS + COMMON)
def test_an_entry_accepts_a_cron_expression_exactly_when_apscheduler_does(expression: str) -> None:
    assert entry_accepts(expression) == apscheduler_accepts(expression)


def test_a_refused_expression_is_named_with_apscheduler_s_reason() -> None:
    with pytest.raises(ValidationError, match=r"cron '0 24 \* \* \*' is not valid \(Error validating "
                                              r"expression '24': the last value \(24\) is higher"):
        Entry(name="e", channels=["outbox"], cron="0 24 * * *")
