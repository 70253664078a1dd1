"""The delivery queue (workers/queue.py) on a real PostgreSQL with procrastinate's schema: jobs
deferred with procrastinate itself, moved to each state as a worker would move them, workers with
fresh and old heartbeats; what `pipeline status` prints and `--json` gives, and what /metrics serves.
A SQLite state has no queue: no section, no error."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import procrastinate
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, event, text

from pipeline.config import Config, load_config
from pipeline.store.engine import engine_for
from pipeline.web.server import build_server
from pipeline.workers.app import conninfo
from pipeline.workers.queue import QueueCounts, queue_status
from tests.servers import AppServers
from tests.smtp_sink import free_port

RunCli = Callable[..., subprocess.CompletedProcess[str]]
postgresql = pytest.mark.parametrize("state_backend", ["postgresql"], indirect=True)
EDITION = "2024-05-01-hello"


def _workers_config(project: Path) -> Config:
    path = project / "config.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "\nexecution: workers\n", encoding="utf-8")
    return load_config(path)


@pytest.fixture
def app(project: Path) -> Iterator[procrastinate.App]:
    """A procrastinate App on the project's PostgreSQL state, its schema applied, opened."""
    config = _workers_config(project)
    engine = engine_for(config)
    with engine.connect() as conn:
        installed = conn.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar() is not None
    test_app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo(config)))
    if not installed:
        test_app.schema_manager.apply_schema()
    with test_app.open():
        yield test_app


def _defer(app: procrastinate.App, keys: int, *, queue: str = "deliveries", **options: object) -> int:
    deferrer = app.configure_task(name="pipeline.deliver", queue=queue, **options)
    return int(deferrer.defer(channel="newsletter", edition=EDITION,
                              keys=[f"newsletter:{EDITION}:{i}" for i in range(keys)]))


def _jobs_in_every_state(app: procrastinate.App, engine: Engine) -> dict[str, int]:
    """Waiting: 3 in `deliveries` (one deferred ten minutes ago), 1 in `other`; one retry an hour
    away; running: 2 on a live worker, 1 on a worker silent for five minutes; 1 failed two minutes
    ago (a batch of 3 keys); 1 succeeded. The workers' ids."""
    waiting = [_defer(app, 2) for _ in range(3)]
    _defer(app, 2, queue="other")
    _defer(app, 2, schedule_in={"hours": 1})
    running = [_defer(app, 2) for _ in range(3)]
    failed, done = _defer(app, 3), _defer(app, 2)
    with engine.begin() as conn:
        live, dead = conn.execute(text(
            "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '2 seconds'), "
            "(now() - interval '5 minutes') RETURNING id")).scalars().all()
        conn.execute(text("UPDATE procrastinate_events SET at = now() - interval '10 minutes' "
                          "WHERE job_id = :id AND type = 'deferred'"), {"id": waiting[0]})
        for job, worker in zip(running, (live, live, dead), strict=True):
            conn.execute(text("UPDATE procrastinate_jobs SET status = 'doing', worker_id = :w "
                              "WHERE id = :id"), {"id": job, "w": worker})
        for job, final in ((failed, "failed"), (done, "succeeded")):
            # As a worker does: todo -> doing -> the end (procrastinate's triggers record each step).
            conn.execute(text("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = :id"), {"id": job})
            conn.execute(text("UPDATE procrastinate_jobs SET status = CAST(:final AS "
                              "procrastinate_job_status) WHERE id = :id"), {"id": job, "final": final})
        conn.execute(text("UPDATE procrastinate_events SET at = now() - interval '2 minutes' "
                          "WHERE job_id = :id AND type = 'failed'"), {"id": failed})
    return {"live": live, "dead": dead, "failed": failed}


@postgresql
def test_the_queue_counts_jobs_by_state_and_names_the_workers(app: procrastinate.App, config: Config) -> None:
    engine = engine_for(config)
    ids = _jobs_in_every_state(app, engine)
    found = queue_status(engine, stalled_after=30)
    assert found is not None
    deliveries, other = found.queues
    assert deliveries == QueueCounts(queue="deliveries", waiting=3, scheduled=1, running=3, failed=1,
                                     succeeded=1, oldest_waiting=deliveries.oldest_waiting)
    assert other == QueueCounts(queue="other", waiting=1, oldest_waiting=other.oldest_waiting)
    # Ages are the database's: the job deferred "ten minutes ago" has waited that long.
    assert deliveries.oldest_waiting is not None and 600 <= deliveries.oldest_waiting < 660
    assert (found.waiting, found.running, found.failed, found.scheduled) == (4, 3, 1, 1)
    assert [(w.id, w.running, w.alive) for w in found.workers] == [(ids["live"], 2, True),
                                                                    (ids["dead"], 1, False)]
    assert [w.id for w in found.alive] == [ids["live"]]
    assert found.stalled == 1
    last = found.last_failed
    assert last is not None
    assert (last.id, last.task, last.channel, last.edition, last.keys) == \
        (ids["failed"], "pipeline.deliver", "newsletter", EDITION, 3)
    assert 120 <= last.age < 180


