"""`pipeline db copy --to URL`: a SQLite state with a list, a sent edition, a bounce and a missed
run, moved into an empty PostgreSQL database; the counts agree table by table, the pipeline
works on the copy as it did on the file (nothing is sent again, new subscribers get new ids), and
a target that holds rows, or is the state database itself, is refused with one line."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url

from pipeline.config import load_config
from pipeline.store import events, runs
from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from pipeline.store.events import Event, EventKind
from pipeline.store.schema import metadata
from tests.conftest import send_through

RunCli = Callable[..., subprocess.CompletedProcess[str]]
READERS = 600           # more than two batches of 250
COUNT_ROW = re.compile(r"^\W*(\w+)\W+([\d,]+)\W*$")


def _fill(project: Path) -> dict[str, int]:
    """A state with something in most tables; the rows of each table, read from the file."""
    config = load_config(project / "config.yaml")
    engine = engine_for(config)
    csv = project / "list.csv"
    csv.write_text("email,name\n" + "".join(f"reader{i}@example.com,Reader {i}\n" for i in range(READERS)))
    store.import_csv(engine, csv)
    send_through(config, name="outbox")
    events.record(engine, Event(event_id="dsn:1", email="reader7@example.com", kind=EventKind.HARD,
                                source="dsn", edition="seed", detail="550 5.1.1 user unknown",
                                at=datetime(2026, 11, 2, tzinfo=UTC)))
    runs.record_run(engine, "weekly", datetime(2026, 11, 2, 9, tzinfo=UTC), "missed", "the machine was off")
    with engine.connect() as conn:
        counts = {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                  for t in metadata.sorted_tables}
    engine.dispose()
    return counts


def _use_state(project: Path, url: str) -> None:
    config = project / "config.yaml"
    config.write_text(re.sub(r"(?m)^state: .*$", lambda _: f"state: {json.dumps(url)}",
                             config.read_text(encoding="utf-8")), encoding="utf-8")


def _views(project: Path, run_cli: RunCli) -> list[str]:
    """What the user sees of the state: the ledger, the list, the timetable's missed run."""
    shown = [run_cli("status", "--json", cwd=project), run_cli("subscribers", "list", "--json", cwd=project),
             run_cli("subscribers", "show", "reader7@example.com", cwd=project)]
    for result in shown:
        assert result.returncode == 0, result.stderr
    return [result.stdout + result.stderr for result in shown]


def _one_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1 and "Traceback" not in result.stderr, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_sqlite_state_moves_to_postgresql_whole(project: Path, run_cli: RunCli, postgres_url: str) -> None:
    source = _fill(project)
    assert all(source[t] for t in ("subscribers", "deliveries", "subscriber_events", "schedule_runs",
                                   "secrets"))
    before = _views(project, run_cli)
    sent = sorted(p.name for p in (project / "out" / "outbox").rglob("*") if p.is_file())

    copied = run_cli("db", "copy", "--to", postgres_url, "--batch", "250", cwd=project)
    assert copied.returncode == 0, copied.stderr
    printed = {m[1]: int(m[2].replace(",", "")) for line in copied.stdout.splitlines()
               if (m := COUNT_ROW.match(line)) and m[1] in metadata.tables}
    assert printed == source
    target = make_url(postgres_url)
    assert target.password and target.password not in copied.stdout + copied.stderr
    assert target.render_as_string(hide_password=True) in copied.stdout

    _use_state(project, postgres_url)
    assert _views(project, run_cli) == before
    status = json.loads(run_cli("db", "status", "--json", cwd=project).stdout)
    assert (status["state"], status["database"]) == ("ok", target.render_as_string(hide_password=True))
    # The ledger came along: publishing the same post again sends nothing.
    again = run_cli("publish", "2020-09-01-ketamine-neurological-damage", "--channel", "outbox", cwd=project)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in (project / "out" / "outbox").rglob("*") if p.is_file()) == sent
    # Ids were copied as they were; the sequence was moved past them.
    added = run_cli("subscribers", "add", "newcomer@example.com", cwd=project)
    assert added.returncode == 0, added.stderr
    listed = json.loads(run_cli("subscribers", "list", "--json", cwd=project).stdout)
    assert len(listed) == READERS + 1 and "newcomer@example.com" in {s["email"] for s in listed}

    assert _one_error(run_cli("db", "copy", "--to", postgres_url, cwd=project)) == (
        f"error: db copy: the target {target.render_as_string(hide_password=True)} is the state database "
        "itself; give another database's URL")
    _use_state(project, "state/pipeline.sqlite3")
    refused = _one_error(run_cli("db", "copy", "--to", postgres_url, cwd=project))
    assert refused.startswith(f"error: db copy: the target {target.render_as_string(hide_password=True)} "
                              f"is not empty (deliveries: {source['deliveries']:,}, ")
    assert refused.endswith(" rows); copy into a new, empty database")


@pytest.mark.state_backends
def test_a_copy_into_a_new_sqlite_file_keeps_every_row(project: Path, run_cli: RunCli,
                                                       tmp_path: Path) -> None:
    """The target may be a SQLite file as well: a copy of a file, or the way back from PostgreSQL."""
    source = _fill(project)
    before = _views(project, run_cli)
    target = tmp_path / "elsewhere" / "copy.sqlite3"
    copied = run_cli("db", "copy", "--to", f"sqlite:///{target}", cwd=project)
    assert copied.returncode == 0, copied.stderr
    with sqlite3.connect(target) as db:
        assert {name: db.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0]
                for name in metadata.tables} == source
    _use_state(project, f"sqlite:///{target}")
    assert _views(project, run_cli) == before


def test_a_row_the_target_refuses_is_one_line_and_nothing_is_committed(project: Path, run_cli: RunCli,
                                                                       postgres_url: str) -> None:
    """SQLite keeps a name longer than its column's limit; PostgreSQL refuses it mid-copy."""
    config = load_config(project / "config.yaml")
    for i in range(3):
        store.upsert(engine_for(config), f"reader{i}@example.com", source="cli")
    engine_for(config).dispose()
    with sqlite3.connect(project / "state" / "pipeline.sqlite3") as db:
        db.execute("UPDATE subscribers SET name = ? WHERE email = 'reader2@example.com'", ("N" * 300,))
    target = make_url(postgres_url)
    line = _one_error(run_cli("db", "copy", "--to", postgres_url, cwd=project))
    assert line.startswith(f"error: state database {target.render_as_string(hide_password=True)}: "
                           "value too long for type character varying(200)"), line
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        assert [conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in metadata.sorted_tables] == [0] * len(metadata.tables)
    engine.dispose()


def test_a_target_that_is_no_database_url_is_one_line_without_its_password(project: Path,
                                                                            run_cli: RunCli) -> None:
    for url, expected in (
        ("sekrit-not-a-url", "is not a database URL; write e.g. postgresql+psycopg://user@host/name"),
        ("postgres://ana:sekrit@127.0.0.1/news", "state database postgres://ana:***@127.0.0.1/news: no "
                                                  "database driver is called `postgres`"),
        ("mysql://ana:sekrit@127.0.0.1/news", "its driver `MySQLdb` is not installed"),
    ):
        line = _one_error(run_cli("db", "copy", "--to", url, cwd=project))
        assert expected in line and "sekrit" not in line, line
