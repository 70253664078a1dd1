"""`pipeline worker`: a procrastinate worker on the `deliveries` queue, kept running through
database restarts, with a sweep that gives the jobs of dead workers to the living.

- Stalled jobs: every few seconds each worker deletes the workers whose heartbeat is older than
  `workers.stalled_after` and puts their running jobs back in the queue, so a SIGKILLed worker's
  job is taken by another within about that time (the job's keys left `sending` are then resent
  by the channel's crash rule: at most the messages that worker had in flight).
- The database going away stops procrastinate's worker (a failed heartbeat or listener too), or
  stalls it while its connection pool retries; this one waits until the database answers again,
  puts its own interrupted jobs back in the queue at once, and starts again. Just after an
  outage every heartbeat is old, the live workers' too, and a live one may come back later than
  this one (its pool's next try): the sweep prunes nobody while its own heartbeat is old, nor
  for twice the outage (plus `stalled_after`) after it saw the database again.
- A worker taken for dead anyway (its row pruned by another, its jobs given to others) finds out
  in its next sweep: its jobs stop at the messages in flight, their end is not recorded (the jobs
  are another run's now), and it registers again.
- SIGTERM / SIGINT: the jobs running finish the messages in flight; what they did not send goes
  back to the queue (their retry); the process then exits.
- SIGUSR1: the worker logs where each of its tasks and threads is (for a worker that seems stuck).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import psycopg
from procrastinate import exceptions as queue_errors
from procrastinate import jobs as queue_jobs
from procrastinate import manager as queue_manager
from procrastinate import worker as queue_worker

from pipeline.config import Config
from pipeline.errors import StateError
from pipeline.store.engine import engine_for
from pipeline.workers.app import QUEUE, conninfo, procrastinate_app
from pipeline.workers.schema import require_queue
from pipeline.workers.tasks import Deliverer, register

log = logging.getLogger(__name__)

STARTUP_PRUNE = 3600     # seconds: a worker silent this long is gone, whatever else happened

_OWN_HEARTBEAT = ("SELECT last_heartbeat > now() - make_interval(secs => %(seconds)s) AS fresh "
                  "FROM procrastinate_workers WHERE id = %(id)s")
_OURS = ("SELECT count(*) AS n FROM procrastinate_jobs "
         "WHERE id = %(id)s AND worker_id = %(worker)s AND status = 'doing'")
_BUSY = ("SELECT count(*) AS n FROM procrastinate_jobs "
         "WHERE queue_name = %(queue)s AND status IN ('todo', 'doing')")


def run_worker(config: Config, *, concurrency: int, until_idle: bool = False,
               started: Callable[[], None] | None = None) -> None:
    """Take delivery jobs and send them until SIGTERM / SIGINT (or, `until_idle`, until no
    delivery job is waiting or running anywhere). `started` is called once the worker runs.
    Raises StateError when the state database is not at this version's schema or has no queue."""
    require_queue(engine_for(config))       # made at head when new, checked otherwise
    asyncio.run(_Runner(config, concurrency=concurrency, until_idle=until_idle, started=started).main())


