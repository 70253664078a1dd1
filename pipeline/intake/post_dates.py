"""A post's date, in the forms site generators accept, and the date a file name carries.

`parse_date` reads ISO 8601 / RFC 3339 strictly first, then what real front matter holds
(`2019-04-25 9:00:00`, `2019-04-09T8:09:26-07:00`, Jekyll's `2013-05-06 12:00:00 -0500`, Astro's
`Jun 01 2024`) with python-dateutil, the parser Pelican uses. `name_date` is the `YYYY-MM-DD`
prefix of a Jekyll/Eleventy/Pelican file name (or of a page bundle's folder).
"""

from __future__ import annotations

import re
import warnings
from datetime import date, datetime, time

DATE_FORMS = "YYYY-MM-DD, or YYYY-MM-DDTHH:MM:SS+HH:MM"
# Jekyll needs `YYYY-MM-DD-title`; Pelican's default FILENAME_METADATA takes any `YYYY-MM-DD`
# prefix (`2020-06-19_title.rst`). A digit right after it would be another number, not a date.
_NAME_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?![\d])")
# The year, month and day as written, to hold dateutil to them: it would otherwise read
# "2020-13-01" as the 1st of... something, and a typo would pass for a date.
_WRITTEN_YMD = re.compile(r"\s*(\d{4})-(\d{1,2})-(\d{1,2})(?:$|[T\s])")
# Two defaults that differ in every part: a part missing from the text shows as a difference.
_DEFAULTS = (datetime(2001, 1, 1), datetime(2002, 2, 2))


class NotADate(ValueError):
    """The value is not a date any of the accepted forms reads."""


def parse_date(value: object) -> datetime | date:
    """A front matter date: a `date`/`datetime` as TOML (or YAML's `!!timestamp`) builds it, or
    text in one of the forms generators accept. Naive results are left naive (the caller reads
    them in the configured time zone). Raises NotADate."""
    if isinstance(value, datetime | date):
        return value
    if isinstance(value, time | bool) or value is None:
        raise NotADate(value)
    text = " ".join(str(value).split())
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    for form in ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M %z"):
        try:
            return datetime.strptime(text, form)
        except ValueError:
            continue
    return _loose(text)


def _loose(text: str) -> datetime:
    """The forms dateutil reads, when year, month and day are all written (a bare "2024" or
    "June" is not a date) and, for a `Y-M-D` start, when they are the ones written."""
    # Here, not at the top: most dates are ISO 8601, read without dateutil.
    from dateutil import parser as dateutil_parser

    try:
        with warnings.catch_warnings():
            # A time zone name dateutil does not know (EST) would give a naive time that is
            # hours off: refuse it instead.
            warnings.simplefilter("error")
            first, second = (dateutil_parser.parse(text, default=d) for d in _DEFAULTS)
    except (ValueError, OverflowError, Warning):
        raise NotADate(text) from None
    if first != second:
        raise NotADate(text)
    written = _WRITTEN_YMD.match(text)
    if written and tuple(map(int, written.groups())) != (first.year, first.month, first.day):
        raise NotADate(text)
    return first


def name_date(name: str) -> tuple[str, date | None] | None:
    """The `YYYY-MM-DD` a file or folder name starts with: (as written, the date or None when it
    is no real date such as 2024-13-45); None when the name does not start with one."""
    match = _NAME_DATE.match(name)
    if not match:
        return None
    try:
        return match.group(0), date(*map(int, match.groups()))
    except ValueError:
        return match.group(0), None