@postgresql
def test_status_shows_the_queue_and_warns_of_a_dead_worker(app: procrastinate.App, project: Path,
                                                           run_cli: RunCli) -> None:
    ids = _jobs_in_every_state(app, engine_for(load_config(project / "config.yaml")))
    shown = run_cli("status", cwd=project)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "Queue: 4 waiting (the oldest for 10 min), 3 running, 1 failed, 1 to retry later" in lines
    assert "  deliveries: 3 waiting, 3 running, 1 failed, 1 to retry later, 1 done" in lines
    [workers] = [line for line in lines if line.startswith("Workers:")]
    assert re.fullmatch(rf"Workers: 1 alive; worker {ids['live']}: heartbeat \d s ago, 2 running; "
                        r"1 without a heartbeat for over 30 s", workers), workers
    [failed] = [line for line in lines if line.startswith("Last failed job:")]
    assert failed.startswith(f"Last failed job: {ids['failed']} pipeline.deliver (newsletter, {EDITION}, "
                             "3 keys), 2 min ago;")
    assert shown.stderr.strip() == ("warning: 1 running jobs belong to workers without a heartbeat for 30 s; "
                                    "a live worker takes them over")

    as_json = run_cli("status", "--json", cwd=project)
    assert as_json.returncode == 0, as_json.stderr
    found = json.loads(as_json.stdout)
    assert found["deliveries"] == []
    queue = found["queue"]
    totals = ("waiting", "running", "failed", "scheduled", "stalled", "workers_alive")
    assert {k: queue[k] for k in totals} == \
        {"waiting": 4, "running": 3, "failed": 1, "scheduled": 1, "stalled": 1, "workers_alive": 1}
    assert [q["queue"] for q in queue["queues"]] == ["deliveries", "other"]
    assert queue["last_failed"]["id"] == ids["failed"]


@postgresql
def test_no_worker_alive_with_jobs_waiting_is_a_warning(app: procrastinate.App, project: Path,
                                                        run_cli: RunCli) -> None:
    _defer(app, 5)
    shown = run_cli("status", cwd=project)
    assert shown.returncode == 0, shown.stderr
    assert "Workers: 0 alive" in shown.stdout.splitlines()
    assert shown.stderr.strip() == ("warning: 1 delivery jobs and no worker alive: start `pipeline worker` "
                                    "(on any machine with the config)")


@postgresql
def test_metrics_serve_the_queue_depth(app: procrastinate.App, project: Path) -> None:
    config = load_config(project / "config.yaml")
    _jobs_in_every_state(app, engine_for(config))
    servers = AppServers()
    try:
        base = servers.run(build_server(config, port=free_port()))
        response = httpx.get(f"{base}/metrics")
    finally:
        servers.stop()
    assert response.status_code == 200, response.text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(response.text) for s in family.samples}
    jobs = {labels: v for (name, labels), v in samples.items() if name == "pipeline_jobs"}
    states = ("waiting", "scheduled", "running", "failed", "succeeded", "cancelled")
    expected = {"deliveries": (3, 1, 3, 1, 1, 0), "other": (1, 0, 0, 0, 0, 0)}
    assert jobs == {(("queue", queue), ("state", state)): n
                    for queue, counts in expected.items() for state, n in zip(states, counts, strict=True)}
    assert samples[("pipeline_workers_alive", ())] == 1
    assert samples[("pipeline_jobs_stalled", ())] == 1
    assert 600 <= samples[("pipeline_jobs_oldest_waiting_seconds", (("queue", "deliveries"),))] < 660


@postgresql
def test_an_empty_queue_is_shown_with_workers_execution_only(app: procrastinate.App, project: Path,
                                                             run_cli: RunCli) -> None:
    shown = run_cli("status", cwd=project)
    assert shown.returncode == 0 and shown.stderr == "", shown.stderr
    assert shown.stdout.splitlines()[:2] == ["Queue: 0 waiting, 0 running, 0 failed", "Workers: 0 alive"]
    inline = project / "config.yaml"
    inline.write_text(inline.read_text(encoding="utf-8").replace("\nexecution: workers\n", "\n"),
                      encoding="utf-8")
    plain = run_cli("status", cwd=project)
    assert plain.returncode == 0 and "Queue:" not in plain.stdout and "Workers:" not in plain.stdout
    assert json.loads(run_cli("status", "--json", cwd=project).stdout) == []


def test_a_sqlite_state_has_no_queue_and_makes_no_query(project: Path, config: Config,
                                                        run_cli: RunCli) -> None:
    engine = engine_for(config)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, sql, *_: statements.append(sql))
    assert queue_status(engine) is None
    assert statements == []
    shown = run_cli("status", cwd=project)
    assert shown.returncode == 0 and shown.stderr == "", shown.stderr
    assert "Queue:" not in shown.stdout and "Workers:" not in shown.stdout


@postgresql
def test_a_postgresql_state_without_procrastinate_has_no_queue(config: Config) -> None:
    engine = engine_for(config)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS procrastinate_events, procrastinate_periodic_defers, "
                          "procrastinate_jobs, procrastinate_workers CASCADE"))
    assert queue_status(engine) is None
