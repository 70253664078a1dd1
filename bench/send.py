"""Sending speed: one edition to N synthetic subscribers through `pipeline publish`, against the
strongest simple sender of the same bytes over the same connections, measured in the same run.

    publish    `pipeline publish <post> --channel newsletter`: the `smtp` channel with
               `connections: C` and its worker processes as configured by default; planning, the
               ledger and personalization included (a new copy of the same database each round).
    baseline   the project's own pipelined SMTP session (`pipeline.channels.smtp_session.Session`)
               in C processes, no ledger and no planning: each process sends its share of the
               exact messages publish sends (rendered before the clock starts, by publish's own
               code, into one file per process) and nothing else.

Both are timed as whole commands (start-up included) into the same sink, with the project's
modules compiled to bytecode first, as an installed package has them (where
PYTHONDONTWRITEBYTECODE is set, every process would otherwise compile each changed module
again). Memory is the whole process tree's: the RSS of the command and all its descendants
(publisher and workers; launcher and sessions), summed, sampled every 50 ms; the peak of that
sum is reported. Rounds are paired and alternate which side goes first; the ratio is the median
of the rounds' ratios.

The sink is Postfix's smtp-sink (Debian package postfix: installed here with apt-get when it is
missing and this runs as root, neither configured nor started). Without it, aiosmtpd, which
saturates near 300 msgs/s and so cannot measure a fast sender (a warning says so).

The last line is `ratio <publish/baseline msgs/s> peak_rss_mb <tree peak of publish> baseline
session-processes`.

`--state postgresql` puts the state database on PostgreSQL (the server PIPELINE_TEST_DATABASE_URL
names, else a throwaway cluster started as the tests start theirs, tests/pg_server.py), a new copy
of the same database each round (CREATE DATABASE ... TEMPLATE). Each round then also runs publish
on a SQLite state, and the table gives the ledger's cost per message on PostgreSQL against SQLite:
the difference of the two publishes' seconds per message, and a direct measure of the ledger's
statements alone (plan the rows; read them back; claim and record them in the pump's batches).
`--workers 1,2` (PostgreSQL only) adds, per count K, `execution: workers`: publish defers the
delivery jobs, then K `pipeline worker --until-idle` processes send them; timed from publish's
start to the last worker's exit, as one process tree. The headline's ratio is then PostgreSQL
publish (inline) against the baseline.

    python bench/send.py [--n 100000] [--rounds 3] [--connections 4]
                         [--state sqlite|postgresql] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SEED = "2020-09-01-ketamine-neurological-damage"
CHANNEL = "newsletter"
SAMPLE_EVERY = 0.05          # seconds between two samples of the process tree's memory


# -- the sink --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smtp_sink_binary() -> str | None:
    """Postfix's smtp-sink; installed with apt-get (postfix neither configured nor started) when
    it is missing and this process may install packages."""
    def found() -> str | None:
        return shutil.which("smtp-sink") or next(
            (p for p in ("/usr/sbin/smtp-sink", "/usr/bin/smtp-sink") if Path(p).exists()), None)

    if found() or not shutil.which("apt-get") or os.geteuid() != 0:
        return found()
    print("installing Debian's postfix for smtp-sink (not configured, not started)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with contextlib.suppress(OSError):
        subprocess.run(["debconf-set-selections"], input="postfix postfix/main_mailer_type select "
                       "No configuration\n", text=True, env=env, capture_output=True, check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", "postfix"], env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    return found()


def start_sink(port: int, kind: str) -> tuple[str, Callable[[], None]]:
    """(the sink's name, a function that stops it)."""
    binary = smtp_sink_binary() if kind in ("auto", "smtp-sink") else None
    if binary:
        # smtp-sink offers PIPELINING; as root it must drop to another user once it listens.
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        proc = subprocess.Popen([binary, *user, f"127.0.0.1:{port}", "1024"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_port(port)
        return "postfix smtp-sink", lambda: (proc.terminate(), proc.wait())
    warnings.warn("smtp-sink not found (Debian package postfix): using aiosmtpd, which saturates "
                  "near 300 msgs/s; both rates below are then the sink's, not the sender's", stacklevel=1)
    from aiosmtpd.controller import Controller

    class Discard:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            return "250 OK"

    controller = Controller(Discard(), hostname="127.0.0.1", port=port)
    controller.start()
    return "aiosmtpd (slow sink)", controller.stop


def wait_port(port: int) -> None:
    for _ in range(500):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise SystemExit(f"the sink did not start on port {port}")


# -- the whole process tree's memory ---------------------------------------------------------


class TreePeak:
    """The peak over time of the summed RSS of a process and all its descendants, sampled in a
    thread every `SAMPLE_EVERY` seconds (psutil when installed, else /proc)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.processes = pid, 0, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        """Stop sampling; the peak in MB."""
        self._done.set()
        self._thread.join()
        return self.peak / 2**20

    def _run(self) -> None:
        try:
            import psutil
        except ImportError:
            psutil = None
        while not self._done.is_set():
            pids = _descendants(self.pid) if psutil is None else None
            if psutil is not None:
                total, count = _psutil_tree(psutil, self.pid)
            else:
                total, count = sum(_rss(p) for p in pids), len(pids)  # type: ignore[union-attr]
            if total > self.peak:
                self.peak, self.processes = total, count
            self._done.wait(SAMPLE_EVERY)


def _psutil_tree(psutil, pid: int) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total, len(procs)


PAGE = os.sysconf("SC_PAGE_SIZE")


def _descendants(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc/<pid>/task/<tid>/children (or a scan of /proc)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
            children = [int(c) for t in tasks
                        for c in Path(f"/proc/{current}/task/{t}/children").read_text().split()]
        except FileNotFoundError:
            children = [p for p, parent in _parents().items() if parent == current]
        except OSError:
            children = []
        todo.extend(children)
    return out


def _parents() -> dict[int, int]:
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{name}/stat").read_text()
                parents[int(name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def timed(command: list[str], *, cwd: Path) -> tuple[float, float, str]:
    """(seconds, peak MB of the process tree, stdout) of one command, run to its end."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sampler = TreePeak(proc.pid)
    out, err = proc.communicate()
    elapsed = time.perf_counter() - started
    peak = sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed ({proc.returncode}):\n"
                         f"{out.decode(errors='replace')}\n{err.decode(errors='replace')}")
    return elapsed, peak, out.decode(errors="replace")


# -- the project: N subscribers, and the exact messages publish sends ---------------------------


def make_project(folder: Path, port: int, connections: int) -> Path:
    folder.mkdir()
    shutil.copy(ROOT / "config.yaml", folder / "config.yaml")
    shutil.copytree(ROOT / "templates", folder / "templates")
    shutil.copytree(ROOT / "posts", folder / "posts")
    with (folder / "config.yaml").open("a", encoding="utf-8") as f:
        f.write(f"\n  {CHANNEL}:\n    type: smtp\n    host: 127.0.0.1\n    port: {port}\n"
                f"    security: none\n    connections: {connections}\n")
    return folder / "config.yaml"


def add_subscribers(config_path: Path, n: int) -> None:
    """N active subscribers, and the unsubscribe secret (so that every copy shares it)."""
    import secrets
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from pipeline.config import load_config
    from pipeline.store.engine import engine_for
    from pipeline.store.schema import subscribers
    from pipeline.store.subscribers import state_secret

    engine = engine_for(load_config(config_path))
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for start in range(0, n, 10_000):
            conn.execute(insert(subscribers), [
                {"uid": secrets.token_hex(16), "email": f"reader{i}@example.com",
                 "email_key": f"reader{i}@example.com", "name": f"Reader {i}", "tags": "",
                 "status": "active", "created_at": now, "updated_at": now}
                for i in range(start, min(n, start + 10_000))])
    state_secret(engine)
    engine.dispose()


def write_shares(config_path: Path, folder: Path, processes: int) -> tuple[list[Path], int]:
    """The messages publish would send, rendered by publish's own code (`_emails`) on this copy
    of the project, dealt round-robin into one file per session process: the session settings
    frame, then per message a frame `sender NUL recipient` and a frame of the message's bytes.
    Returns the files and the size of one message."""
    from dataclasses import asdict
    from datetime import UTC, datetime

    from pipeline.channels.registry import build_channel
    from pipeline.channels.smtp_session import write_frame
    from pipeline.config import load_config
    from pipeline.intake.posts import load_posts
    from pipeline.plan import key_prefix
    from pipeline.publish import _emails
    from pipeline.render.email import render_edition
    from pipeline.store.engine import engine_for
    from pipeline.store.ledger import Ledger

    config = load_config(config_path)
    post = next(p for p in load_posts(config).posts if p.slug == SEED)
    channel = build_channel(config, CHANNEL, dry_run=False)
    edition = render_edition(post, config, channel=CHANNEL)
    ledger = Ledger(engine_for(config))
    ledger.plan_recipients(channel=CHANNEL, edition=SEED, dry_run=False,
                           key_prefix=key_prefix(CHANNEL, SEED, dry_run=False))
    paths = [folder / f"share-{i}.frames" for i in range(processes)]
    files = [p.open("wb") for p in paths]
    settings = json.dumps(asdict(channel.session)).encode()   # type: ignore[attr-defined]
    size = 0
    try:
        for f in files:
            write_frame(f, settings)
        for i, delivery in enumerate(_emails(config, channel, edition, ledger, dry_run=False,
                                             now=datetime.now(UTC))):
            assert delivery.message is not None and delivery.recipient and delivery.envelope_from
            f = files[i % processes]
            write_frame(f, f"{delivery.envelope_from}\0{delivery.recipient}".encode())
            write_frame(f, delivery.message)
            size = len(delivery.message)
    finally:
        for f in files:
            f.close()
        ledger.close()
        channel.close()
    return paths, size


# -- the baseline's processes ----------------------------------------------------------------


def session_process(path: Path) -> None:
    """One baseline session: send every message of its file on one pipelined Session."""
    from pipeline.channels.smtp_session import Session, SessionSettings, read_frame

    sent = 0
    with path.open("rb") as f:
        first = read_frame(f)
        assert first is not None
        session = Session(SessionSettings(**json.loads(first)))
        try:
            while (header := read_frame(f)) is not None and (message := read_frame(f)) is not None:
                sender, _, recipient = header.decode().partition("\0")
                outcome = session.send(sender, recipient, message)
                if outcome[0] != "ok":
                    raise SystemExit(f"baseline session: {outcome}")
                sent += 1
        finally:
            session.close()
    print(sent)


def launcher(paths: list[Path]) -> None:
    """The baseline command: one session process per file, all at once; prints messages sent."""
    procs = [subprocess.Popen([sys.executable, __file__, "--session", str(p)], stdout=subprocess.PIPE)
             for p in paths]
    total = 0
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a baseline session failed ({proc.returncode})")
        total += int(out)
    print(total)


def sent_in(config_path: Path) -> int:
    state = state_of(config_path)
    if "://" in state:
        with contextlib.closing(pg_connect(state)) as db:
            return db.execute("SELECT count(*) FROM deliveries WHERE status = 'sent'").fetchone()[0]
    import sqlite3

    with contextlib.closing(sqlite3.connect(config_path.parent / state)) as db:
        return db.execute("SELECT count(*) FROM deliveries WHERE status = 'sent'").fetchone()[0]


# -- a PostgreSQL state ----------------------------------------------------------------------

STATE_LINE = re.compile(r"(?m)^state: (.*)$")


def state_of(config_path: Path) -> str:
    """The project's `state:` (a path relative to it, or a URL)."""
    found = STATE_LINE.search(config_path.read_text(encoding="utf-8"))
    assert found, f"{config_path} has no top-level `state:` line"
    return str(json.loads(found[1])) if found[1].startswith('"') else found[1]


def set_state(config_path: Path, url: str) -> None:
    text = config_path.read_text(encoding="utf-8")
    config_path.write_text(STATE_LINE.sub(lambda _: f"state: {json.dumps(url)}", text, count=1),
                           encoding="utf-8")


def pg_connect(url: str, *, database: str | None = None):  # type: ignore[no-untyped-def]
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return psycopg.connect(host=parsed.host, port=parsed.port, user=parsed.username,
                           password=parsed.password, dbname=database or parsed.database, autocommit=True)


class PostgresCopies:
    """A PostgreSQL server for the state (tests/pg_server.py's: PIPELINE_TEST_DATABASE_URL's, else a
    throwaway cluster), a template database, and a new copy of it per round."""

    def __init__(self) -> None:
        from tests.pg_server import PostgresServer

        self.server = PostgresServer.for_session()
        self.template = self.server.create_database()
        self._copies = 0

    def describe(self) -> str:
        with contextlib.closing(pg_connect(self.template)) as db:
            version = db.execute("SHOW server_version").fetchone()[0].split()[0]
            settings = {name: db.execute(f"SHOW {name}").fetchone()[0]
                        for name in ("fsync", "synchronous_commit")}
        where = "throwaway cluster" if self.server.dir else "given server"
        return f"PostgreSQL {version} ({where}; " + ", ".join(f"{k} {v}" for k, v in settings.items()) + ")"

    def copy(self, config_path: Path) -> str:
        """A new database copied from the template (no one may be connected to it), named in
        `config_path`'s `state:`; its URL."""
        from psycopg import sql
        from sqlalchemy.engine import make_url

        self._copies += 1
        template = make_url(self.template)
        name = f"{template.database}_copy{self._copies}"
        with contextlib.closing(pg_connect(self.template, database="postgres")) as db:
            db.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template.database)))
        url = template.set(database=name).render_as_string(hide_password=False)
        set_state(config_path, url)
        return url

    def drop(self, url: str) -> None:
        self.server.drop_database(url)

    def close(self) -> None:
        self.server.drop_database(self.template)
        self.server.stop()


