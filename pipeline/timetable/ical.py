"""The plan as an iCalendar feed (RFC 5545): one VEVENT per send (a channel and what it carries),
for the preview page's `/calendar.ics` and `pipeline schedule --ics FILE`.

Each event's UID is the send's (`calendar.Send.uid`: the ledger's key prefix of the post on the
channel, or the timetable entry, channel and fire time), so a calendar that downloads the feed
again updates its events instead of adding new ones. Times are written in UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event

from pipeline.config import Config
from pipeline.intake.sources import load_all
from pipeline.models import Post
from pipeline.store.engine import engine_for
from pipeline.timetable.calendar import MAX_FIRES, Plan, Send, build_plan, sent_editions

# A planned send is shown as a short event: calendars draw a zero-length one as a sliver or not at all.
PLANNED_LENGTH = timedelta(minutes=15)


def describe(send: Send, posts: Mapping[str, Post]) -> str:
    """One line saying what goes out: the post's title, the digest, or that the fire carries
    nothing known yet."""
    titles = [posts[s].title if s in posts else s for s in send.slugs]
    if send.kind == "sent":
        what = titles[0] if titles else send.edition or ""
        return f"{what} ({send.sent} sent)"
    if send.kind == "digest":
        count = len(send.slugs)
        return f"digest {send.source}: " + (f"{count} article{'s' * (count != 1)}" if count
                                             else "the articles that come in by then")
    if titles:
        return titles[0]
    return {"queue": "queue slot: the next post waiting, if any",
            "latest": "the newest post, if not sent yet"}.get(send.kind, "")


def feed(config: Config, plan: Plan, posts: Mapping[str, Post], *, stamp: datetime,
         base: str | None = None) -> bytes:
    """The plan's sends as an iCalendar file. `stamp`: the DTSTAMP of every event (when the feed
    was made); `base`: the preview page's address, which the events then link to (else the
    posts' own URLs and the site's)."""
    cal = Calendar()
    cal.add("prodid", "-//pipeline//send calendar//EN")
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("x-wr-calname", f"{config.site.name}: sends")
    cal.add("x-wr-timezone", config.timezone)
    for send in plan.sends:
        cal.add_component(_event(config, send, posts, stamp, base))
    return cal.to_ical()


def _event(config: Config, send: Send, posts: Mapping[str, Post], stamp: datetime,
           base: str | None) -> Event:
    event = Event()
    event.add("uid", send.uid)
    event.add("dtstamp", stamp)
    event.add("dtstart", send.at)
    end = send.last if send.last is not None and send.last > send.at else send.at + PLANNED_LENGTH
    event.add("dtend", end)
    event.add("summary", f"{send.channel}: {describe(send, posts)}")
    event.add("description", _description(config, send, posts))
    event.add("categories", [send.channel, send.kind])
    event.add("transp", "TRANSPARENT")           # a send does not make anyone busy
    url = _url(config, send, posts, base)
    if url:
        event.add("url", url)
    return event


def _description(config: Config, send: Send, posts: Mapping[str, Post]) -> str:
    lines = []
    if send.kind == "sent":
        lines.append(f"Sent on {send.channel}: {send.sent} deliveries of {send.edition}, "
                     f"first {send.at:%Y-%m-%d %H:%M}Z, last {(send.last or send.at):%Y-%m-%d %H:%M}Z.")
    elif send.source == "publish_at":
        lines.append(f"publish_at sends it on {send.channel}.")
    else:
        lines.append(f"Timetable entry {send.source} ({send.kind}) fires on {send.channel}.")
    lines += [f"- {posts[s].title}: {posts[s].canonical_url}" if s in posts else f"- {s}" for s in send.slugs]
    if send.kind != "sent" and not send.slugs:
        lines.append("Nothing known to send yet: it carries what comes in by then.")
    if send.kind != "sent":
        lines.append(f"Times are planned as of now; {config.timezone} wall-clock times are kept across "
                     "daylight-saving changes.")
    return "\n".join(lines)


def _url(config: Config, send: Send, posts: Mapping[str, Post], base: str | None) -> str | None:
    if send.kind != "digest" and len(send.slugs) == 1 and send.slugs[0] in posts:
        slug = send.slugs[0]
        return f"{base.rstrip('/')}/posts/{slug}" if base else posts[slug].canonical_url
    if base and send.kind == "digest" and send.turn == 0:
        return f"{base.rstrip('/')}/digests/{send.source}/{send.channel}"
    if base:
        day = send.at.astimezone(ZoneInfo(config.timezone))
        return f"{base.rstrip('/')}/calendar?view=week&start={day:%Y-%m-%d}"
    return config.site.url


def feed_for(config: Config, *, start: datetime, end: datetime, now: datetime) -> bytes:
    """The feed of the sends from `start` to `end`, with the posts (and feed entries) and the
    ledger as they are `now` (`pipeline schedule --ics`)."""
    posts = load_all(config, now=now).posts
    plan = build_plan(config, posts, sent_editions(engine_for(config)), start=start, end=end, now=now)
    return feed(config, plan, {p.slug: p for p in posts}, stamp=now)


def cut_note(plan: Plan) -> str | None:
    """What the plan left out (entries firing more than MAX_FIRES times in the window), or None."""
    if not plan.cut:
        return None
    return (f"{', '.join(plan.cut)}: only the first {MAX_FIRES} fires in the window are listed; "
            "ask for a shorter window")