class _Runner:
    def __init__(self, config: Config, *, concurrency: int, until_idle: bool,
                 started: Callable[[], None] | None) -> None:
        self.config, self.concurrency, self.until_idle = config, concurrency, until_idle
        self.started = started
        self.stalled_after = config.workers.stalled_after
        self.stop = threading.Event()          # the jobs running: finish what is in flight
        self.app = procrastinate_app(config, pool_size=concurrency + 3)
        self.deliverer = Deliverer(config, self.stop)
        register(self.app, self.deliverer)
        self.worker: _Worker | None = None
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.stopping: asyncio.Event
        self.idle = False                      # `until_idle`, and no delivery job is left
        # When the sweep last found this worker's heartbeat fresh: kept across procrastinate
        # workers, so that the first sweep after a reconnection knows how long it was away.
        self.heartbeat_seen: float | None = None
        self.run_started: float | None = None  # when the current procrastinate worker started
        self.unrecorded: set[int] = set()      # jobs whose end the database did not take

    async def main(self) -> None:
        self.stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        loop.add_signal_handler(signal.SIGUSR1, lambda: log.warning("%s", stacks(self.name)))
        previous: int | None = None     # the worker id a database outage interrupted
        try:
            while not (self.idle or self.stopping.is_set()):
                if not await self._database_answers():
                    break
                try:
                    async with self.app.open_async():
                        if previous is not None or self.unrecorded:
                            await self._requeue(previous)
                            previous = None
                        await self._run()
                except (queue_errors.ConnectorException, psycopg.Error, StateError, OSError) as exc:
                    if self.stopping.is_set():
                        break
                    previous = self.worker.worker_id if self.worker else None
                    if self.heartbeat_seen is None:
                        # Lost before its sweep ever ran: its absence counts from its start.
                        self.heartbeat_seen = self.run_started
                    if isinstance(exc.__cause__, psycopg.errors.ForeignKeyViolation):
                        # It took a job under the registration another worker removed.
                        log.warning("worker %s: its registration was removed; registering again", self.name)
                    else:
                        log.warning("worker %s: lost the state database (%s); reconnecting", self.name,
                                    _one_line(exc))
                    await self._pause(1)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
                loop.remove_signal_handler(sig)
            await asyncio.to_thread(self.deliverer.close)

    def _on_signal(self) -> None:
        log.info("worker %s: stopping after the messages in flight", self.name)
        self.stop.set()
        self.stopping.set()
        if self.worker is not None:
            self.worker.stop()

    async def _run(self) -> None:
        """One procrastinate worker, with the sweep (and the idle watch), until it stops."""
        self.worker = _Worker(
            app=self.app, queues=[QUEUE], name=self.name, concurrency=self.concurrency, wait=True,
            install_signal_handlers=False, delete_jobs="successful", listen_notify=True,
            fetch_job_polling_interval=1.0,
            update_heartbeat_interval=max(1.0, self.stalled_after / 4),
            # procrastinate prunes at start with this: just after a database outage every
            # heartbeat is old, the live workers' too; `_sweep` prunes, after a grace period.
            stalled_worker_timeout=STARTUP_PRUNE)
        side = [asyncio.create_task(self._sweep())]
        if self.until_idle:
            side.append(asyncio.create_task(self._watch_idle(self.worker)))
        self.run_started = time.monotonic()
        if self.started is not None:
            self.started()
            self.started = None
        try:
            # It returns when asked to stop, or when one of its own tasks failed (the database
            # went away): then the loop in `main` waits for the database and starts another.
            await self.worker.run()
        finally:
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            self.unrecorded |= self.worker.unrecorded
            if not self.stopping.is_set():
                self.stop.clear()      # set by `_own_heartbeat_fresh`: the next worker sends again

    async def _sweep(self) -> None:
        """Every few seconds: forget the workers whose heartbeat stopped; their running jobs go
        back in the queue. Nobody is forgotten for a while after this worker itself lost the
        database: the others lost it too, and may take longer to come back."""
        manager = self.app.job_manager
        period = min(5.0, self.stalled_after / 4)
        # Not at once: after a database outage every worker's last heartbeat is old, and the
        # living need a heartbeat interval to show they live (else their jobs would run twice).
        await asyncio.sleep(self.stalled_after)
        hold_until = 0.0
        while True:
            try:
                if await self._own_heartbeat_fresh():
                    now = time.monotonic()
                    away = 0.0 if self.heartbeat_seen is None else now - self.heartbeat_seen
                    self.heartbeat_seen = now
                    if away > 2 * period:
                        # This worker could not reach the database (or its heartbeat) for `away`
                        # seconds; so could the others. A live one comes back when its connection
                        # pool next tries, and the pool's delays double (1 s, 2 s, 4 s ...): at
                        # most about `away` after the database returned. Until then its heartbeat
                        # is as old as a dead worker's.
                        hold_until = max(hold_until, now + 2 * away + self.stalled_after)
                        log.info("worker %s: out of touch with the state database for %.0f s; no worker "
                                 "is taken for dead in the next %.0f s", self.name, away, hold_until - now)
                    if now >= hold_until:
                        await self._prune(manager)
            except queue_errors.ConnectorException as exc:
                log.debug("stalled-job sweep skipped: %s", exc)
            _end_if_cancelled()
            await asyncio.sleep(period)

    async def _prune(self, manager: queue_manager.JobManager) -> None:
        """Forget the workers whose heartbeat is older than `stalled_after`; their jobs (and any
        job running under no worker) back in the queue."""
        pruned = await manager.prune_stalled_workers(self.stalled_after)
        stalled = await manager.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=self.stalled_after)
        for job in stalled:
            if await _retry(manager, job):
                log.warning("worker %s: job %s of a worker that stopped answering goes back in the queue",
                            self.name, job.id)
        if pruned:
            log.info("worker %s: %d stalled worker(s) removed", self.name, len(pruned))

    async def _own_heartbeat_fresh(self) -> bool:
        """Whether this worker's own heartbeat is recent. If it is as old as the others', the
        database was away (not they): prune nobody this round. If another worker pruned this
        one's row, stop its procrastinate worker: `main` starts another, registered afresh."""
        worker = self.worker
        if worker is None or worker.worker_id is None:
            return False
        row = await self.app.connector.execute_query_one_async(
            query=_OWN_HEARTBEAT, id=worker.worker_id, seconds=self.stalled_after)
        if row is None:
            # Another worker took this one for dead and gave its jobs to others: they stop at
            # the messages in flight (the keys they leave are sent by the jobs' other run).
            log.warning("worker %s: its registration was removed (taken for dead); its jobs stop at "
                        "the messages in flight, and it registers again", self.name)
            self.stop.set()
            worker.stop()
            return False
        return bool(row["fresh"])

    async def _watch_idle(self, worker: queue_worker.Worker) -> None:
        """`--until-idle`: stop once no delivery job is waiting or running on any worker."""
        while True:
            await asyncio.sleep(0.5)
            try:
                row = await self.app.connector.execute_query_one_async(query=_BUSY, queue=QUEUE)
            except queue_errors.ConnectorException:
                _end_if_cancelled()
                continue
            if row["n"] == 0:
                self.idle = True
                worker.stop()
                return

    async def _requeue(self, worker_id: int | None) -> None:
        """The jobs this process was running when the database went away: back in the queue now
        (their runs ended; the keys they left `sending` are resolved by their next run). Those
        whose worker unregistered meanwhile run under no worker: the sweep would take them only
        after its wait, long after an outage."""
        manager = self.app.job_manager
        jobs = list(await manager.list_jobs_async(worker_id=worker_id, status="doing")) if worker_id else []
        for job_id in sorted(self.unrecorded):
            jobs += [job for job in await manager.list_jobs_async(id=job_id, status="doing")
                     if job.worker_id in (None, worker_id)]
        for job in {job.id: job for job in jobs}.values():
            await _retry(manager, job)
        self.unrecorded.clear()

    async def _database_answers(self) -> bool:
        """Wait until the state database accepts a connection (False: asked to stop first)."""
        while not self.stopping.is_set():
            try:
                conn = await psycopg.AsyncConnection.connect(conninfo(self.config), connect_timeout=3)
            except psycopg.OperationalError as exc:
                log.warning("worker %s: the state database does not answer (%s); trying again",
                            self.name, _one_line(exc))
                await self._pause(1)
                continue
            await conn.close()
            return True
        return False

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)


