"""The preview page's calendar: `/calendar` (a week or a month of sends, in config.yaml's time
zone) and `/calendar.ics` (the plan as an iCalendar feed to subscribe to).

Both draw `timetable.calendar.build_plan` over the posts the page has rendered. The ledger is
read in one grouped pass, kept until the state database changes (its change mark, as the post
states' `LedgerCache`): a page of a million deliveries reads them once per change, not per view.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from pipeline.config import Config
from pipeline.fields import EARLIEST, LATEST
from pipeline.models import Post
from pipeline.store.changes import ChangeMark
from pipeline.store.engine import engine_for
from pipeline.timetable.calendar import Plan, Send, SentCounts, build_plan, sent_editions
from pipeline.timetable.ical import cut_note, describe, feed

VIEWS = ("week", "month")
# /calendar.ics?back=D&ahead=D: days before and after now, within these bounds.
ICS_BACK, ICS_AHEAD, ICS_MOST = 30, 90, 366


class SentCache:
    """`sent_editions` kept while the state database is unchanged. Thread-safe; `close()` lets go
    of the connection the change mark keeps."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mark: ChangeMark | None = None
        self._kept: tuple[int | str, SentCounts] | None = None

    def read(self, engine: Engine) -> SentCounts:
        """What the ledger holds now: the kept pass if no commit came since it was made (the mark
        is read first, so a commit during the pass makes the next call read again)."""
        with self._lock:
            if self._mark is None or self._mark.engine is not engine:
                self.close_unlocked()
                self._mark = ChangeMark(engine)
            version = self._mark.read()
            if version is not None and self._kept is not None and self._kept[0] == version:
                return self._kept[1]
            counts = sent_editions(engine)
            self._kept = (version, counts) if version is not None else None
            return counts

    def close(self) -> None:
        """Close the kept connection (the next `read` opens another)."""
        with self._lock:
            self.close_unlocked()

    def close_unlocked(self) -> None:
        if self._mark is not None:
            self._mark.close()
        self._mark, self._kept = None, None


@dataclass(frozen=True, kw_only=True)
class Span:
    """The days a view shows, in the site's time zone, and its neighbours' first days."""

    view: str
    first: date                  # the first day drawn
    days: int
    anchor: date                 # the week's Monday, or the month's first day
    previous: date
    following: date

    def bounds(self, zone: ZoneInfo) -> tuple[datetime, datetime]:
        """Local midnight of the first day to local midnight after the last one (a day of a
        daylight-saving change is 23 or 25 hours long)."""
        last = self.first + timedelta(days=self.days)
        return (datetime.combine(self.first, datetime.min.time(), zone),
                datetime.combine(last, datetime.min.time(), zone))


def span(view: str, start: date) -> Span:
    """The week (Monday first) or the month around `start`; a month is drawn in whole weeks."""
    if view == "week":
        monday = start - timedelta(days=start.weekday())
        return Span(view=view, first=monday, days=7, anchor=monday, previous=monday - timedelta(days=7),
                    following=monday + timedelta(days=7))
    first_of_month = start.replace(day=1)
    following = (first_of_month + timedelta(days=32)).replace(day=1)
    previous = (first_of_month - timedelta(days=1)).replace(day=1)
    grid_start = first_of_month - timedelta(days=first_of_month.weekday())
    grid_end = following + timedelta(days=(7 - following.weekday()) % 7)
    return Span(view=view, first=grid_start, days=(grid_end - grid_start).days, anchor=first_of_month,
                previous=previous, following=following)


class BadQuery(ValueError):
    """A query parameter the calendar cannot use; its message names the parameter and the fix."""


def parse_view(params: Any, today: date) -> tuple[str, date]:
    """`view` (week, month) and `start` (YYYY-MM-DD; default today) of /calendar."""
    view = params.get("view", "week")
    if view not in VIEWS:
        raise BadQuery(f"view={view!r}: use view=week or view=month")
    text = params.get("start")
    if not text:
        return view, today
    try:
        start = date.fromisoformat(text)
    except ValueError:
        raise BadQuery(f"start={text!r}: give a date as YYYY-MM-DD, e.g. start={today}") from None
    # A month's grid reaches a week either side; the ends of `date` would overflow.
    if not EARLIEST.year < start.year < LATEST.year - 1:
        raise BadQuery(f"start={text!r}: give a date from {EARLIEST.year + 1} to {LATEST.year - 2}")
    return view, start


def parse_days(params: Any, name: str, default: int) -> int:
    """A whole number of days between 0 and ICS_MOST."""
    text = params.get(name)
    if text is None or text == "":
        return default
    if not text.isdigit() or int(text) > ICS_MOST:
        raise BadQuery(f"{name}={text!r}: give a whole number of days from 0 to {ICS_MOST}")
    return int(text)


