"""The pump: email through an SMTP channel's worker processes, driven from one thread.

The publisher claims deliveries in the ledger and queues them on the workers, which fill each
message in (`personalize.MessageParts`) and send it; answers come back in order and are
recorded in batches. See `Pump` for how the ledger's guarantees survive the batching.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from tenacity import RetryCallState, Retrying

from pipeline.errors import ChannelError
from pipeline.models import Delivery, Status
from pipeline.render.mime import MessageTemplate
from pipeline.store.ledger import Ledger


class Tally(Protocol):
    """What the pump reports to: the publisher's ChannelReport (`add("sent")`, ...)."""

    def add(self, what: str, error: str | None = None, *, count: int = 1) -> None: ...


log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class Email:
    """One recipient's email, not filled in yet: a channel whose workers fill messages
    (`channel.fills`) gets these, and fills the edition's `template` in its own processes;
    `delivery()` fills it here, for everything else."""

    key: str
    channel: str
    edition: str
    recipient: str
    envelope_from: str
    values: dict[str, str]
    list_unsubscribe: str
    template: MessageTemplate

    def delivery(self) -> Delivery:
        """The Delivery, its message filled in here."""
        return Delivery(key=self.key, channel=self.channel, edition=self.edition, kind="email",
                        recipient=self.recipient, envelope_from=self.envelope_from,
                        message=self.template.render(to=self.recipient, values=self.values,
                                                     list_unsubscribe=self.list_unsubscribe))


GATHER = 0.002      # seconds a pump with full queues lets answers gather before it reads them


@dataclass(kw_only=True, slots=True)
class _Claim:
    """A delivery this run holds `sending`, from the commit that claimed it to the one that
    records its result."""

    delivery: Email
    attempts: int = 0             # times handed to a worker
    due: float = 0.0              # not before this time.monotonic() (a retry's backoff, the rate cap)


@dataclass(kw_only=True)
class _Lane:
    """A worker and what it was handed and has not answered yet, in order."""

    worker: Any
    sent: deque[_Claim] = field(default_factory=deque)


