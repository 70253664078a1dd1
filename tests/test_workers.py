"""`execution: workers`: publish (and retry, the timetable) plan the ledger rows and defer
procrastinate jobs; `pipeline worker` processes send them with the ledger's rules.

Real parts only: the session's PostgreSQL server (tests/pg_server.py), an SMTP sink (aiosmtpd),
the outbox channel's files, `python -m pipeline` processes for the commands. The faults (a worker
killed, the database restarted) and the benchmark are in test_worker_faults.py and bench/."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text, update

from pipeline.config import Config, load_config
from pipeline.errors import ConfigError
from pipeline.models import Status
from pipeline.plan import email_key
from pipeline.publish import sender_domain
from pipeline.render.mime import message_id
from pipeline.store import migrate, revision
from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from pipeline.store.ledger import Ledger
from pipeline.store.schema import deliveries, metadata
from pipeline.store.state_copy import copy_state
from tests.channels.test_smtp import smtp_config
from tests.channels.test_webhook import NAME, URL, webhook_config
from tests.conftest import SEED_SLUG, ledger_rows, thread_post

on_postgresql = pytest.mark.parametrize("state_backend", ["postgresql"], indirect=True)
pytestmark = pytest.mark.state_backends

N = 25
BATCH = 10                 # keys per job: 3 jobs for N readers
READERS = [f"reader{i:02d}@example.com" for i in range(N)]


@pytest.fixture(autouse=True)
def _postgresql(request: pytest.FixtureRequest) -> None:
    if "state_backend" not in request.fixturenames:
        return
    """Skip (never in CI, where `make test` installs it) when no PostgreSQL server can be started."""
    try:
        request.getfixturevalue("postgres_server")
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no PostgreSQL server could be started: {str(exc).splitlines()[0]}")


def workers_mode(project: Path, *, batch: int = BATCH) -> Config:
    """The project's config with `execution: workers` (a dead worker's jobs move after 2 s)."""
    path = project / "config.yaml"
    path.write_text(path.read_text(encoding="utf-8")
                    + f"\nexecution: workers\nworkers:\n  batch: {batch}\n  stalled_after: 2\n",
                    encoding="utf-8")
    return load_config(path)


@pytest.fixture
def newsletter(project: Path, sink) -> Config:  # type: ignore[no-untyped-def]
    """Workers mode, an SMTP channel `newsletter` to the sink, N readers."""
    smtp_config(project, sink.port)
    config = workers_mode(project)
    engine = engine_for(config)
    for address in READERS:
        store.upsert(engine, address)
    return config


def jobs(config: Config) -> list[dict[str, object]]:
    """The delivery jobs in the queue: status and args."""
    with engine_for(config).connect() as conn:
        return [{"id": r.id, "status": r.status, **r.args} for r in conn.execute(text(
            "SELECT id, status::text AS status, args FROM procrastinate_jobs "
            "WHERE queue_name = 'deliveries' ORDER BY id"))]


@on_postgresql
def test_publish_defers_jobs_then_a_worker_delivers_each_address_once_with_the_inline_message_ids(  # type: ignore[no-untyped-def]
        newsletter: Config, sink, run_cli, project: Path) -> None:
    cfg = project / "config.yaml"
    planned = run_cli("--config", cfg, "publish", SEED_SLUG, "--channel", "newsletter")
    assert planned.returncode == 0, planned.stderr
    assert f"newsletter: {N} planned, 3 jobs deferred to the workers" in planned.stdout
    assert sink.received == []
    assert {r.status for r in ledger_rows(newsletter, "newsletter")} == {Status.PENDING}
    queued = jobs(newsletter)
    assert [j["status"] for j in queued] == ["todo"] * 3
    keys = [k for j in queued for k in j["keys"]]  # type: ignore[attr-defined]
    assert keys == sorted(email_key("newsletter", SEED_SLUG, a) for a in READERS)    # each key once, in order
    assert [len(j["keys"]) for j in queued] == [10, 10, 5]  # type: ignore[arg-type]
    assert {(j["channel"], j["edition"]) for j in queued} == {("newsletter", SEED_SLUG)}
    done = run_cli("--config", cfg, "worker", "--concurrency", "2", "--until-idle")
    assert done.returncode == 0, done.stderr
    assert sink.recipients() == {a: 1 for a in READERS}
    domain = sender_domain(newsletter.sender, newsletter)
    ids = {m.rcpt_tos[0]: m.message["Message-ID"] for m in sink.received}
    assert ids == {a: message_id(SEED_SLUG, a, domain) for a in READERS}
    rows = ledger_rows(newsletter, "newsletter")
    assert {r.status for r in rows} == {Status.SENT}
    assert {r.remote_id for r in rows} == set(ids.values())
    assert [j["status"] for j in jobs(newsletter)] == []          # succeeded jobs are deleted
    again = run_cli("--config", cfg, "publish", SEED_SLUG, "--channel", "newsletter")
    assert f"newsletter: 0 planned, 0 jobs deferred to the workers, {N} already sent" in again.stdout
    assert jobs(newsletter) == []


@on_postgresql
def test_a_second_planner_defers_nothing_while_jobs_live_and_redefers_a_lost_job(  # type: ignore[no-untyped-def]
        newsletter: Config) -> None:
    from pipeline.publish import publish, retry

    publish(newsletter, slugs=[SEED_SLUG], channels=["newsletter"])
    first = jobs(newsletter)
    [second] = publish(newsletter, slugs=[SEED_SLUG], channels=["newsletter"])
    assert (second.jobs, second.total) == (0, N)
    assert jobs(newsletter) == first
    lost = first[1]
    with engine_for(newsletter).begin() as conn:
        conn.execute(text("DELETE FROM procrastinate_jobs WHERE id = :id"), {"id": lost["id"]})
        # A worker died holding one of the lost job's keys: the planner resends it.
        conn.execute(update(deliveries).where(deliveries.c.key == lost["keys"][0])  # type: ignore[index]
                     .values(status=Status.SENDING))
    [third] = retry(newsletter, channels=["newsletter"])
    assert (third.jobs, third.resent) == (1, 1)
    redeferred = jobs(newsletter)[-1]
    assert redeferred["keys"] == lost["keys"]
    assert Ledger(engine_for(newsletter)).get(lost["keys"][0]).resends == 1  # type: ignore[index, union-attr]


@on_postgresql
def test_two_planners_at_once_defer_each_key_once(newsletter: Config) -> None:
    from pipeline.publish import publish

    errors: list[BaseException] = []

    def plan() -> None:
        try:
            publish(newsletter, slugs=[SEED_SLUG], channels=["newsletter"])
        except BaseException as exc:     # reported below, with the test's own assertion
            errors.append(exc)

    threads = [threading.Thread(target=plan) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    keys = [k for j in jobs(newsletter) for k in j["keys"]]  # type: ignore[attr-defined]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == N


@on_postgresql
def test_a_job_run_twice_sends_nothing_twice_and_resends_only_its_own_keys_left_sending(  # type: ignore[no-untyped-def]
        newsletter: Config, sink) -> None:
    from pipeline.publish import publish
    from pipeline.workers.tasks import Deliverer

    [report] = publish(newsletter, slugs=[SEED_SLUG], channels=["newsletter"])
    assert report.jobs == 3
    first, second, _ = jobs(newsletter)
    deliverer = Deliverer(newsletter, threading.Event())
    try:
        assert deliverer.deliver("newsletter", SEED_SLUG, first["keys"]).sent == BATCH  # type: ignore[arg-type]
        assert deliverer.deliver("newsletter", SEED_SLUG, first["keys"]).sent == 0      # type: ignore[arg-type]
        assert sink.recipients() == {k.rsplit(":", 1)[1]: 1 for k in first["keys"]}  # type: ignore[attr-defined]
        # The first attempt of the second job died after writing the intent of two keys; a key of
        # the third job is `sending` too (a live worker has it): only the second job's are resent.
        mine, theirs = second["keys"][:2], jobs(newsletter)[2]["keys"][0]  # type: ignore[index]
        with engine_for(newsletter).begin() as conn:
            conn.execute(update(deliveries).where(deliveries.c.key.in_([*mine, theirs]))
                         .values(status=Status.SENDING))
        again = deliverer.deliver("newsletter", SEED_SLUG, second["keys"])  # type: ignore[arg-type]
    finally:
        deliverer.close()
    assert (again.sent, again.resent) == (BATCH, 2)
    statuses = {r.key: r.status for r in ledger_rows(newsletter, "newsletter")}
    assert statuses[theirs] == Status.SENDING
    assert sum(sink.recipients().values()) == 2 * BATCH


@on_postgresql
def test_social_posts_and_articles_go_through_the_workers(project: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    config = workers_mode(project, batch=2)
    cfg = project / "config.yaml"
    store.upsert(engine_for(config), "reader@example.com")
    done = run_cli("--config", cfg, "publish", SEED_SLUG, "--channel", "outbox")
    assert done.returncode == 0, done.stderr
    outbox = project / "out" / "outbox"
    assert not (outbox / "social.jsonl").exists()
    kinds = {r.kind for r in ledger_rows(config, "outbox")}
    assert kinds == {"email", "social", "article"}
    worker = run_cli("--config", cfg, "worker", "--until-idle")
    assert worker.returncode == 0, worker.stderr
    rows = ledger_rows(config, "outbox")
    assert {r.status for r in rows} == {Status.SENT}
    posted = [json.loads(line) for line in (outbox / "social.jsonl").read_text().splitlines()]
    assert sorted(p["network"] for p in posted) == sorted(r.network for r in rows if r.kind == "social")
    assert len(list((outbox / "articles").iterdir())) == 1
    assert len(list((outbox / "mail" / "new").iterdir())) == 1


def test_workers_need_a_postgresql_state(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("site: {name: S, url: https://example.com}\nstate: state/pipeline.sqlite3\n"
                    "execution: workers\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (f"{path}:3: execution: `workers` needs a PostgreSQL state "
                                 "(state: postgresql+psycopg://...); use `execution: inline` with a "
                                 "SQLite state")


@on_postgresql
def test_db_upgrade_installs_the_queue_and_the_schema_comparison_ignores_it(  # type: ignore[no-untyped-def]
        project: Path, run_cli, postgres_url: str, tmp_path: Path) -> None:
    cfg = project / "config.yaml"
    # A state made at head by a version without workers: the pipeline's tables, no queue.
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        metadata.create_all(conn)
        revision.stamp(conn)
    done = run_cli("--config", cfg, "db", "upgrade")
    assert done.returncode == 0, done.stderr
    with engine.connect() as conn:
        assert conn.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar() is not None
        context = MigrationContext.configure(conn, opts={"include_name": migrate.include_name})
        assert compare_metadata(context, metadata) == []
    engine.dispose()
    engine = engine_for(load_config(cfg))
    assert migrate.database_status(postgres_url).as_dict()["state"] == "ok"
    # `db copy` into a database that has the queue's tables: only the state's tables are copied.
    sqlite_cfg = tmp_path / "sqlite.yaml"
    sqlite_cfg.write_text(cfg.read_text(encoding="utf-8").replace(f"state: {json.dumps(postgres_url)}",
                                                                  "state: state/pipeline.sqlite3"),
                          encoding="utf-8")
    (tmp_path / "templates").symlink_to(project / "templates")
    (tmp_path / "posts").symlink_to(project / "posts")
    store.upsert(engine_for(load_config(sqlite_cfg)), "reader@example.com")
    with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    copy_state(engine_for(load_config(sqlite_cfg)), postgres_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM subscribers")).scalar() == 1


@on_postgresql
def test_a_429_holds_every_worker_and_a_rate_goes_through_the_database(  # type: ignore[no-untyped-def]
        project: Path, monkeypatch: pytest.MonkeyPatch, sink) -> None:
    from pipeline.publish import publish
    from pipeline.workers.tasks import Deliverer

    webhook_config(project, monkeypatch)
    smtp_config(project, sink.port, rate=1000)
    config = workers_mode(project)
    store.upsert(engine_for(config), "reader@example.com")
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(URL).mock(return_value=httpx.Response(429, headers={"Retry-After": "3600"}))
        [social, email] = publish(config, slugs=[SEED_SLUG], channels=[NAME, "newsletter"])
        assert (social.jobs, email.jobs) == (1, 1)
        [hooks, mail] = sorted(jobs(config), key=lambda j: str(j["channel"]) != NAME)
        one, other = Deliverer(config, threading.Event()), Deliverer(config, threading.Event())
        try:
            first = one.deliver(NAME, SEED_SLUG, hooks["keys"])  # type: ignore[arg-type]
            called = route.call_count
            assert first.sent == 0 and called >= 1
            with engine_for(config).begin() as conn:     # due again, as if the reset had come
                conn.execute(update(deliveries).where(deliveries.c.channel == NAME)
                             .values(next_attempt_at=None))
            # Another worker (its own limits) does not call the network while the 429 holds.
            second = other.deliver(NAME, SEED_SLUG, hooks["keys"])  # type: ignore[arg-type]
            assert (second.sent, second.deferred, route.call_count) == (0, len(hooks["keys"]), called)  # type: ignore[arg-type]
            assert other.deliver("newsletter", SEED_SLUG, mail["keys"]).sent == 1  # type: ignore[arg-type]
        finally:
            one.close()
            other.close()
    with engine_for(config).connect() as conn:
        limits = {r.key: r.held_until for r in conn.execute(text("SELECT key, held_until FROM rate_limits"))}
    assert set(limits) == {f"channel:{NAME}", "channel:newsletter"}
    assert limits[f"channel:{NAME}"] is not None and limits["channel:newsletter"] is None


@on_postgresql
def test_a_timetable_run_defers_jobs_too(project: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    config = workers_mode(project)
    store.upsert(engine_for(config), "reader@example.com")
    done = run_cli("--config", project / "config.yaml", "run", "--once")
    assert done.returncode == 0, done.stderr
    assert "hourly-latest:\noutbox: 5 planned, 1 job deferred to the workers" in done.stdout
    assert jobs(config) and {j["channel"] for j in jobs(config)} == {"outbox"}
    assert not (project / "out" / "outbox" / "social.jsonl").exists()


@on_postgresql
def test_sigusr1_shows_where_a_worker_waits_and_sigterm_stops_it_with_exit_0(project: Path) -> None:
    workers_mode(project)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(project / "config.yaml"),
                             "worker"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().startswith("Worker running (1 job at once)")
        proc.send_signal(signal.SIGUSR1)
        dump = []
        for line in proc.stderr:        # the dump ends with the main thread's stack, in the loop
            dump.append(line)
            if "run_forever" in line or "_run_once" in line:
                break
        text = "".join(dump)
        assert "stacks (SIGUSR1)" in text and "Stack for <Task" in text and "thread MainThread" in text
        assert "_sweep" in text, text      # the tasks are named by where they wait
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_only_workers_mode_imports_procrastinate() -> None:
    code = ("import sys, pipeline.cli, pipeline.publish, pipeline.store.engine, pipeline.store.migrate, "
            "pipeline.timetable.schedule; print('procrastinate' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@on_postgresql
def test_a_threads_parts_in_separate_jobs_all_go_out_in_order(project: Path, run_cli, write_post) -> None:  # type: ignore[no-untyped-def]
    write_post("2024-01-01-a-long-story.md", thread_post(12))
    config = workers_mode(project, batch=1)              # every part a job of its own
    cfg = project / "config.yaml"
    planned = run_cli("--config", cfg, "publish", "2024-01-01-a-long-story", "--channel", "outbox")
    assert planned.returncode == 0, planned.stderr
    social = [r for r in ledger_rows(config, "outbox") if r.kind == "social"]
    assert max(r.part for r in social) > 2
    worker = run_cli("--config", cfg, "worker", "--concurrency", "3", "--until-idle")
    assert worker.returncode == 0, worker.stderr
    rows = {r.key: r for r in ledger_rows(config, "outbox")}
    assert {r.status for r in rows.values()} == {Status.SENT}
    lines = (project / "out" / "outbox" / "social.jsonl").read_text(encoding="utf-8").splitlines()
    posted = [json.loads(line) for line in lines]
    for network in {r.network for r in social}:
        parts = [p["part"] for p in posted if p["network"] == network]
        assert parts == sorted(parts)


@on_postgresql
def test_sigterm_mid_job_finishes_the_messages_in_flight_and_requeues_the_rest(  # type: ignore[no-untyped-def]
        project: Path, sink, run_cli) -> None:
    from pipeline.publish import publish

    smtp_config(project, sink.port, rate=20)         # slow enough to be stopped half-way
    config = workers_mode(project, batch=N)
    for address in READERS:
        store.upsert(engine_for(config), address)
    publish(config, slugs=[SEED_SLUG], channels=["newsletter"])
    cfg = str(project / "config.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", cfg, "worker"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(sink.received) >= 3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    statuses = [r.status for r in ledger_rows(config, "newsletter")]
    assert statuses.count(Status.SENT) == len(sink.received) < N
    assert Status.SENDING not in statuses
    assert [j["status"] for j in jobs(config)] == ["todo"]         # the rest, back in the queue
    done = run_cli("--config", cfg, "worker", "--until-idle")
    assert done.returncode == 0, done.stderr
    assert sink.recipients() == {a: 1 for a in READERS}


def wait_for(condition, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    """Poll `condition` until it holds; fail (as hung, never as slow) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def _weekly_digest(project: Path) -> tuple[Path, Config, Any]:
    """The project's config with a weekly digest entry on `newsletter`: its path, it, the entry."""
    path = project / "config.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "schedule:\n"
                    '  - {name: weekly, channels: [newsletter], cron: "0 9 * * mon", edition: digest}\n',
                    encoding="utf-8")
    config = load_config(path)
    return path, config, config.schedule[0]


