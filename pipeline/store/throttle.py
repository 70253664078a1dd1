"""A rate limit that every process sending through a channel keeps to together, in the state
database: a channel's `rate:` and a network's 429 hold for all `pipeline worker`s at once.

One row of `rate_limits` per limit holds the earliest slot no process has taken yet, in seconds on
the database's clock (so that the machines' clocks need not agree). A process takes slots in
blocks: one UPDATE moves the row on by n intervals and returns where the block starts, so the
database sees one statement per block, not one per message. A process's first block is one slot;
each next one is twice as big, up to `block` seconds' worth, so a process that sends a message or
two does not keep others waiting for slots it never uses. The blocks of all processes are
disjoint and each is a run of slots one interval apart, so the slots handed out, by all processes
together, are never closer than 1/rate. A slot the process comes to more than `STALE` seconds late
(it could not keep up with its block) is given up rather than used late, so late messages cannot
crowd into the slots that follow: over any window of W seconds all processes together send at most
rate × (W + STALE) + 1 messages.

A hold (`hold(until)`, e.g. a 429's reset) moves the row's next slot to `until`: every process's
next block starts there. A process's own block is dropped at once; the others finish the block
they took before the hold (at most `block` seconds' worth) and then wait.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime

from sqlalchemy import Engine, bindparam, case, select, update
from sqlalchemy.types import Double

from pipeline.store.dialect import epoch_now, insert_ignore
from pipeline.store.schema import rate_limits

BLOCK_SECONDS = 1.0     # the most a process takes at once: this many seconds' worth of slots
STALE = 0.1             # seconds a slot may be past and still be used (else it is given up)


def _later(column, value):  # type: ignore[no-untyped-def]
    """SQL: the later of a column (NULL: none) and a value (no GREATEST on SQLite, no MAX(a, b) on
    PostgreSQL)."""
    return case((column > value, column), else_=value)


class SharedRate:
    """At most `rate` slots per second for all processes that use the limit `key` on the state
    database of `engine` (0: unlimited, and the slots never touch the database). Thread-safe.

    The same shape as the SMTP channel's per-process `RateLimit`, so either can be a channel's
    `limit`: `reserve()` takes the next slot and says how many seconds until it comes, `acquire()`
    takes it and sleeps until then, `interval` is 1/rate (0.0 when unlimited). `take()` gives the
    slot itself, on the database's clock.

    `hold(until)` (a network's 429 and its reset time) makes every process wait until then: the
    next slot any process takes is `until` or later. `held_for()` reads how long a hold (set by any
    process) still lasts: with `rate` 0 no slot is taken from the database, so a sender of an
    unlimited channel asks it (one SELECT), e.g. before each batch, to see the others' holds.
    Database errors raise the store's StateError.
    """

    def __init__(self, engine: Engine, key: str, rate: float, *, block: float = BLOCK_SECONDS) -> None:
        if rate < 0 or block <= 0:
            raise ValueError(f"rate limit {key}: rate must be 0 (unlimited) or more and block above 0")
        self.engine = engine
        self.key = key
        self.rate = rate
        self.interval = 1 / rate if rate else 0.0
        self._most = max(1, int(rate * block))   # slots in the biggest block
        self._size = 1                           # slots in the next block
        self._start = 0.0                        # the current block: its first slot, ...
        self._taken = 0                          # ... how many of its slots are taken,
        self._count = 0                          # ... and how many it has
        self._offset = time.time() - time.monotonic()  # database clock - monotonic clock
        self._held = 0.0                         # this process's own hold, on the database clock
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Take the next slot and wait for it."""
        wait = self.reserve()
        if wait > 0:
            time.sleep(wait)

    def reserve(self) -> float:
        """Take the next slot without waiting for it: the seconds until it comes (0: now)."""
        slot = self.take()
        return max(0.0, slot - self._now())

    def take(self) -> float:
        """Take the next slot: its time in seconds since the epoch, on the database's clock (with
        `rate` 0, now or the end of this process's hold, on this machine's clock)."""
        with self._lock:
            now = self._now()
            if not self.interval:
                return max(now, self._held)
            if self._taken < self._count and self._slot() < now - STALE:
                # Behind the block: give its rest up, and take smaller blocks from now on.
                self._count = self._taken
                self._size = max(1, self._size // 2)
            if self._taken >= self._count:
                self._take_block()
            slot = self._slot()
            self._taken += 1
            return slot

    def hold(self, until: datetime) -> None:
        """Let no process take a slot before `until` (timezone-aware), e.g. a network's rate
        limit reset: this process's own slots already taken are given up."""
        if until.tzinfo is None:
            raise ValueError("hold(until): the time must be timezone-aware")
        at = until.timestamp()
        with self._lock:
            self._held = max(self._held, at)
            self._count = self._taken
        t = rate_limits.c
        with self.engine.begin() as conn:
            conn.execute(insert_ignore(self.engine, rate_limits).values(key=self.key, next_slot=0.0))
            conn.execute(update(rate_limits).where(t.key == self.key).values(
                next_slot=_later(t.next_slot, at), held_until=_later(t.held_until, at)))

    def held_for(self) -> float:
        """Seconds until the latest hold any process set ends (0.0: none holds now). One SELECT."""
        t = rate_limits.c
        with self.engine.connect() as conn:
            row = conn.execute(select(t.held_until, epoch_now().label("now"))
                               .where(t.key == self.key)).first()
        with self._lock:
            own = max(0.0, self._held - self._now())
        if row is None or row.held_until is None:
            return own
        return max(own, float(row.held_until) - float(row.now))

    def _now(self) -> float:
        """The database's clock as this process last saw it, moved on by the monotonic clock."""
        return time.monotonic() + self._offset

    def _slot(self) -> float:
        return self._start + self._taken * self.interval

    def _take_block(self) -> None:
        """Take the next `_size` slots from the row, in one UPDATE (making the row first if none)."""
        count = self._size
        t, now = rate_limits.c, epoch_now()
        moved = (update(rate_limits).where(t.key == self.key)
                 .values(next_slot=_later(t.next_slot, now) + bindparam("span", type_=Double()))
                 .returning(t.next_slot, now.label("now")))
        span = count * self.interval
        with self.engine.begin() as conn:
            row = conn.execute(moved, {"span": span}).first()
            if row is None:
                conn.execute(insert_ignore(self.engine, rate_limits).values(key=self.key, next_slot=0.0))
                row = conn.execute(moved, {"span": span}).first()
        assert row is not None      # the row exists now: made above, or by another process
        # Measured after the answer: the database's clock is read as a little early, so a slot
        # is waited for a little longer, never less.
        self._offset = float(row.now) - time.monotonic()
        self._start, self._taken, self._count = float(row.next_slot) - span, 0, count
        self._size = min(self._most, count * 2)
