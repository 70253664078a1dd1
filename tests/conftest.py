"""Shared fixtures: a copy of the project in a temporary folder, golden files, the CLI runner."""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.config import Config, load_config
from pipeline.publish import ChannelReport, publish
from pipeline.store.engine import engine_for
from pipeline.store.ledger import Ledger, Row
from tests.pg_server import PostgresServer
from tests.servers import AppServers
from tests.smtp_sink import Sink

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
GOLDEN = Path(__file__).resolve().parent / "golden"
SEED_SLUG = "2020-09-01-ketamine-neurological-damage"
PREVIEW_NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "state_backends: run each test of the module on a SQLite and on a "
                            "PostgreSQL state database (the `project` fixture's `state:`)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Modules marked `state_backends` run each test on both databases, except a test that names
    its own (`@pytest.mark.parametrize("state_backend", ["sqlite"], indirect=True)`)."""
    chosen = any(m.args and "state_backend" in str(m.args[0])
                 for m in metafunc.definition.iter_markers("parametrize"))
    if metafunc.definition.get_closest_marker("state_backends") and "state_backend" in metafunc.fixturenames \
            and not chosen:
        metafunc.parametrize("state_backend", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (PIPELINE_TEST_DATABASE_URL's, else a throwaway cluster)."""
    server = PostgresServer.for_session()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The SQLAlchemy URL (postgresql+psycopg://) of a new empty database, dropped after the test."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture
def state_backend(request: pytest.FixtureRequest) -> str:
    """The `project` fixture's state database: "sqlite" unless the module is marked `state_backends`,
    which runs each of its tests on "sqlite" and on "postgresql"."""
    return str(getattr(request, "param", "sqlite"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite tests/golden/ from the current output instead of comparing")


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """Compare `text` with tests/golden/NAME (or rewrite it with --update-golden); a mismatch
    fails with a unified diff."""
    update = request.config.getoption("--update-golden")

    def check(name: str, text: str) -> None:
        path = GOLDEN / name
        if update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        assert path.exists(), f"no golden file {path}; run `pytest --update-golden`"
        expected = path.read_text(encoding="utf-8")
        if text != expected:
            diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                                f"golden/{name}", "actual"))
            pytest.fail(f"output differs from golden/{name} (pytest --update-golden to accept):\n"
                        f"{diff}", pytrace=False)

    return check


def send_through(config: Config, slug: str = SEED_SLUG, *, name: str) -> ChannelReport:
    """Publish one post (default: the seed) through the channel `name`; its report."""
    [report] = publish(config, slugs=[slug], channels=[name])
    return report


def ledger_rows(config: Config, channel: str | None = None, *, dry_run: bool | None = False) -> list[Row]:
    """The ledger's rows (of `channel`; `dry_run=None`: real and dry-run rows alike)."""
    ledger = Ledger(engine_for(config))
    try:
        return ledger.rows(channel=channel, dry_run=dry_run)
    finally:
        ledger.close()


def thread_post(sentences: int) -> str:
    """A post (front matter and body) whose snippets are threads of `sentences` short sentences."""
    return textwrap.dedent("""
        ---
        title: A long story
        date: 2024-01-01
        social: {thread: true}
        ---
        """) + " ".join(f"Sentence number {i} tells a little more of the story." for i in range(sentences))


def add_channel(project: Path, name: str, kind: str, settings: dict[str, object]) -> Config:
    """Append a channel (`kind` is its type) to the project's config.yaml and load the config."""
    lines = [f"    {k}: {json.dumps(v)}" for k, v in settings.items()]     # JSON is YAML
    path = project / "config.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text + "\n" + "\n".join([f"  {name}:", f"    type: {kind}", *lines]) + "\n",
                    encoding="utf-8")
    return load_config(path)


@pytest.fixture
def sink() -> Iterator[Sink]:
    """A real SMTP server (aiosmtpd) on a free loopback port, recording what it accepts."""
    server = Sink().start()
    yield server
    server.stop()


@pytest.fixture
def preview_server(project: Path) -> Iterator[Callable[[], str]]:
    """start() -> base URL of the preview page (`pipeline preview --serve`) for the project copy,
    served by uvicorn in a thread; "now" is fixed so the timetable column is deterministic."""
    from pipeline.web.preview_page import create_preview_app

    servers = AppServers()
    yield lambda: servers.start(create_preview_app(project / "config.yaml", now=PREVIEW_NOW))
    servers.stop()


@pytest.fixture
def project(tmp_path: Path, state_backend: str, request: pytest.FixtureRequest) -> Path:
    """A copy of the shipped config.yaml, templates/ and posts/ in a temporary folder (its state
    database on PostgreSQL when `state_backend` is "postgresql")."""
    dest = tmp_path / "project"
    dest.mkdir()
    shutil.copy(ROOT / "config.yaml", dest / "config.yaml")
    if state_backend == "postgresql":
        url = request.getfixturevalue("postgres_url")
        text = (dest / "config.yaml").read_text(encoding="utf-8")
        assert text.count("\nstate: ") == 1, "config.yaml has no top-level `state:` line to replace"
        text = re.sub(r"(?m)^state: .*$", lambda _: f"state: {json.dumps(url)}", text)
        (dest / "config.yaml").write_text(text, encoding="utf-8")
    shutil.copytree(ROOT / "templates", dest / "templates")
    shutil.copytree(ROOT / "posts", dest / "posts")
    return dest


@pytest.fixture
def config(project: Path) -> Config:
    """The shipped config, loaded from the temporary copy."""
    return load_config(project / "config.yaml")


@pytest.fixture
def write_post(project: Path) -> Callable[..., Path]:
    """Write posts/NAME into the project copy; text is dedented. `raw` bytes are written as-is."""

    def write(name: str, text: str = "", *, raw: bytes | None = None) -> Path:
        path = project / "posts" / name
        if raw is not None:
            path.write_bytes(raw)
        else:
            path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `python -m pipeline ARGS` in a subprocess, the way a user does."""

    def run(*args: str | os.PathLike[str], cwd: Path | None = None,
            env: dict[str, str] | None = None, timeout: float = 120,
            ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
        full_env.pop("PIPELINE_CONFIG", None) if env is None or "PIPELINE_CONFIG" not in env else None
        return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], cwd=cwd,
                              env=full_env, capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture
def engine(config: Config):  # type: ignore[no-untyped-def]
    """The state database of the test project (SQLite, or PostgreSQL in `state_backends` modules)."""
    return engine_for(config)


@pytest.fixture
def ledger(engine) -> Iterator[Ledger]:  # type: ignore[no-untyped-def]
    """A Ledger on that database, closed after the test."""
    ledger = Ledger(engine)
    yield ledger
    ledger.close()


@pytest.fixture(autouse=True)
def _fresh_image_cache() -> Iterator[None]:
    """Post images are cached per process (pipeline/channels/images.py): each test fetches its own."""
    from pipeline.channels import images

    images.cache_clear()
    yield
    images.cache_clear()


def jpeg(size: tuple[int, int] = (800, 600)) -> bytes:
    """A real JPEG (the images module decodes what it fetches: fake bytes are refused)."""
    import io

    import PIL.Image

    out = io.BytesIO()
    PIL.Image.new("RGB", size, (90, 140, 200)).save(out, "JPEG", quality=85)
    return out.getvalue()