# -- execution: workers, and the ledger alone --------------------------------------------------


def deliver_with_workers(count: int, config_path: Path) -> None:
    """The workers side's command: `pipeline publish` (which defers the delivery jobs), then
    `count` `pipeline worker --until-idle` processes at once, to the last one's exit."""
    base = [sys.executable, "-m", "pipeline", "--config", str(config_path)]
    subprocess.run([*base, "publish", SEED, "--channel", CHANNEL], check=True, stdout=subprocess.DEVNULL)
    procs = [subprocess.Popen([*base, "worker", "--until-idle"], stdout=subprocess.DEVNULL)
             for _ in range(count)]
    failed = [p.returncode for p in procs if p.wait() != 0]
    if failed:
        raise SystemExit(f"{len(failed)} of {count} workers failed ({failed})")


LEDGER_BATCH = 256      # keys claimed (and answers recorded) per ledger transaction
LEDGER_PHASES: dict[str, list[list[float]]] = {}   # side -> per round [plan, read, claim] seconds


def ledger_alone(config_path: Path) -> None:
    """Prints the seconds the ledger's statements of one send take on this copy, nothing else, as
    `total plan read claim`: plan the edition's rows; read them back a page at a time; claim them
    and record them sent in transactions of LEDGER_BATCH keys (the pump's pattern: each commit
    records the last batch's answers and claims the next batch)."""
    from pipeline.config import load_config
    from pipeline.plan import key_prefix
    from pipeline.store.engine import engine_for
    from pipeline.store.ledger import Ledger

    ledger = Ledger(engine_for(load_config(config_path)))
    marks = [time.perf_counter()]
    ledger.plan_recipients(channel=CHANNEL, edition=SEED, dry_run=False,
                           key_prefix=key_prefix(CHANNEL, SEED, dry_run=False))
    marks.append(time.perf_counter())
    keys = [row[0] for row in ledger.pending_rows(channel=CHANNEL, edition=SEED, dry_run=False)]
    marks.append(time.perf_counter())
    answered: list[tuple[str, str | None, str | None]] = []
    for start in range(0, len(keys), LEDGER_BATCH):
        with ledger.batch() as batch:
            batch.succeed_rows(answered)
            taken = batch.begin_all(keys[start:start + LEDGER_BATCH])
        answered = [(key, f"<{i}.{start}@bench>", None) for i, key in enumerate(sorted(taken))]
    with ledger.batch() as batch:
        batch.succeed_rows(answered)
    marks.append(time.perf_counter())
    ledger.close()
    phases = [b - a for a, b in itertools.pairwise(marks)]
    print(" ".join(f"{s:.6f}" for s in [marks[-1] - marks[0], *phases]))


