"""Schema revisions: a new database is made at head; one made before revisions were recorded, or
one a newer pipeline upgraded, stops every command with one line; `pipeline db upgrade` brings an
older one to head keeping its rows; `pipeline db status` says where it stands; and the revision
scripts' head is exactly the schema in `store/schema.py` (a schema change without a revision
fails here)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
)
from sqlalchemy import inspect as inspect_db

from pipeline.config import load_config
from pipeline.store import migrate, revision
from pipeline.store.engine import engine_for, open_engine, state_url
from pipeline.store.schema import metadata

RunCli = Callable[..., subprocess.CompletedProcess[str]]
both = pytest.mark.state_backends      # on a SQLite file and on a PostgreSQL database


def _url(project: Path) -> str:
    return state_url(load_config(project / "config.yaml"))


def _plain_engine(project: Path) -> Engine:
    """An engine on the project's state database with none of the store's checks."""
    url = _url(project)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return create_engine(url)


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def _one_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1 and "Traceback" not in result.stderr, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _where(project: Path) -> str:
    url = _url(project)
    return url.removeprefix("sqlite:///") if url.startswith("sqlite") else \
        create_engine(url).url.render_as_string(hide_password=True)


# -- a new database -----------------------------------------------------------------------------

@both
def test_a_new_database_is_made_at_head(project: Path, run_cli: RunCli) -> None:
    before = _json(run_cli("db", "status", "--json", cwd=project))
    assert (before["exists"], before["current"]) == (False, None)
    assert "none yet" in run_cli("db", "status", cwd=project).stdout
    assert not (project / "state" / "pipeline.sqlite3").exists(), "db status made the file"
    assert run_cli("status", cwd=project).returncode == 0
    after = _json(run_cli("db", "status", "--json", cwd=project))
    assert after == {"database": _where(project), "exists": True, "current": revision.HEAD,
                     "head": revision.HEAD, "pending": [], "state": "ok"}
    with _plain_engine(project).connect() as conn:
        assert set(metadata.tables) <= set(inspect_db(conn).get_table_names())
    again = run_cli("db", "upgrade", cwd=project)
    assert again.returncode == 0 and "already: nothing to do" in again.stdout


@both
def test_db_upgrade_makes_a_database_that_is_not_there_yet(project: Path, run_cli: RunCli) -> None:
    done = run_cli("db", "upgrade", cwd=project)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"Created the state database {_where(project)} at revision {revision.HEAD}."
    assert revision.status(engine_for(load_config(project / "config.yaml"))).ok


# -- a database made before revisions were recorded ---------------------------------------------

def _old_database(project: Path) -> None:
    """The two tables the first release made, without the columns added since, and a subscriber."""
    old = MetaData()
    subscribers = Table(
        "subscribers", old,
        Column("id", Integer, primary_key=True), Column("uid", String(32), nullable=False, unique=True),
        Column("email", String(320), nullable=False),
        Column("email_key", String(320), nullable=False, unique=True), Column("name", String(200)),
        Column("tags", Text, nullable=False), Column("status", String(16), nullable=False),
        Column("source", String(200)), Column("created_at", DateTime, nullable=False),
        Column("updated_at", DateTime, nullable=False), Column("unsubscribed_at", DateTime))
    Table("deliveries", old,
          Column("key", String(600), primary_key=True), Column("channel", String(100), nullable=False),
          Column("edition", String(300), nullable=False), Column("kind", String(20), nullable=False),
          Column("recipient", String(320)), Column("network", String(40)),
          Column("part", Integer, nullable=False), Column("dry_run", Boolean, nullable=False),
          Column("status", String(10), nullable=False), Column("attempts", Integer, nullable=False),
          Column("resends", Integer, nullable=False), Column("last_error", Text),
          Column("remote_id", String(500)), Column("remote_url", String(1000)),
          Column("created_at", DateTime, nullable=False), Column("updated_at", DateTime, nullable=False),
          Column("sent_at", DateTime), Column("next_attempt_at", DateTime))
    engine = _plain_engine(project)
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(subscribers.insert().values(
            uid="0123456789abcdef0123456789abcdef", email="old@example.com", email_key="old@example.com",
            name="Old", tags="", status="active", source="x.csv", created_at=datetime(2024, 1, 1),
            updated_at=datetime(2024, 1, 1)))
    engine.dispose()


@both
def test_an_older_database_is_refused_until_db_upgrade_which_keeps_its_rows(project: Path,
                                                                             run_cli: RunCli) -> None:
    _old_database(project)
    for command_line in (("subscribers", "list", "--json"), ("publish", "--dry-run")):
        assert _one_error(run_cli(*command_line, cwd=project)) == (
            f"error: state database {_where(project)} is at revision none (made before revisions were "
            f"recorded), this version needs {revision.HEAD}: run `pipeline db upgrade`")
    assert not (project / "out" / "outbox").exists()
    pending = _json(run_cli("db", "status", "--json", cwd=project))
    assert (pending["current"], pending["pending"], pending["state"]) == \
        (None, list(revision.REVISIONS), "needs_upgrade")
    text = run_cli("db", "status", cwd=project).stdout
    assert "revision: none (made before revisions were recorded)" in text
    assert "run `pipeline db upgrade`" in text

    upgraded = run_cli("db", "upgrade", cwd=project)
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == (f"Upgraded {_where(project)} from revision none to {revision.HEAD} "
                                       f"(applied {', '.join(revision.REVISIONS)}).")
    listed = run_cli("subscribers", "list", "--json", cwd=project)
    assert listed.returncode == 0, listed.stderr
    assert [(s["email"], s["status"], s["consent_at"]) for s in json.loads(listed.stdout)] == \
        [("old@example.com", "active", None)]
    shown = run_cli("subscribers", "show", "old@example.com", cwd=project)
    assert shown.returncode == 0 and "not recorded" in shown.stdout
    # The upgraded database is the schema, column for column, and takes new rows.
    with _plain_engine(project).connect() as conn:
        assert _differences(conn) == []
    added = run_cli("subscribers", "add", "new@example.com", cwd=project)
    assert added.returncode == 0, added.stderr
    assert run_cli("db", "upgrade", cwd=project).stdout.strip().endswith("already: nothing to do.")


@both
def test_an_upgrade_that_fails_changes_nothing(project: Path, run_cli: RunCli) -> None:
    """Every revision applies in one transaction, on SQLite too: the baseline adds `name` to this
    damaged table, then finds `tags` missing, which it cannot add to existing rows."""
    damaged = MetaData()
    Table("subscribers", damaged, Column("id", Integer, primary_key=True), Column("uid", String(32)),
          Column("email", String(320)), Column("email_key", String(320)))
    Table("deliveries", damaged, Column("key", String(600), primary_key=True))
    engine = _plain_engine(project)
    damaged.create_all(engine)

    def tables() -> dict[str, list[str]]:
        inspector = inspect_db(engine)
        return {t: [c["name"] for c in inspector.get_columns(t)] for t in inspector.get_table_names()}

    before = tables()
    assert _one_error(run_cli("db", "upgrade", cwd=project)) == (
        f"error: state database {_where(project)}: table subscribers has no column tags, which every "
        "pipeline version made: it cannot be upgraded; restore it from a backup; nothing was changed")
    assert tables() == before
    engine.dispose()


def test_db_upgrade_refuses_a_sqlite_file_that_is_not_ours(project: Path, run_cli: RunCli) -> None:
    state = project / "state" / "pipeline.sqlite3"
    state.parent.mkdir()
    with sqlite3.connect(state) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    assert _one_error(run_cli("db", "upgrade", cwd=project)) == (
        f"error: state database {state} is not a pipeline database (it has no deliveries or subscribers "
        "table); restore it from a backup, or move it away to start a new one")
    with sqlite3.connect(state) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["notes"]


@both
def test_a_database_at_an_older_revision_is_refused_until_db_upgrade(project: Path, run_cli: RunCli) -> None:
    """A database made at 0001_baseline (on PostgreSQL its ledger keys in the server's default
    collation, as a version before 0002 made them): 0002 is pending and applies."""
    assert run_cli("subscribers", "add", "ana@example.com", cwd=project).returncode == 0
    engine = _plain_engine(project)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql('ALTER TABLE deliveries ALTER COLUMN "key" TYPE VARCHAR(600) '
                                 'COLLATE "default"')
        revision.stamp(conn, "0001_baseline")
        assert _differences(conn) != [] or conn.dialect.name == "sqlite"
    assert _one_error(run_cli("status", cwd=project)) == (
        f"error: state database {_where(project)} is at revision 0001_baseline, this version needs "
        f"{revision.HEAD}: run `pipeline db upgrade`")
    pending = _json(run_cli("db", "status", "--json", cwd=project))
    assert (pending["current"], pending["pending"]) == ("0001_baseline", list(revision.REVISIONS[1:]))
    upgraded = run_cli("db", "upgrade", cwd=project)
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == (f"Upgraded {_where(project)} from revision 0001_baseline to "
                                       f"{revision.HEAD} (applied {', '.join(revision.REVISIONS[1:])}).")
    with engine.connect() as conn:
        assert _differences(conn) == []
    engine.dispose()
    assert "ana@example.com" in run_cli("subscribers", "list", cwd=project).stdout


# -- a database a newer version upgraded --------------------------------------------------------

@both
def test_a_newer_revision_is_refused_by_every_command_and_by_db_upgrade(project: Path,
                                                                        run_cli: RunCli) -> None:
    assert run_cli("subscribers", "add", "ana@example.com", cwd=project).returncode == 0
    engine = _plain_engine(project)
    with engine.begin() as conn:
        conn.execute(revision.version_table.update().values(version_num="0099_from_the_future"))
    engine.dispose()
    expected = (f"error: state database {_where(project)} is at revision 0099_from_the_future, newer than "
                f"this version knows (its newest is {revision.HEAD}): upgrade the pipeline to the version "
                "that wrote it")
    for command_line in (("status",), ("subscribers", "list"), ("db", "upgrade")):
        assert _one_error(run_cli(*command_line, cwd=project)) == expected
    found = _json(run_cli("db", "status", "--json", cwd=project))
    assert (found["current"], found["pending"], found["state"]) == ("0099_from_the_future", [], "too_new")
    assert "newer than this version" in run_cli("db", "status", cwd=project).stdout


# -- the revision check itself ------------------------------------------------------------------

@pytest.mark.parametrize(("current", "ok", "needs_upgrade", "too_new", "pending"), [
    (revision.HEAD, True, False, False, ()),
    (None, False, True, False, revision.REVISIONS),
    ("0099_from_the_future", False, False, True, ()),
])
def test_a_revision_status_says_what_to_do(current: str | None, ok: bool, needs_upgrade: bool,
                                           too_new: bool, pending: tuple[str, ...]) -> None:
    state = revision.RevisionStatus(current=current)
    assert (state.ok, state.needs_upgrade, state.too_new) == (ok, needs_upgrade, too_new)
    assert state.pending == pending
    error = revision.refusal(state, "db")
    assert (error is None) == ok
    assert error is None or ("pipeline db upgrade" in str(error)) == needs_upgrade


def test_ordinary_commands_never_import_alembic(project: Path) -> None:
    """Start-up time: the check every command makes is one SELECT; Alembic loads for `db` only."""
    probe = ("import sys\nfrom pipeline.cli import main\nsys.argv = ['pipeline', *sys.argv[1:]]\n"
             "main()\nprint(sorted(m for m in sys.modules if m.partition('.')[0] == 'alembic'))\n")
    for args, loaded in ((["status"], False), (["subscribers", "list"], False), (["db", "status"], True)):
        done = subprocess.run([sys.executable, "-c", probe, *args], cwd=project, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert (done.stdout.strip().splitlines()[-1] != "[]") == loaded, (args, done.stdout)


# -- the revision scripts against the schema ----------------------------------------------------

def test_the_revision_scripts_are_the_revisions_every_command_checks() -> None:
    assert migrate.script_revisions() == revision.REVISIONS


def _differences(conn: Connection) -> list[object]:
    """What Alembic's autogenerate finds between the database and `schema.py`, and the columns
    whose collation differs (Alembic passes over a collation that only the schema names)."""
    context = MigrationContext.configure(conn, opts={"include_name": migrate.include_name})
    found: list[object] = list(compare_metadata(context, metadata))
    inspector = inspect_db(conn)
    for table in metadata.sorted_tables:
        reflected = {c["name"]: getattr(c["type"], "collation", None)
                     for c in inspector.get_columns(table.name)}
        for column in table.columns:
            wanted = getattr(column.type.dialect_impl(conn.dialect), "collation", None)
            if reflected.get(column.name) != wanted:
                found.append(("collation", table.name, column.name, reflected.get(column.name), wanted))
    return found


@both
def test_the_head_revision_is_the_schema(project: Path) -> None:
    """Running every revision script on an empty database gives exactly `schema.py`'s tables,
    columns, types, keys and indexes. A failure here: write a revision for the schema change."""
    engine, _ = open_engine(_url(project))
    try:
        with engine.begin() as conn:
            command.upgrade(migrate.alembic_config(conn), "head")
        with engine.connect() as conn:
            assert revision.current_revision(conn) == revision.HEAD
            assert _differences(conn) == []
            # The comparison sees a change: a column the revisions never made.
            changed = MetaData()
            for table in metadata.sorted_tables:
                table.to_metadata(changed)
            changed.tables["feeds"].append_column(Column("added_later", String(10)))
            assert [d[0] for d in compare_metadata(
                MigrationContext.configure(conn, opts={"include_name": lambda *_: True}), changed)] == \
                ["add_column"]
        with engine.begin() as conn:
            command.downgrade(migrate.alembic_config(conn), "base")
        with engine.connect() as conn:
            assert not set(inspect_db(conn).get_table_names()) & set(metadata.tables)
    finally:
        engine.dispose()