@on_postgresql
def test_a_digest_is_deferred_and_compiled_again_by_the_worker(  # type: ignore[no-untyped-def]
        newsletter: Config, sink, run_cli, project: Path) -> None:
    from pipeline.timetable.schedule import digest_edition, run_entry

    path, config, entry = _weekly_digest(project)
    monday = datetime(2024, 5, 20, 13, tzinfo=UTC)   # the mood journal post is dated that morning
    [report] = run_entry(config, entry, monday, now=monday)
    assert report.jobs == 3 and report.sent == 0 and sink.received == []
    queued = jobs(config)
    assert {(j["edition"], j["digest_entry"], j["digest_fire"]) for j in queued} == {
        ("digest-weekly-2024-05-20", "weekly", monday.isoformat())}
    done = run_cli("--config", path, "worker", "--until-idle")
    assert done.returncode == 0, done.stderr
    assert sink.recipients() == {a: 1 for a in READERS}
    # The worker's digest is the one the timetable compiled: same subject, same posts.
    expected = digest_edition(config, entry, "newsletter", monday,
                              [p for p in _posts(config) if p.slug == "mood-journal"])
    assert {m.message["Subject"] for m in sink.received} == {expected.subject}
    assert all("mood" in m.message.get_body(("html",)).get_content().lower() for m in sink.received)
    rows = ledger_rows(config, "newsletter")
    assert {(r.edition, r.status) for r in rows} == {("digest-weekly-2024-05-20", Status.SENT)}
    again = run_entry(config, entry, monday + timedelta(minutes=1), now=monday + timedelta(minutes=1))
    assert [r.jobs for r in again] == [0] and jobs(config) == []


