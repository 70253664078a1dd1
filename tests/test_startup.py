"""What each command imports, read from a real interpreter's `-X importtime` report: `--help` loads
click alone, `check` and `schedule` leave the libraries they do not use unloaded, and an SMTP
worker process is the standard library and the session. (How long start-up takes is measured by
bench/startup.py, never asserted here.)"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from tests.conftest import send_through
from tests.smtp_sink import Sink

# Libraries a command must not load unless it uses them: the channels' clients, the web server,
# the feeds, the scheduler's machinery, the bounce readers, the signing and parsing libraries.
SENDING = {"tweepy", "atproto", "atproto_client", "mastodon", "requests", "httpx", "httpcore",
           "feedparser", "feedgen", "lxml", "starlette", "uvicorn", "cryptography", "flufl",
           "dkim", "aiosmtpd", "docutils", "dateutil", "apscheduler.schedulers",
           "apscheduler.executors", "apscheduler.jobstores", "tenacity"}
RENDERING = {"twitter_text", "mjml", "css_inline", "jinja2", "pysbd", "babel.dates"}
# A worker fills each message in itself: the session, and personalize (standard library only).
WORKER = {"pipeline", "pipeline.channels", "pipeline.channels.smtp_worker", "pipeline.channels.smtp_session",
          "pipeline.render", "pipeline.render.personalize"}


def imports(report: str) -> set[str]:
    """The modules named in a `-X importtime` report (its lines among others on stderr). The
    report names attempts that failed too (`copy` tries Jython's `org.python.core`): a name whose
    package cannot be found here was one of those."""
    named = {line.rsplit("|", 1)[1].strip() for line in report.splitlines()
             if line.startswith("import time:") and not line.endswith("imported package")}
    return {name for name in named if importlib.util.find_spec(name.split(".")[0]) is not None}


def imported(*args: str, cwd: Path) -> set[str]:
    """What `python ARGS` imports after the interpreter's own start (what `python -c pass`
    imports: site, the editable install's finder)."""
    done = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    messages = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("import time:"))
    assert done.returncode == 0, f"python {' '.join(args)} failed:\n{messages}"
    return imports(done.stderr) - bare(cwd)


def bare(cwd: Path) -> set[str]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=True)
    return imports(done.stderr)


def loaded(modules: set[str], names: set[str]) -> set[str]:
    """Those of `names` that are in `modules`, a package counting with any of its submodules."""
    return {n for n in names if any(m == n or m.startswith(n + ".") for m in modules)}


def outside_stdlib(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] not in sys.stdlib_module_names}


def test_imports_reads_the_report_of_a_real_interpreter(tmp_path: Path) -> None:
    """The reader finds a module that was imported and none that was not, and leaves out what a
    bare start imports: the assertions below can fail."""
    found = imported("-c", "import json, click", cwd=tmp_path)
    assert {"json", "click", "click.core"} <= found
    assert "site" not in found and "jinja2" not in found


def test_help_imports_click_and_nothing_else_outside_the_standard_library(tmp_path: Path) -> None:
    found = imported("-m", "pipeline", "--help", cwd=tmp_path)
    assert "pipeline.cli" in found
    extra = {m for m in outside_stdlib(found) if not m.startswith("click")}
    assert extra <= {"pipeline", "pipeline.cli", "pipeline.errors"}, sorted(extra)


def test_a_command_s_help_loads_nothing_of_the_command(tmp_path: Path) -> None:
    found = imported("-m", "pipeline", "publish", "--help", cwd=tmp_path)
    assert not loaded(found, SENDING | RENDERING | {"rich", "pydantic", "sqlalchemy", "yaml"}), sorted(found)


def test_check_loads_the_renderers_but_no_sending_library(project: Path) -> None:
    found = imported("-m", "pipeline", "check", cwd=project)
    assert {"pipeline.check", "pipeline.networks.twitter_urls", "mjml"} <= found   # it renders every post
    assert not loaded(found, {"twitter_text"})                       # X and Mastodon count without it
    assert not loaded(found, {"rich"})                               # "OK: ..." is one plain line
    # No feeds in the shipped config: the state database is not opened.
    assert not loaded(found, SENDING | {"sqlalchemy"}), sorted(loaded(found, SENDING | {"sqlalchemy"}))


def test_schedule_plans_without_rendering_or_sending(project: Path) -> None:
    found = imported("-m", "pipeline", "schedule", "--next", "2", cwd=project)
    assert {"pipeline.timetable.schedule", "sqlalchemy"} <= found    # it reads the ledger
    assert not loaded(found, SENDING | RENDERING), sorted(loaded(found, SENDING | RENDERING))
    # It reads the posts' titles and dates: no body is converted, so no Markdown parser is loaded.
    assert {"pipeline.intake.posts"} <= found
    assert not loaded(found, {"markdown_it", "mdit_py_plugins", "linkify_it"}), sorted(found)


def test_loading_the_config_does_not_build_twitter_texts_emoji_regex(project: Path) -> None:
    found = imported("-c", "from pipeline.config import load_config; load_config()", cwd=project)
    assert "pipeline.networks.x" in found and "twitter_text" not in found


def test_loading_the_config_checks_plain_cron_entries_without_apscheduler(project: Path) -> None:
    """The shipped timetable's `cron:` entries are checked without APScheduler; an expression
    only APScheduler can judge (`last`: the month's last day) loads it."""
    load = "from pipeline.config import load_config; load_config()"
    found = imported("-c", load, cwd=project)
    assert "pipeline.timetable.entries" in found and not loaded(found, {"apscheduler"}), sorted(found)
    path = project / "config.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace(
        "\nschedule:\n", "\nschedule:\n  - {name: month-end, channels: [outbox], cron: '0 9 last * *'}\n", 1),
        encoding="utf-8")
    assert loaded(imported("-c", load, cwd=project), {"apscheduler"})


def test_an_smtp_worker_process_is_the_standard_library_and_the_session(
        project: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """A real send through worker processes (`processes: true`) into a real SMTP server; each
    worker reports its imports on the stderr it shares with this process."""
    sink = Sink().start()
    try:
        with (project / "config.yaml").open("a", encoding="utf-8") as f:
            f.write(f"\n  newsletter:\n    type: smtp\n    host: 127.0.0.1\n    port: {sink.port}\n"
                    "    security: none\n    connections: 1\n    processes: true\n")
        config = load_config(project / "config.yaml")
        store.upsert(engine_for(config), "ada@example.com", name="Ada")
        capfd.readouterr()
        monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")     # read by the worker at its start
        report = send_through(config, name="newsletter")
        monkeypatch.delenv("PYTHONPROFILEIMPORTTIME")
    finally:
        sink.stop()
    assert (report.sent, report.error) == (1, None)
    found = imports(capfd.readouterr().err) - bare(project)
    assert "pipeline.channels.smtp_session" in found                 # the report is the worker's
    assert outside_stdlib(found) <= WORKER, sorted(outside_stdlib(found) - WORKER)