class CalendarPages:
    """The handlers of /calendar and /calendar.ics. `current()` gives the preview's snapshot
    (`preview_page.Snapshot`: config, rendered posts, version); `render(snapshot, template,
    status, **context)` draws a preview template; `now` fixes the time (tests)."""

    def __init__(self, current: Callable[[], Any], render: Callable[..., HTMLResponse],
                 now: datetime | None) -> None:
        self.current = current
        self.render = render
        self.now = now
        self.sent = SentCache()

    def close(self) -> None:
        """Let go of the ledger connection kept."""
        self.sent.close()

    def _plan(self, config: Config, posts: list[Post], start: datetime, end: datetime,
              now: datetime) -> Plan:
        return build_plan(config, posts, self.sent.read(engine_for(config)), start=start, end=end, now=now)

    async def page(self, request: Request) -> HTMLResponse:
        """/calendar?view=week|month&start=YYYY-MM-DD."""
        snap = await run_in_threadpool(self.current)
        if snap.config is None or snap.batch is None:
            return self.render(snap, "calendar.html.j2", 500, cal=None, bad=None)
        now = self.now or datetime.now(UTC)
        zone = ZoneInfo(snap.config.timezone)
        today = now.astimezone(zone).date()
        try:
            view, start = parse_view(request.query_params, today)
        except BadQuery as exc:
            return self.render(snap, "calendar.html.j2", 400, cal=None, bad=str(exc))
        shown = span(view, start)
        posts = [r.post for r in snap.batch.rendered]
        low, high = shown.bounds(zone)
        plan = await run_in_threadpool(self._plan, snap.config, posts, low, high, now)
        return self.render(snap, "calendar.html.j2", cal=_drawn(snap, shown, plan, zone, today), bad=None)

    async def ics(self, request: Request) -> Response:
        """/calendar.ics?back=DAYS&ahead=DAYS (default 30 and 90, at most 366 each)."""
        snap = await run_in_threadpool(self.current)
        if snap.config is None or snap.batch is None:
            return PlainTextResponse(f"config.yaml has a problem: {snap.error}", status_code=500)
        try:
            back = parse_days(request.query_params, "back", ICS_BACK)
            ahead = parse_days(request.query_params, "ahead", ICS_AHEAD)
        except BadQuery as exc:
            return PlainTextResponse(str(exc), status_code=400)
        now = self.now or datetime.now(UTC)
        posts = [r.post for r in snap.batch.rendered]
        plan = await run_in_threadpool(self._plan, snap.config, posts, now - timedelta(days=back),
                                       now + timedelta(days=ahead), now)
        body = feed(snap.config, plan, {p.slug: p for p in posts}, stamp=now,
                    base=str(request.base_url).rstrip("/"))
        return Response(body, media_type="text/calendar; charset=utf-8",
                        headers={"Cache-Control": "no-store",
                                 "Content-Disposition": 'inline; filename="calendar.ics"'})


def _drawn(snap: Any, shown: Span, plan: Plan, zone: ZoneInfo, today: date) -> dict[str, Any]:
    """The template's view of a plan: days, each with its sends by local hour."""
    assert snap.config is not None and snap.batch is not None
    posts = {r.post.slug: r.post for r in snap.batch.rendered}
    days = [shown.first + timedelta(days=i) for i in range(shown.days)]
    by_day: dict[date, list[dict[str, Any]]] = {d: [] for d in days}
    for send in plan.sends:
        local = send.at.astimezone(zone)
        if local.date() in by_day:
            by_day[local.date()].append(_item(send, local, posts, zone))
    query = f"view={shown.view}&start="
    return {
        "view": shown.view, "zone": snap.config.timezone, "today": today,
        "title": (f"Week of {shown.first:%a %d %b %Y}" if shown.view == "week"
                  else f"{shown.anchor:%B %Y}"),
        "previous": f"/calendar?{query}{shown.previous}", "following": f"/calendar?{query}{shown.following}",
        "today_link": f"/calendar?view={shown.view}", "other": "month" if shown.view == "week" else "week",
        "other_link": f"/calendar?view={'month' if shown.view == 'week' else 'week'}&start={shown.anchor}",
        "days": [{"date": d, "items": by_day[d], "today": d == today,
                  "outside": shown.view == "month" and d.month != shown.anchor.month} for d in days],
        "hours": list(range(24)), "cut": cut_note(plan),
        "channels": sorted({s.channel for s in plan.sends}),
    }


def _item(send: Send, local: datetime, posts: dict[str, Post], zone: ZoneInfo) -> dict[str, Any]:
    """One send as the template draws it."""
    link = None
    if send.kind == "digest":
        # The digest page shows the next edition only.
        link = f"/digests/{send.source}/{send.channel}" if send.turn == 0 else None
    elif len(send.slugs) == 1 and send.slugs[0] in posts:
        link = f"/posts/{send.slugs[0]}"
    detail = ("publish_at" if send.source == "publish_at" else
              f"{send.sent} sent" + (f", last {send.last.astimezone(zone):%a %H:%M %Z}" if send.last else "")
              if send.kind == "sent" else f"{send.source} ({send.kind})")
    articles = [posts[s].title if s in posts else s for s in send.slugs] if send.kind == "digest" else []
    return {"send": send, "time": f"{local:%H:%M}", "abbr": local.strftime("%Z"), "hour": local.hour,
            "what": describe(send, posts), "detail": detail, "link": link, "articles": articles,
            "past": send.kind == "sent", "empty": send.kind != "sent" and not send.slugs}