@on_postgresql
def test_an_empty_digest_note_is_sent_by_the_worker(  # type: ignore[no-untyped-def]
        newsletter: Config, sink, run_cli, project: Path) -> None:
    from pipeline.timetable.schedule import run_entry

    path, _, _ = _weekly_digest(project)
    path.write_text(path.read_text(encoding="utf-8") + "digest: {empty: note}\n", encoding="utf-8")
    config = load_config(path)
    [entry] = config.schedule
    monday = datetime(2026, 11, 30, 14, tzinfo=UTC)   # no post is new that week: the note goes out
    [report] = run_entry(config, entry, monday, now=monday)
    assert report.jobs == 3
    done = run_cli("--config", path, "worker", "--until-idle")
    assert done.returncode == 0, done.stderr
    assert sink.recipients() == {a: 1 for a in READERS}
    assert all("Nothing new" in m.message.get_body(("html",)).get_content() for m in sink.received)


@on_postgresql
def test_lost_digest_jobs_are_deferred_again_by_retry(  # type: ignore[no-untyped-def]
        newsletter: Config, sink, run_cli, project: Path) -> None:
    from pipeline.store.runs import record_run
    from pipeline.timetable.schedule import run_entry

    path, config, entry = _weekly_digest(project)
    monday = datetime(2024, 5, 20, 13, tzinfo=UTC)
    assert record_run(engine_for(config), "weekly", monday, "ran")      # as the daemon fires
    [report] = run_entry(config, entry, monday, now=monday)
    assert report.jobs == 3
    with engine_for(config).begin() as conn:                            # the jobs are lost
        conn.execute(text("DELETE FROM procrastinate_jobs WHERE queue_name = 'deliveries'"))
    again = run_cli("--config", path, "retry")
    assert again.returncode == 0, again.stderr
    assert {(j["edition"], j["digest_entry"], j["digest_fire"]) for j in jobs(config)} == {
        ("digest-weekly-2024-05-20", "weekly", monday.isoformat())}
    done = run_cli("--config", path, "worker", "--until-idle")
    assert done.returncode == 0, done.stderr
    assert sink.recipients() == {a: 1 for a in READERS}
    assert len({m.message["Subject"] for m in sink.received}) == 1