class _Worker(queue_worker.Worker):
    """procrastinate's worker, but it stops when its heartbeat or listener fails (whatever side
    task ended before), and a job's end is recorded only while the job is still this worker's: a
    worker taken for dead had its jobs put back in the queue, maybe already taken by another.
    procrastinate would then finish (delete) or requeue that other run's job, or fail with the
    database's RAISE in a task nobody awaits ("Task exception was never retrieved")."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.unrecorded: set[int] = set()      # jobs whose end the database did not take

    async def _monitor_side_tasks(self, side_tasks: list[asyncio.Task[Any]]) -> None:
        # procrastinate's stops watching once any side task ends, even without an error: with no
        # periodic task its deferrer ends at once, and a heartbeat or listener that failed later
        # (the database went away) went unnoticed: the worker ran on with no heartbeat, and
        # once every worker's heartbeat was old no sweep ran. Stopping lets `main` start anew.
        pending = set(side_tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            failed = [task for task in done if not task.cancelled() and task.exception() is not None]
            if failed:
                log.warning("worker %s: its %s stopped (%s); starting again", self.worker_name,
                            failed[0].get_name(), _one_line(failed[0].exception() or Exception()))
                self.stop()
                return

    async def _persist_job_status(self, job: queue_jobs.Job, status: queue_jobs.Status,
                                  retry_decision: Any, context: Any, job_result: Any) -> None:
        try:
            row = await self.app.connector.execute_query_one_async(query=_OURS, id=job.id,
                                                                   worker=self.worker_id)
            if row["n"] == 0:
                log.warning("job %s ended (%s) after it was given to another worker; that one's run counts",
                            job.id, status.value)
                self._job_ids_to_abort.pop(job.id or 0, None)
                return
            await super()._persist_job_status(job=job, status=status, retry_decision=retry_decision,
                                              context=context, job_result=job_result)
        except queue_errors.ConnectorException as exc:
            if isinstance(exc.__cause__, psycopg.errors.RaiseException):
                log.warning("job %s ended (%s) as it was given to another worker; that one's run counts",
                            job.id, status.value)
                return
            if job.id is not None:
                self.unrecorded.add(job.id)    # the database went away: `_requeue` puts it back
            raise


def _end_if_cancelled() -> None:
    """Raise CancelledError if the running task is being cancelled. For the loops that log a
    database error and go on: psycopg cancels the query that a cancellation interrupts, and on a
    lost connection its error (in the cancel, or in closing the cursor) replaces the
    CancelledError, or a step that tolerates errors swallows it. A loop that went on would never
    end, and the `await` of its end hung the worker for ever after a database outage."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def stacks(name: str) -> str:
    """Where each asyncio task of the running loop and each thread of this process is, as text:
    what a worker that seems stuck is waiting for."""
    out = io.StringIO()
    out.write(f"worker {name}: stacks (SIGUSR1)\n")
    for task in asyncio.all_tasks():
        task.print_stack(file=out)
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        out.write(f"thread {names.get(ident, ident)}:\n{''.join(traceback.format_stack(frame))}")
    return out.getvalue()


async def _retry(manager: queue_manager.JobManager, job: queue_jobs.Job) -> bool:
    """Put a running job back in the queue; False when it no longer runs (another worker's sweep,
    or its own worker, got there first: the database RAISEs for a job not in 'doing')."""
    try:
        await manager.retry_job(job)
    except queue_errors.ConnectorException as exc:
        if isinstance(exc.__cause__, psycopg.errors.RaiseException):
            return False
        raise
    return True


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