class Pump:
    """Email through the channel's worker processes, from one thread.

    The ledger's writes are grouped, never its guarantees. Deliveries are claimed (`pending` ->
    `sending`) in a commit before any worker gets them; a `sent` is committed only after its
    250; the answers that came back are recorded in the commit that claims the next deliveries.

    Without a send journal each worker holds one delivery at a time (`depth` 1): a row is
    `sending` only while it is on the wire or its answer waits for that commit, so a crash
    leaves at most one row per worker to resend. With one (`channels/smtp_journal.py`), each
    worker is kept `depth` messages ahead and never waits for the publisher: more rows are
    `sending` (at most `depth` per worker), and the journal tells the next run which of them
    were on the wire (resent), delivered (marked sent) or never sent (back to pending): a crash
    still resends at most one message per worker. Retries, failures and bounces follow
    `_deliver`'s rules."""

    def __init__(self, channel: Any, workers: list[Any], ledger: Ledger, report: Tally,
                 stop: threading.Event, *, tick: Callable[..., None], retrying: Retrying,
                 retryable: Callable[[ChannelError], bool],
                 record_failure: Callable[[Delivery, ChannelError, threading.Event], None]) -> None:
        """`tick`: the progress callback's throttle; `retrying` and `retryable`: the channel's
        retry policy; `record_failure(delivery, error, halt)`: a failure in the ledger and the
        report (setting `halt` if the channel must stop)."""
        self.channel, self.ledger, self.report, self.stop = channel, ledger, report, stop
        self.tick, self.retrying, self.retryable = tick, retrying, retryable
        self.record_failure = record_failure
        self.journal = getattr(channel, "journal", None)
        self.lanes = [_Lane(worker=w) for w in workers]
        self.depth = getattr(channel, "depth", 1)
        self.cap = self.depth * len(workers)             # rows held `sending` at most
        # Claim again once this many rows are free: at once with depth 1, else when the workers
        # have about half their queues left (a commit per half a queue, not per message).
        self.refill = max(1, self.cap - len(workers) * ((self.depth + 1) // 2))
        self.halt = threading.Event()                     # a fatal error: the channel stops
        self.fresh: deque[_Claim] = deque()               # claimed, not handed over yet
        self.later: list[tuple[float, int, _Claim]] = []  # retries, by due time
        self.answered: list[tuple[str, str | None, str | None]] = []   # 250s not recorded yet
        self.held = 0                                     # rows claimed and not recorded
        self.more = True                                  # the source may have more

    def run(self, deliveries: Iterator[Email]) -> None:
        """Send every delivery of `deliveries` (claimed as it goes: a delivery another run took
        meanwhile is skipped), until they are done or the channel stops."""
        source = iter(deliveries)
        if self.journal is not None:
            self.journal.clean = False
        try:
            while True:
                self._claim(source)
                self._hand_over()
                if not self._wait():
                    break
                self.tick()
            self._record()
        except BaseException:
            self._settle()
            raise
        finally:
            self.tick(force=True)
        if self.journal is not None:
            self.journal.clean = True

    def _taking(self) -> bool:
        return not (self.halt.is_set() or self.stop.is_set())

    def _claim(self, source: Iterator[Email]) -> None:
        """Claim deliveries up to the cap, recording the answers in the same commit."""
        if not self._taking():
            self._drop_waiting()
        while self._taking() and self.more and self.cap - self.held + len(self.answered) >= self.refill:
            wanted = self.cap - self.held + len(self.answered)
            fresh = list(itertools.islice(source, wanted))
            self.more = len(fresh) == wanted
            keys = [d.key for d in fresh]
            if self.journal is not None:
                self.journal.claim(keys)
            with self.ledger.batch() as batch:
                batch.succeed_rows(self.answered)
                taken = batch.begin_all(keys)
            claimed = [d for d in fresh if d.key in taken]
            self._recorded()
            now, limit = time.monotonic(), self.channel.limit
            self.fresh.extend(_Claim(delivery=d, due=now + limit.reserve() if limit.interval else now)
                              for d in claimed)
            self.held += len(claimed)
        if len(self.answered) >= self.refill:
            self._record()

    def _record(self) -> None:
        if self.answered:
            with self.ledger.batch() as batch:
                batch.succeed_rows(self.answered)
            self._recorded()

    def _recorded(self) -> None:
        self.report.add("sent", count=len(self.answered))
        self.held -= len(self.answered)
        self.answered = []

    def _drop_waiting(self) -> None:
        """The channel stops: what no worker was handed goes back to pending."""
        for claim in [*self.fresh, *(c for _, _, c in self.later)]:
            self.ledger.release(claim.delivery.key)
            self.held -= 1
        self.fresh.clear()
        self.later.clear()

    def _next_due(self, now: float) -> _Claim | None:
        """Of the next fresh claim and the earliest retry, the one due first, if it is due."""
        if not self.later:
            return self.fresh.popleft() if self.fresh and self.fresh[0].due <= now else None
        retry_at = self.later[0][0]
        fresh_at = self.fresh[0].due if self.fresh else math.inf
        if min(retry_at, fresh_at) > now:
            return None
        return heapq.heappop(self.later)[2] if retry_at < fresh_at else self.fresh.popleft()

    def _hand_over(self) -> None:
        """Queue what is due on the workers with room, one write per worker."""
        now = time.monotonic()
        for lane in self.lanes:
            handed = len(lane.sent)
            while len(lane.sent) < self.depth and (claim := self._next_due(now)) is not None:
                claim.attempts += 1
                lane.sent.append(claim)
                email = claim.delivery
                lane.worker.fill(email.envelope_from, email.recipient, email.template.parts, email.values,
                                 email.list_unsubscribe, key=email.key)
            if len(lane.sent) > handed and not lane.worker.flush():
                for outcome in lane.worker.collect():       # the worker is gone: what it had fails
                    self._answer(lane.sent.popleft(), outcome)

    def _wait(self) -> bool:
        """Wait for answers (or the next due time) and take them in; False when all is done."""
        busy = [lane for lane in self.lanes if lane.sent]
        waiting = ([self.fresh[0].due] if self.fresh else []) + ([self.later[0][0]] if self.later else [])
        if not (busy or waiting):
            return bool(self.more and self._taking())
        timeout = max(0.0, min(waiting) - time.monotonic()) if waiting else None
        if not busy:
            time.sleep(timeout or 0)
            return True
        if self.depth > 1 and all(len(lane.sent) > self.depth // 2 for lane in self.lanes):
            # Every worker has messages queued: let answers gather rather than wake for each.
            time.sleep(min(GATHER, timeout if timeout is not None else GATHER))
        ready, _, _ = select.select([lane.worker for lane in busy], [], [], timeout)
        for lane in busy:
            if lane.worker in ready:
                for outcome in lane.worker.collect():
                    self._answer(lane.sent.popleft(), outcome)
        return True

    def _answer(self, claim: _Claim, outcome: tuple[object, ...]) -> None:
        delivery = claim.delivery
        try:
            self.answered.append(self.channel.sent_row(delivery.key, outcome))
            return
        except ChannelError as exc:
            if self.retryable(exc) and again(self.retrying, claim.attempts):
                claim.due = time.monotonic() + max(backoff(self.retrying, claim.attempts),
                                                   self.channel.limit.reserve())
                heapq.heappush(self.later, (claim.due, id(claim), claim))
                return
            self.record_failure(delivery.delivery(), exc, self.halt)
        except Exception as exc:   # a bug, not a user's mistake: keep the row, log the traceback
            log.exception("%s: unexpected error sending %s", self.channel.name, delivery.key)
            self.ledger.fail(delivery.key, f"internal error: {exc!r}", status=Status.UNKNOWN)
            self.report.add("unknown", f"{delivery.key}: internal error: {exc!r}")
        self.held -= 1

    def _settle(self) -> None:
        """Interrupted (Ctrl-C, a database error): record the 250s already in, end the workers
        where they are, and put back what none was handed. The rows still `sending` are the
        next run's recovery's (with the journal's evidence, if there is one)."""
        with contextlib.suppress(Exception):
            for lane in self.lanes:
                while lane.sent and select.select([lane.worker], [], [], 0)[0]:
                    for outcome in lane.worker.collect():
                        claim = lane.sent.popleft()
                        if outcome[0] == "ok":
                            self.answered.append(self.channel.sent_row(claim.delivery.key, outcome))
                lane.worker.abandon()
            self._record()
            self._drop_waiting()


def again(retrying: Retrying, attempts: int) -> bool:
    """Whether a temporary failure after `attempts` sends gets another send, as the publisher's
    `_send` decides (its channel's `retrying` after a first retry at once):
    the second at once, the later ones until `retrying` stops."""
    if attempts <= 1:
        return True
    state = RetryCallState(retrying, None, (), {})
    state.attempt_number = attempts - 1
    return not retrying.stop(state)


def backoff(retrying: Retrying, attempts: int) -> float:
    """Seconds before the next send after `attempts` sends, as `_send` waits."""
    if attempts <= 1:
        return 0.0
    state = RetryCallState(retrying, None, (), {})
    state.attempt_number = attempts - 1
    return float(retrying.wait(state))
