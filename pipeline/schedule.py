"""What the timetable will do: each entry's next fire times and what it would send now.

The daemon that fires the entries (`pipeline run`) builds on this module; see README.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.config import Config
from pipeline.content import load_posts
from pipeline.ledger import Ledger
from pipeline.models import Post, Status
from pipeline.plan import publishable
from pipeline.state import engine_for
from pipeline.timetable import Entry, fire_times


@dataclass(frozen=True, kw_only=True)
class Upcoming:
    """One timetable entry: when it fires next, and which posts it would send if it fired now."""

    entry: Entry
    fires: tuple[datetime, ...]      # in the entry's time zone
    would_send: tuple[str, ...]      # post slugs


def upcoming(config: Config, *, after: datetime | None = None, count: int = 5,
             now: datetime | None = None) -> list[Upcoming]:
    """Every entry's next `count` fire times after `after` (default: now)."""
    now = now or datetime.now(UTC)
    ready = publishable(load_posts(config).posts, now)
    ledger = Ledger(engine_for(config))
    try:
        return [Upcoming(entry=e, fires=tuple(fire_times(e, config.timezone, after or now, count)),
                         would_send=tuple(p.slug for p in select(e, ready, ledger)))
                for e in config.schedule]
    finally:
        ledger.close()


def select(entry: Entry, ready: list[Post], ledger: Ledger) -> list[Post]:
    """The posts an entry sends when it fires: `latest`, the newest post, unless it is already on
    every channel of the entry; `queue`, the oldest post not yet on all of them; `digest`, every
    post not yet sent through them. `ready` holds only publishable posts, oldest first."""
    def everywhere(post: Post) -> bool:
        return all(ledger.edition_counts(channel=c, edition=post.slug).get(Status.SENT, 0)
                   for c in entry.channels)

    if entry.edition == "latest":
        return [ready[-1]] if ready and not everywhere(ready[-1]) else []
    waiting = [p for p in ready if not everywhere(p)]
    return waiting[:1] if entry.edition == "queue" else waiting
