"""A real PostgreSQL server for the tests that run the state database on PostgreSQL.

`PIPELINE_TEST_DATABASE_URL` (a SQLAlchemy URL of a server where the tests may create and drop
databases) names one to use. Otherwise a throwaway cluster is made for the session with Debian's
`initdb` and `pg_ctl`: its data directory and unix socket in a temporary folder, TCP on a free
loopback port, a random password, durability off (fsync, synchronous_commit, full_page_writes:
the data dies with the session anyway). As root, the server runs as the `postgres` user, which
PostgreSQL insists on. `.ci/install-postgres` installs the server when no `initdb` is found.

Each test gets a database of its own (`fresh_database`), dropped when the test ends.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

ROOT = Path(__file__).resolve().parent.parent
ENV_URL = "PIPELINE_TEST_DATABASE_URL"
USER = "postgres"
START_TIMEOUT = 60      # seconds pg_ctl waits for the server to accept connections


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_bin() -> Path:
    """The newest Debian PostgreSQL's bin folder, installing the server first when there is none."""
    found = _bin_folders()
    if not found:
        subprocess.run([str(ROOT / ".ci" / "install-postgres")], check=True)
        found = _bin_folders()
    if not found:
        raise RuntimeError("no initdb under /usr/lib/postgresql/*/bin after .ci/install-postgres; "
                           f"install Debian's postgresql, or set {ENV_URL}")
    return found[-1]


def _bin_folders() -> list[Path]:
    folders = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    return sorted(folders, key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0))


class PostgresServer:
    """One PostgreSQL server: the given one (`admin_url`) or a throwaway cluster (`start()`)."""

    def __init__(self, admin_url: str | None = None) -> None:
        self.admin_url: URL | None = make_url(admin_url) if admin_url else None
        self.dir: Path | None = None
        self._bin: Path | None = None
        self._password = ""
        self._names = itertools.count(1)

    @classmethod
    def for_session(cls) -> PostgresServer:
        """The server `PIPELINE_TEST_DATABASE_URL` names, else a new throwaway cluster, started."""
        given = os.environ.get(ENV_URL)
        return cls(given) if given else cls().start()

    # -- a throwaway cluster ----------------------------------------------------------------

    def start(self) -> PostgresServer:
        self._bin = postgres_bin()
        # Not under pytest's tmp_path: that is private to the test's user, and as root the
        # server runs as `postgres`.
        self.dir = Path(tempfile.mkdtemp(prefix="pipeline-postgres-"))
        self._password = secrets.token_hex(16)
        (self.dir / "password").write_text(self._password + "\n", encoding="utf-8")
        try:
            self._own(self.dir)
            # A natural-language collation by default, as on a server made in an en_US.UTF-8
            # locale (ICU's: the machine need not have that locale installed). Byte order ("C")
            # would hide a query that compares or sorts text assuming it.
            icu = ["--locale-provider", "icu", "--icu-locale", "en-US"] if self._version() >= 15 else []
            self._as_server_user([str(self._bin / "initdb"), "--pgdata", str(self.dir / "data"),
                                  "--username", USER, "--pwfile", str(self.dir / "password"),
                                  "--auth", "scram-sha-256", "--encoding", "UTF8", "--locale", "C.UTF-8",
                                  *icu, "--no-sync"])
            (self.dir / "password").unlink()
            self._start_server()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_server(self) -> None:
        assert self.dir is not None and self._bin is not None
        for attempt in range(3):
            port = free_port()
            try:
                self._run_server(port)
                break
            except RuntimeError:
                # Another process may have taken the free port before the server bound it.
                if attempt == 2 or "could not bind" not in self.log():
                    raise
        self.admin_url = URL.create("postgresql+psycopg", username=USER, password=self._password,
                                    host="127.0.0.1", port=port, database="postgres")

    def _run_server(self, port: int) -> None:
        assert self.dir is not None and self._bin is not None
        options = " ".join([
            "-c listen_addresses=127.0.0.1", f"-p {port}", f"-k {self.dir}",
            "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
            # An autovacuum ANALYZE takes a transaction id, which the preview's change signal
            # (a snapshot) counts as a change: the "read once per change" tests would flake.
            "-c autovacuum=off",
            # Not UTC: a timestamp taken from the server's clock must still be stored in UTC.
            "-c timezone=Asia/Kolkata",
            # Engines stay cached per database (the store keeps eight), each with its pool.
            "-c max_connections=300",
            # A stop waits for every child, the ones forked to refuse a connection during the
            # shutdown too; one whose client never finished its start-up waits this long (60 s by
            # default: pg_ctl's own wait, so a restart amid reconnecting workers could fail).
            "-c authentication_timeout=10s",
        ])
        self._as_server_user([str(self._bin / "pg_ctl"), "--pgdata", str(self.dir / "data"),
                              "--log", str(self.dir / "server.log"), "--options", options,
                              "--wait", "--timeout", str(START_TIMEOUT), "start"])

    def _version(self) -> int:
        assert self._bin is not None
        return int(re.sub(r"\D", "", self._bin.parent.name) or 0)

    def stop(self) -> None:
        """Stop a throwaway cluster and delete its folder (a given server is left as it is)."""
        if self.dir is None or self._bin is None:
            return
        if (self.dir / "data" / "postmaster.pid").exists():
            self._as_server_user([str(self._bin / "pg_ctl"), "--pgdata", str(self.dir / "data"),
                                  "--mode", "immediate", "--wait", "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    @property
    def restartable(self) -> bool:
        """Whether `restart` can be used: a throwaway cluster (a given server is not ours)."""
        return self.dir is not None and self._bin is not None

    def restart(self, *, down_for: float = 0.0) -> None:
        """Stop the throwaway server in fast mode (every session is cut, as when a server fails
        over), keep it down `down_for` seconds, and start it again on the same port."""
        assert self.dir is not None and self._bin is not None and self.admin_url is not None
        self._as_server_user([str(self._bin / "pg_ctl"), "--pgdata", str(self.dir / "data"),
                              "--mode", "fast", "--wait", "stop"])
        time.sleep(down_for)
        self._run_server(int(self.admin_url.port or 5432))

    def log(self) -> str:
        """The throwaway server's log ("" for a given server)."""
        path = self.dir / "server.log" if self.dir else None
        return path.read_text(encoding="utf-8", errors="replace") if path and path.exists() else ""

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0:
            account = pwd.getpwnam(USER)
            os.chown(path, account.pw_uid, account.pw_gid)
        path.chmod(0o700)

    def _as_server_user(self, argv: list[str]) -> None:
        if os.geteuid() == 0:
            argv = ["runuser", "-u", USER, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=self.dir)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
                               f"\n{self.log()}")

    # -- databases ----------------------------------------------------------------------------

    def _admin(self) -> psycopg.Connection:
        assert self.admin_url is not None
        url = self.admin_url
        return psycopg.connect(host=url.host, port=url.port, user=url.username, password=url.password,
                               dbname=url.database or "postgres", autocommit=True)

    def create_database(self) -> str:
        """A new empty database; its SQLAlchemy URL (psycopg 3 driver)."""
        assert self.admin_url is not None
        name = f"pipeline_test_{os.getpid()}_{next(self._names)}"
        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = self.admin_url.set(drivername="postgresql+psycopg", database=name)
        return url.render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        """Drop a database `create_database` made, closing the connections still open to it."""
        name = make_url(url).database
        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