def _posts(config: Config) -> list:  # type: ignore[type-arg]
    from pipeline.intake.sources import load_all

    return list(load_all(config).posts)


@on_postgresql
@pytest.mark.parametrize("loop", ["_sweep", "_watch_idle"])
def test_a_worker_loop_cancelled_mid_query_on_a_lost_connection_ends(newsletter: Config, loop: str) -> None:
    # psycopg cancels a query its task's cancellation interrupts; on a lost connection that fails,
    # and procrastinate hands on the connection error instead of the CancelledError. A loop that
    # logged it and went on never ended: a worker hung for ever after a database outage.
    import asyncio

    from procrastinate import exceptions as queue_errors

    from pipeline.workers.runner import QUEUE, _Runner, _Worker

    async def scenario() -> bool:
        runner = _Runner(newsletter, concurrency=1, until_idle=True, started=None)
        asked = asyncio.Event()

        async def lost_connection_query(**_: Any) -> dict[str, Any]:
            asked.set()
            try:
                await asyncio.Event().wait()        # the query never answers ...
            except asyncio.CancelledError:          # ... and cancelling it fails as psycopg's does
                raise queue_errors.ConnectorException("the connection is lost") from None
            raise AssertionError("unreachable")

        async with runner.app.open_async():
            worker = _Worker(app=runner.app, queues=[QUEUE], name="test", wait=True)
            worker.worker_id = 1
            runner.worker = worker
            runner.stalled_after = 0.1             # the sweep's first wait
            runner.app.connector.execute_query_one_async = lost_connection_query  # type: ignore[method-assign]
            task = asyncio.create_task(getattr(runner, loop)(*([worker] if loop == "_watch_idle" else [])))
            await asyncio.wait_for(asked.wait(), 30)
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=30)   # a bound for a hang, not a measure
            if not done:
                task.uncancel()
                task.cancel()
            return bool(done) and task.cancelled()

    # On a thread of its own: the session's browser keeps an event loop running on this one.
    ended: list[bool] = []
    runner = threading.Thread(target=lambda: ended.append(asyncio.run(scenario())), daemon=True)
    runner.start()
    runner.join(120)
    assert ended == [True], f"{loop} went on after its cancellation"
