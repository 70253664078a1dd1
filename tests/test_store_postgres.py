"""A PostgreSQL state database that cannot be used: one line naming it, never its password.

(The store's own suites run on PostgreSQL too: see the `state_backends` marker in conftest.py.)"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from pipeline.store.engine import libpq_defaults
from tests.conftest import ROOT
from tests.pg_server import free_port


def _state(project: Path, url: str) -> None:
    path = project / "config.yaml"
    text = re.sub(r"(?m)^state: .*$", lambda _: f"state: {json.dumps(url)}", path.read_text(encoding="utf-8"))
    path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize(("change", "reason"), [
    ({"password": "not-the-password"}, 'password authentication failed for user "postgres"'),
    ({"database": "no_such_database"}, 'database "no_such_database" does not exist'),
    ({"port": None}, "Connection refused"),
])
def test_an_unusable_server_is_a_one_line_error_without_the_password(project, postgres_url, run_cli,
                                                                      change, reason):
    url = make_url(postgres_url)
    bad = url.set(**{k: v if v is not None else free_port() for k, v in change.items()})
    _state(project, bad.render_as_string(hide_password=False))
    result = run_cli("--config", project / "config.yaml", "status")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: state database {bad.render_as_string(hide_password=True)}: "), line
    assert reason in line
    assert str(url.password) not in result.stderr + result.stdout
    assert "not-the-password" not in result.stderr + result.stdout


@pytest.mark.parametrize("query", ["", "?connect_timeout=2"])
def test_a_server_that_never_answers_is_an_error_not_a_hang(project, run_cli, query):
    # It takes the connection and says nothing (a server stuck shutting down, a half-dead host):
    # libpq alone would wait for ever; the store's connect_timeout (10 s, or the URL's) ends it.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"postgresql+psycopg://postgres:secret@127.0.0.1:{silent.getsockname()[1]}/pipeline{query}"
        _state(project, url)
        result = run_cli("--config", project / "config.yaml", "status", timeout=90)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: state database postgresql+psycopg://postgres:***@127.0.0.1:"), line
    assert "timeout" in line and "secret" not in result.stderr + result.stdout


def test_libpq_defaults_give_way_to_the_urls_own_settings():
    assert libpq_defaults("postgresql+psycopg://u@h/db")["connect_timeout"] == "10"
    mine = libpq_defaults("postgresql+psycopg://u@h/db?connect_timeout=3&keepalives=0")
    assert "connect_timeout" not in mine and "keepalives" not in mine and mine["keepalives_idle"] == "30"
    assert libpq_defaults("postgresql+pg8000://u@h/db") == {} and libpq_defaults("sqlite:///x.db") == {}


def test_a_new_database_is_made_on_first_use_and_commands_work_on_it(project, postgres_url, run_cli):
    _state(project, postgres_url)
    config = project / "config.yaml"
    imported = run_cli("--config", config, "subscribers", "import", ROOT / "docs/examples/subscribers.csv")
    assert imported.returncode == 0, imported.stderr
    listed = run_cli("--config", config, "subscribers", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 3
    assert run_cli("--config", config, "status").returncode == 0
