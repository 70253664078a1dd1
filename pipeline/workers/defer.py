"""The planner's part in workers mode: once publish, retry or a timetable run has planned an
edition's ledger rows (as inline), its pending keys that no live job holds are deferred as
delivery jobs of `workers.batch` keys, and its `sending` rows no live job holds (a worker died,
its job was lost) are resolved by the channel's crash rule.

One planner at a time per channel and edition (a transaction-scoped advisory lock), so two
planners running at once never defer a key twice; each job also carries a procrastinate
queueing lock named after its first key, which refuses a second waiting job for the same batch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, text

from pipeline.config import Config
from pipeline.workers.app import QUEUE, TASK, procrastinate_app
from pipeline.workers.keys import live_keys, pending_keys, recover_keys, sending_keys
from pipeline.workers.schema import require_queue

log = logging.getLogger(__name__)

# The namespace of the planners' advisory locks (PostgreSQL's two-int form: this, then a hash of
# the channel and edition).
LOCK_SPACE = 0x706C616E


@dataclass(frozen=True, kw_only=True)
class Deferred:
    """What a planner deferred for one channel: jobs, the keys in them, and the `sending` rows no
    live job held that it resolved by the channel's crash rule."""

    jobs: int
    keys: int
    recovered: int


def defer_pending(config: Config, engine: Engine, *, channel: str, editions: Sequence[str],
                  crash_rule: str, now: datetime, extra: Mapping[str, str] | None = None) -> Deferred:
    """Defer the pending keys of `channel`'s `editions` that no waiting or running job holds, in
    jobs of `workers.batch` keys, in key order; resolve its orphaned `sending` rows first (they
    are pending again, and deferred with the rest, under the "resend" rule). `extra`: more
    arguments of every job (what a worker needs to compile a digest)."""
    require_queue(engine)
    app = procrastinate_app(config)
    jobs = keys = recovered = 0
    batch = config.workers.batch
    for edition in editions:
        with engine.begin() as conn:
            live = _lock(conn, channel=channel, edition=edition)
            recovered += _recover(conn, live, channel=channel, edition=edition, crash_rule=crash_rule,
                                  now=now)
            todo = [k for k in pending_keys(conn, channel=channel, edition=edition, now=now) if k not in live]
            # procrastinate writes on the transaction's own connection: the jobs are committed with
            # the lock released, never before the keys they hold are known to be free.
            driver = conn.connection.driver_connection
            for start in range(0, len(todo), batch):
                chunk = todo[start:start + batch]
                app.configure_task(TASK, queue=QUEUE, queueing_lock=f"{TASK}:{chunk[0]}",
                                   connection=driver).defer(channel=channel, edition=edition, keys=chunk,
                                                            **(extra or {}))
                jobs += 1
            keys += len(todo)
    if jobs:
        log.info("%s: %d key(s) deferred in %d job(s)", channel, keys, jobs)
    return Deferred(jobs=jobs, keys=keys, recovered=recovered)


def recover_orphans(engine: Engine, *, channel: str, edition: str, crash_rule: str, now: datetime) -> int:
    """Resolve by the channel's crash rule the `sending` rows of `channel`'s `edition` that no
    live job holds, before a digest is planned again (its jobs then take only pending keys); how many."""
    with engine.begin() as conn:
        live = _lock(conn, channel=channel, edition=edition)
        return _recover(conn, live, channel=channel, edition=edition, crash_rule=crash_rule, now=now)


def _lock(conn: Connection, *, channel: str, edition: str) -> set[str]:
    """Take the planners' lock of `channel` and `edition` for the transaction of `conn`; the keys
    live jobs hold."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:space, hashtext(:name))"),
                 {"space": LOCK_SPACE, "name": f"{channel}\n{edition}"})
    return live_keys(conn, channel=channel, edition=edition)


def _recover(conn: Connection, live: set[str], *, channel: str, edition: str, crash_rule: str,
             now: datetime) -> int:
    orphans = [k for k in sending_keys(conn, channel=channel, edition=edition) if k not in live]
    if orphans:
        log.warning("%s: %d row(s) of %s left `sending` by a worker that is gone: %s", channel,
                    len(orphans), edition, "resent" if crash_rule == "resend" else "marked unknown")
    return recover_keys(conn, orphans, rule=crash_rule, now=now)
