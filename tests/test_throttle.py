"""The shared rate limit (store/throttle.py), on a SQLite file and on PostgreSQL: several processes,
each with its own engine on the one state database, never take slots closer than 1/rate; a hold
one sets is kept by the others; an unlimited rate never queries. The assertions are on the slots
the limiter hands out (times on the database's clock), not on how long anything took."""

from __future__ import annotations

import itertools
import multiprocessing
import threading
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Barrier

import pytest
from sqlalchemy import Engine, event, select

from pipeline.config import Config
from pipeline.store.engine import open_engine, state_url
from pipeline.store.throttle import STALE, SharedRate, epoch_now

pytestmark = pytest.mark.state_backends

PROCESSES = 3
FORK = multiprocessing.get_context("fork")


def _counted(engine: Engine) -> list[str]:
    """The statements `engine` runs from now on."""
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, sql, *_: seen.append(sql))
    return seen


def _take_slots(url: str, rate: float, count: int, start: Barrier, results: multiprocessing.Queue) -> None:
    """In a process of its own: take `count` slots as soon as every process is ready."""
    engine, _ = open_engine(url)
    statements = _counted(engine)
    limit = SharedRate(engine, "channel:news", rate)
    start.wait(timeout=60)
    slots = [limit.take() for _ in range(count)]
    results.put((slots, len(statements)))
    engine.dispose()


def _run(target, *args: object) -> list[object]:  # type: ignore[no-untyped-def]
    """Run `target(*args, barrier, queue)` in PROCESSES processes; what each put on the queue."""
    start, results = FORK.Barrier(PROCESSES), FORK.Queue()
    procs = [FORK.Process(target=target, args=(*args, start, results)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    found = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return found


def _db_now(engine: Engine) -> float:
    with engine.connect() as conn:
        return float(conn.execute(select(epoch_now())).scalar_one())


def test_processes_together_never_take_slots_closer_than_the_rate(config: Config, engine: Engine) -> None:
    rate, each = 100.0, 150
    found = _run(_take_slots, state_url(config), rate, each)
    slots = sorted(s for taken, _ in found for s in taken)   # type: ignore[attr-defined]
    assert len(slots) == PROCESSES * each
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert min(gaps) >= 1 / rate - 1e-6, "two slots closer than 1/rate"
    # Any second holds at most `rate` slots (+1 for the one on the window's edge).
    assert max(sum(1 for s in slots if t <= s < t + 1) for t in slots) <= rate + 1
    # Blocks: 150 slots cost each process 8 UPDATEs of 1, 2, 4, ..., 64, then 100 (a second's
    # worth) slots, and at most one INSERT, not a statement per slot.
    assert all(statements <= 10 for _, statements in found), found   # type: ignore[misc]


def test_threads_of_one_process_share_its_blocks(engine: Engine) -> None:
    limit = SharedRate(engine, "channel:news", 200)
    taken: list[float] = []
    workers = [threading.Thread(target=lambda: taken.extend(limit.take() for _ in range(100)))
               for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    slots = sorted(taken)
    assert len(set(slots)) == 400
    assert min(b - a for a, b in itertools.pairwise(slots)) >= 1 / 200 - 1e-6


def _hold_seen(url: str, rate: float, until: float, start: Barrier, results: multiprocessing.Queue) -> None:
    engine, _ = open_engine(url)
    limit = SharedRate(engine, "channel:news", rate)
    start.wait(timeout=60)
    results.put((limit.held_for(), limit.take() if rate else None))
    engine.dispose()


@pytest.mark.parametrize("rate", [0.0, 50.0])
def test_a_hold_set_by_one_process_is_kept_by_the_others(config: Config, engine: Engine, rate: float) -> None:
    limit = SharedRate(engine, "channel:news", rate)
    before = [limit.take() for _ in range(5)]      # this process has a block of slots in hand
    until = datetime.now(UTC) + timedelta(seconds=60)
    limit.hold(until)
    assert limit.take() >= until.timestamp(), "the slots taken before the hold were still used"
    for held_for, slot in _run(_hold_seen, state_url(config), rate, until.timestamp()):  # type: ignore[misc]
        # The database's clock and this one agree within seconds: the hold is about a minute.
        assert 50 < held_for <= 61
        assert slot is None or slot >= until.timestamp() - 1e-6
    assert 50 < limit.held_for() <= 61
    # A hold never moves back: an earlier reset seen later changes nothing.
    limit.hold(until - timedelta(seconds=30))
    assert limit.held_for() > 50
    assert not rate or max(before) < until.timestamp()


def test_an_unlimited_rate_never_queries(engine: Engine) -> None:
    statements = _counted(engine)
    limit = SharedRate(engine, "channel:news", 0)
    assert limit.interval == 0.0
    assert [limit.reserve() for _ in range(1000)] == [0.0] * 1000
    limit.acquire()
    assert statements == []


def test_a_process_that_falls_behind_its_block_gives_the_rest_up(engine: Engine) -> None:
    limit = SharedRate(engine, "channel:news", 1000)
    for _ in range(4):                  # blocks of 1, 2, then 4 slots: three are left in hand
        limit.take()
    time.sleep(3 * STALE)               # those three are now well in the past
    now = _db_now(engine)
    assert limit.take() >= now, "a slot long past was used late"


def test_reserve_says_how_long_until_the_slot(engine: Engine) -> None:
    limit = SharedRate(engine, "channel:news", 0.5)       # a slot every 2 seconds
    first, second = limit.reserve(), limit.reserve()
    assert first < 1 < 1.5 < second <= 2 + 1e-6


def test_a_hold_needs_a_timezone_and_a_rate_cannot_be_negative(engine: Engine) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        SharedRate(engine, "channel:news", 1).hold(datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="rate must be 0"):
        SharedRate(engine, "channel:news", -1)