# -- the run ---------------------------------------------------------------------------------


def compile_bytecode() -> None:
    """The package's modules compiled to bytecode beside them (`__pycache__`, as Python writes
    it on first import), so that neither side's start-up includes compiling them."""
    import compileall

    compileall.compile_dir(ROOT / "pipeline", quiet=1)


@dataclass(frozen=True, kw_only=True)
class Side:
    """One thing timed each round: `run(round)` -> (seconds, tree peak MB); a table row `label`,
    or none for a measure reported apart (`ledger-*`)."""

    name: str
    label: str
    run: Callable[[int], tuple[float, float]]


def on_copy(template: Path, tmp: Path, name: str, pg: PostgresCopies | None,
            body: Callable[[Path], tuple[float, float]]) -> tuple[float, float]:
    """`body(config path)` on a new copy of the template project (and of its PostgreSQL
    database when `pg`), removed afterwards."""
    project = tmp / name
    shutil.copytree(template, project)
    url = pg.copy(project / "config.yaml") if pg else None
    try:
        return body(project / "config.yaml")
    finally:
        shutil.rmtree(project)
        if pg and url:
            pg.drop(url)


def publish_side(name: str, label: str, template: Path, tmp: Path, n: int,
                 pg: PostgresCopies | None, workers: int = 0) -> Side:
    def body(config_path: Path) -> tuple[float, float]:
        if workers:
            command = [sys.executable, __file__, "--deliver", str(workers), str(config_path)]
        else:
            command = [sys.executable, "-m", "pipeline", "--config", str(config_path),
                       "publish", SEED, "--channel", CHANNEL]
        seconds, peak, _ = timed(command, cwd=ROOT)
        if (sent := sent_in(config_path)) != n:
            raise SystemExit(f"{name} sent {sent:,} of {n:,}")
        return seconds, peak

    return Side(name=name, label=label, run=lambda r: on_copy(template, tmp, f"{name}-{r}", pg, body))


