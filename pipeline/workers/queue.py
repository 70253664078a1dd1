"""The delivery queue as `pipeline status` and the metrics show it: procrastinate's jobs by queue
and state, how long the oldest waiting job has waited, the latest failure, the workers and their
heartbeats.

Read with plain SQL from procrastinate's tables (`procrastinate_jobs`, `procrastinate_workers`,
`procrastinate_events`, as procrastinate 3 makes them): importing procrastinate would cost every
`pipeline status` its start-up. Ages are worked out by the database, on its clock. Four small
statements in one transaction; a SQLite state, or a PostgreSQL one without procrastinate's
tables, has no queue (`None`), and no statement is made on SQLite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, text

STALLED_AFTER = 30.0    # seconds without a heartbeat after which a worker is taken for dead


@dataclass(frozen=True, kw_only=True)
class QueueCounts:
    """The jobs of one procrastinate queue, by state."""

    queue: str
    waiting: int = 0        # due, not taken by a worker yet
    scheduled: int = 0      # waiting for a later time (a retry's backoff)
    running: int = 0
    failed: int = 0
    succeeded: int = 0
    cancelled: int = 0      # cancelled or aborted
    oldest_waiting: float | None = None   # seconds the longest-waiting due job has waited

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"queue": self.queue, "waiting": self.waiting, "scheduled": self.scheduled,
                "running": self.running, "failed": self.failed, "succeeded": self.succeeded,
                "cancelled": self.cancelled, "oldest_waiting_seconds": _rounded(self.oldest_waiting)}


@dataclass(frozen=True, kw_only=True)
class WorkerState:
    """One `pipeline worker` process as procrastinate records it."""

    id: int
    heartbeat_age: float    # seconds since its last heartbeat
    running: int            # jobs it holds
    alive: bool             # a heartbeat within `stalled_after` seconds

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"id": self.id, "heartbeat_age_seconds": _rounded(self.heartbeat_age),
                "running": self.running, "alive": self.alive}


@dataclass(frozen=True, kw_only=True)
class FailedJob:
    """The job that failed last: procrastinate keeps no error text (the worker's log has it), so
    this says which batch it was and when."""

    id: int
    task: str
    queue: str
    channel: str | None     # from the job's arguments, for `pipeline.deliver` jobs
    edition: str | None
    keys: int               # ledger keys in the batch
    age: float              # seconds since it failed

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"id": self.id, "task": self.task, "queue": self.queue, "channel": self.channel,
                "edition": self.edition, "keys": self.keys, "age_seconds": _rounded(self.age)}


@dataclass(frozen=True, kw_only=True)
class QueueStatus:
    """The queue at one moment: every queue that has jobs, every worker procrastinate knows."""

    queues: tuple[QueueCounts, ...] = ()
    workers: tuple[WorkerState, ...] = ()
    last_failed: FailedJob | None = None
    stalled_after: float = STALLED_AFTER

    @property
    def waiting(self) -> int:
        """Due jobs no worker has taken yet, over every queue."""
        return sum(q.waiting for q in self.queues)

    @property
    def scheduled(self) -> int:
        """Jobs waiting for a later time, over every queue."""
        return sum(q.scheduled for q in self.queues)

    @property
    def running(self) -> int:
        """Jobs a worker holds, over every queue."""
        return sum(q.running for q in self.queues)

    @property
    def failed(self) -> int:
        """Jobs that failed for good (their keys stay `pending` for the next planner run)."""
        return sum(q.failed for q in self.queues)

    @property
    def alive(self) -> tuple[WorkerState, ...]:
        """The workers with a recent heartbeat."""
        return tuple(w for w in self.workers if w.alive)

    @property
    def stalled(self) -> int:
        """Running jobs whose worker is dead (or gone): procrastinate gives them to a live worker."""
        return self.running - sum(w.running for w in self.alive)

    @property
    def oldest_waiting(self) -> float | None:
        """Seconds the longest-waiting due job has waited, in any queue (None: none waits)."""
        ages = [q.oldest_waiting for q in self.queues if q.oldest_waiting is not None]
        return max(ages) if ages else None

    @property
    def empty(self) -> bool:
        """No job in any state and no worker: nothing to show."""
        return not self.queues and not self.workers

    def lines(self) -> list[str]:
        """The text form (`pipeline status`): the jobs, each queue's when there are several, the
        workers, and the job that failed last."""
        oldest = self.oldest_waiting
        shown = [f"Queue: {self.waiting} waiting"
                 + (f" (the oldest for {_duration(oldest)})" if oldest is not None and self.waiting else "")
                 + f", {self.running} running, {self.failed} failed"
                 + (f", {self.scheduled} to retry later" if self.scheduled else "")]
        if len(self.queues) > 1:
            shown += [f"  {q.queue}: {q.waiting} waiting, {q.running} running, {q.failed} failed, "
                      f"{q.scheduled} to retry later, {q.succeeded} done" for q in self.queues]
        dead = [w for w in self.workers if not w.alive]
        shown.append(f"Workers: {len(self.alive)} alive"
                     + "".join(f"; worker {w.id}: heartbeat {_duration(w.heartbeat_age)} ago, "
                               f"{w.running} running" for w in self.alive)
                     + (f"; {len(dead)} without a heartbeat for over {_duration(self.stalled_after)}"
                        if dead else ""))
        if self.last_failed is not None:
            f = self.last_failed
            what = f" ({f.channel}, {f.edition}, {f.keys} keys)" if f.channel else ""
            shown.append(f"Last failed job: {f.id} {f.task}{what}, {_duration(f.age)} ago; the worker's log "
                         "has its error, and its keys stay pending for the next `pipeline retry`")
        return shown

    def warnings(self) -> list[str]:
        """What needs someone: jobs waiting with no worker alive, jobs held by dead workers."""
        found = []
        if (self.waiting or self.running) and not self.alive:
            found.append(f"{self.waiting + self.running} delivery jobs and no worker alive: start "
                         "`pipeline worker` (on any machine with the config)")
        if self.stalled:
            found.append(f"{self.stalled} running jobs belong to workers without a heartbeat for "
                         f"{_duration(self.stalled_after)}; a live worker takes them over")
        return found

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (`pipeline status --json`)."""
        return {"waiting": self.waiting, "scheduled": self.scheduled, "running": self.running,
                "failed": self.failed, "stalled": self.stalled,
                "oldest_waiting_seconds": _rounded(self.oldest_waiting),
                "workers_alive": len(self.alive), "stalled_after_seconds": self.stalled_after,
                "queues": [q.as_dict() for q in self.queues],
                "workers": [w.as_dict() for w in self.workers],
                "last_failed": self.last_failed.as_dict() if self.last_failed else None}


def _rounded(seconds: float | None) -> float | None:
    return round(seconds, 1) if seconds is not None else None


def _duration(seconds: float) -> str:
    """45 s, 3 min, 2 h 5 min: an age as a person reads it."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min"
    hours, minutes = divmod(whole // 60, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


# procrastinate's states -> QueueCounts' fields ("todo" is waiting or scheduled, by scheduled_at).
_STATES = {"doing": "running", "failed": "failed", "succeeded": "succeeded", "cancelled": "cancelled",
           "aborted": "cancelled", "aborting": "running"}

_TABLES = text("SELECT to_regclass('procrastinate_jobs') IS NOT NULL "
               "AND to_regclass('procrastinate_workers') IS NOT NULL "
               "AND to_regclass('procrastinate_events') IS NOT NULL")

# One grouped pass over the jobs. A due job has waited since its scheduled time (a retry) or,
# without one, since it was deferred (its `deferred` event: the jobs table keeps no such time).
_JOBS = text("""
SELECT j.queue_name AS queue,
       CASE WHEN j.status = 'todo' AND j.scheduled_at > now() THEN 'scheduled' ELSE j.status::text END
           AS state,
       count(*) AS n,
       EXTRACT(EPOCH FROM now() - min(CASE WHEN j.status = 'todo' THEN coalesce(j.scheduled_at, (
           SELECT min(e.at) FROM procrastinate_events e WHERE e.job_id = j.id AND e.type = 'deferred'))
       END)) AS oldest
FROM procrastinate_jobs j
GROUP BY 1, 2
""")

_WORKERS = text("""
SELECT w.id, EXTRACT(EPOCH FROM now() - w.last_heartbeat) AS age, count(j.id) AS running
FROM procrastinate_workers w
LEFT JOIN procrastinate_jobs j ON j.worker_id = w.id AND j.status = 'doing'
GROUP BY w.id, w.last_heartbeat
ORDER BY w.id
""")

# The failed jobs are few and found by their status; their events by the job_id index.
_LAST_FAILED = text("""
SELECT j.id, j.task_name AS task, j.queue_name AS queue, j.args ->> 'channel' AS channel,
       j.args ->> 'edition' AS edition,
       CASE WHEN jsonb_typeof(j.args -> 'keys') = 'array' THEN jsonb_array_length(j.args -> 'keys')
            ELSE 0 END AS keys,
       EXTRACT(EPOCH FROM now() - e.at) AS age
FROM procrastinate_jobs j JOIN procrastinate_events e ON e.job_id = j.id AND e.type = 'failed'
WHERE j.status = 'failed' AND e.at IS NOT NULL
ORDER BY e.at DESC, j.id DESC
LIMIT 1
""")


def queue_status(engine: Engine, *, stalled_after: float = STALLED_AFTER) -> QueueStatus | None:
    """The queue of the state database of `engine`, or None when it has none (a SQLite state, or
    procrastinate's tables not installed). A worker is alive when its last heartbeat is at most
    `stalled_after` seconds old (`workers.stalled_after`). Raises the store's StateError when
    the database cannot be read."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        if not conn.execute(_TABLES).scalar():
            return None
        return _read(conn, stalled_after)


def _read(conn: Connection, stalled_after: float) -> QueueStatus:
    counts: dict[str, dict[str, Any]] = {}
    for row in conn.execute(_JOBS):
        fields = counts.setdefault(row.queue, {})
        state = "waiting" if row.state == "todo" else row.state if row.state == "scheduled" else \
            _STATES.get(row.state)
        if state is None:       # a state a later procrastinate added: not shown, not miscounted
            continue
        fields[state] = fields.get(state, 0) + int(row.n)
        if row.state == "todo" and row.oldest is not None:
            fields["oldest_waiting"] = max(0.0, float(row.oldest))
    workers = tuple(
        WorkerState(id=int(row.id), heartbeat_age=max(0.0, float(row.age)), running=int(row.running),
                    alive=float(row.age) <= stalled_after)
        for row in conn.execute(_WORKERS))
    failed = conn.execute(_LAST_FAILED).first()
    return QueueStatus(
        queues=tuple(QueueCounts(queue=name, **fields) for name, fields in sorted(counts.items())),
        workers=workers, stalled_after=stalled_after,
        last_failed=FailedJob(id=int(failed.id), task=failed.task, queue=failed.queue,
                              channel=failed.channel, edition=failed.edition, keys=int(failed.keys),
                              age=max(0.0, float(failed.age))) if failed is not None else None)