def ledger_side(name: str, template: Path, tmp: Path, pg: PostgresCopies | None,
                phases: dict[str, list[list[float]]]) -> Side:
    def body(config_path: Path) -> tuple[float, float]:
        _, peak, out = timed([sys.executable, __file__, "--ledger", str(config_path)], cwd=ROOT)
        total, *parts = map(float, out.split())
        phases.setdefault(name, []).append(parts)
        return total, peak

    return Side(name=name, label="", run=lambda r: on_copy(template, tmp, f"{name}-{r}", pg, body))


def baseline_side(shares: list[Path], n: int, connections: int) -> Side:
    def run(_round: int) -> tuple[float, float]:
        seconds, peak, out = timed([sys.executable, __file__, "--launch", *map(str, shares)], cwd=ROOT)
        if int(out) != n:
            raise SystemExit(f"the baseline sent {out.strip()} of {n:,}")
        return seconds, peak

    return Side(name="baseline", label=f"baseline: pipelined Session in {connections} processes, same bytes",
                run=run)


def rounds(sides: list[Side], n: int, count: int) -> Iterator[tuple[str, float, float]]:
    """(side, seconds, tree peak MB) for `count` rounds of every side, the order reversed every
    other round (with two sides: paired rounds, the first side alternating)."""
    for r in range(count):
        for side in sides if r % 2 == 0 else sides[::-1]:
            seconds, peak = side.run(r)
            print(f"  round {r + 1} {side.name:8} {seconds:7.2f} s  {n / seconds:7.0f} msgs/s  "
                  f"{peak:5.0f} MB", file=sys.stderr, flush=True)
            yield side.name, seconds, peak


def worker_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: worker process counts, e.g. 1,2")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="subscribers (default 100,000)")
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds (at least 3; default 3)")
    parser.add_argument("--connections", type=int, default=4, help="SMTP connections (default 4)")
    parser.add_argument("--sink", choices=["auto", "smtp-sink", "aiosmtpd"], default="auto")
    parser.add_argument("--state", choices=["sqlite", "postgresql"], default="sqlite",
                        help="the state database (postgresql: also publish on SQLite, for the ledger's cost)")
    parser.add_argument("--workers", type=worker_counts, default=[],
                        help="with --state postgresql: also `execution: workers` with these numbers "
                             "of worker processes, e.g. 1,2")
    parser.add_argument("--session", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--launch", type=Path, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--deliver", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--ledger", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.session:
        session_process(args.session)
        return
    if args.launch:
        launcher(args.launch)
        return
    if args.deliver:
        deliver_with_workers(int(args.deliver[0]), Path(args.deliver[1]))
        return
    if args.ledger:
        ledger_alone(args.ledger)
        return
    if args.rounds < 3:
        parser.error("--rounds: at least 3 paired rounds (a single run on a shared machine is noise)")
    if args.workers and args.state != "postgresql":
        parser.error("--workers: `execution: workers` needs a PostgreSQL state; add --state postgresql")

    port = free_port()
    sink_name, stop = start_sink(port, args.sink)
    pg: PostgresCopies | None = None
    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            compile_bytecode()
            config_path = make_project(tmp / "template", port, args.connections)
            add_subscribers(config_path, args.n)
            render = tmp / "render"
            shutil.copytree(tmp / "template", render)
            shares, size = write_shares(render / "config.yaml", tmp, args.connections)
            shutil.rmtree(render)
            sides = [publish_side("publish", "", tmp / "template", tmp, args.n, None),
                     baseline_side(shares, args.n, args.connections)]
            if args.state == "postgresql":
                pg = PostgresCopies()
                sides = postgres_sides(args, tmp, pg, sides)
                sink_name += f"; state: {pg.describe()}"
            results = list(rounds(sides, args.n, args.rounds))
    finally:
        stop()
        if pg:
            pg.close()
    if args.state == "postgresql":
        report_postgres(args, sink_name, size, results, sides)
    else:
        report(args, sink_name, size, results)


def postgres_sides(args: argparse.Namespace, tmp: Path, pg: PostgresCopies, sqlite: list[Side]) -> list[Side]:
    """The template project on PostgreSQL (same subscribers' count), and the sides run on it."""
    template = tmp / "template-pg"
    shutil.copytree(tmp / "template", template, ignore=shutil.ignore_patterns("state"))
    config_path = template / "config.yaml"
    set_state(config_path, pg.template)
    add_subscribers(config_path, args.n)
    # The statistics a server's autovacuum would have gathered since the list was imported (the
    # throwaway cluster runs without it); the copies inherit them. The rows a send plans have
    # none until autovacuum comes by, on a real server too.
    with contextlib.closing(pg_connect(pg.template)) as db:
        db.execute("ANALYZE")
    if args.workers:
        with config_path.open("a", encoding="utf-8") as f:
            f.write("\nexecution: workers\n")
        # The procrastinate schema, where creating the state did not make it.
        subprocess.run([sys.executable, "-m", "pipeline", "--config", str(config_path), "db", "upgrade"],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        inline = tmp / "template-pg-inline"
        shutil.copytree(template, inline)
        text = (inline / "config.yaml").read_text(encoding="utf-8")
        (inline / "config.yaml").write_text(text.replace("\nexecution: workers\n", "\n"), encoding="utf-8")
    else:
        inline = template
    sqlite_publish = Side(name="sqlite", label="pipeline publish, state SQLite (inline)", run=sqlite[0].run)
    sides = [publish_side("postgres", "pipeline publish, state PostgreSQL (inline)", inline, tmp, args.n, pg),
             sqlite_publish]
    # Each worker sends a job through the channel's own connections: K workers hold K x C.
    sides += [publish_side(f"workers-{k}", f"execution: workers: publish, then {k} `pipeline worker "
                                           f"--until-idle` ({k * args.connections} connections)",
                           template, tmp, args.n, pg, workers=k)
              for k in args.workers]
    sides += [sqlite[1], ledger_side("ledger-pg", inline, tmp, pg, LEDGER_PHASES),
              ledger_side("ledger-sqlite", tmp / "template", tmp, None, LEDGER_PHASES)]
    return sides


def report(args: argparse.Namespace, sink_name: str, size: int,
           results: list[tuple[str, float, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    seconds = {side: [s for k, s, _ in results if k == side] for side in ("publish", "baseline")}
    peaks = {side: max(p for k, _, p in results if k == side) for side in ("publish", "baseline")}
    ratios = [b / p for p, b in zip(seconds["publish"], seconds["baseline"], strict=True)]
    median = {side: statistics.median(values) for side, values in seconds.items()}
    table = Table(title=f"{args.n:,} messages of {size / 1000:.1f} KB, {args.connections} connections, "
                        f"sink: {sink_name}; median of {args.rounds} paired rounds")
    for col in ("sender", "seconds", "msgs/s", "tree peak RSS MB"):
        table.add_column(col, justify="right")
    table.add_row(f"pipeline publish (planning, ledger, personalization; {args.connections} workers)",
                  f"{median['publish']:.2f}", f"{args.n / median['publish']:.0f}", f"{peaks['publish']:.0f}")
    table.add_row(f"baseline: pipelined Session in {args.connections} processes, same bytes",
                  f"{median['baseline']:.2f}", f"{args.n / median['baseline']:.0f}",
                  f"{peaks['baseline']:.0f}")
    console = Console(width=120)
    console.print(table)
    console.print("publish/baseline msgs/s per round: " + ", ".join(f"{r:.2f}" for r in ratios))
    print(f"ratio {statistics.median(ratios):.2f} peak_rss_mb {peaks['publish']:.0f} "
          "baseline session-processes")


def report_postgres(args: argparse.Namespace, sink_name: str, size: int,
                    results: list[tuple[str, float, float]], sides: list[Side]) -> None:
    from rich.console import Console
    from rich.table import Table

    seconds = {side.name: [s for k, s, _ in results if k == side.name] for side in sides}
    peaks = {side.name: max(p for k, _, p in results if k == side.name) for side in sides}
    median = {name: statistics.median(values) for name, values in seconds.items()}
    table = Table(title=f"{args.n:,} messages of {size / 1000:.1f} KB, {args.connections} connections, "
                        f"sink: {sink_name}; median of {args.rounds} rounds")
    for col in ("sender", "seconds", "msgs/s", "vs baseline", "tree peak RSS MB"):
        table.add_column(col, justify="right")
    for side in sides:
        if side.label:
            table.add_row(side.label, f"{median[side.name]:.2f}", f"{args.n / median[side.name]:.0f}",
                          f"{median['baseline'] / median[side.name]:.2f}", f"{peaks[side.name]:.0f}")
    ledger = Table(title="the ledger's cost per message, PostgreSQL against SQLite "
                         f"(median of {args.rounds} rounds)")
    for col in ("measure", "SQLite µs/msg", "PostgreSQL µs/msg", "PostgreSQL − SQLite µs/msg"):
        ledger.add_column(col, justify="right")
    for what, pg_side, lite_side in (("whole publish (inline)", "postgres", "sqlite"),
                                     (f"ledger statements alone (plan, read, claim+record per "
                                      f"{LEDGER_BATCH})", "ledger-pg", "ledger-sqlite")):
        lite, post = (median[lite_side] / args.n * 1e6, median[pg_side] / args.n * 1e6)
        ledger.add_row(what, f"{lite:.1f}", f"{post:.1f}", f"{post - lite:+.1f}")
    for i, what in enumerate(("  of which: plan the rows (one INSERT ... SELECT)",
                              "  of which: read them back (pages of 500)",
                              f"  of which: claim + record sent ({LEDGER_BATCH} keys a commit)")):
        lite, post = (statistics.median(p[i] for p in LEDGER_PHASES[side]) / args.n * 1e6
                      for side in ("ledger-sqlite", "ledger-pg"))
        ledger.add_row(what, f"{lite:.1f}", f"{post:.1f}", f"{post - lite:+.1f}")
    ratios = [b / p for p, b in zip(seconds["postgres"], seconds["baseline"], strict=True)]
    console = Console(width=140)
    console.print(table)
    console.print(ledger)
    console.print("publish on PostgreSQL/baseline msgs/s per round: " + ", ".join(f"{r:.2f}" for r in ratios))
    print(f"ratio {statistics.median(ratios):.2f} peak_rss_mb {peaks['postgres']:.0f} "
          "baseline session-processes")


if __name__ == "__main__":
    main()
