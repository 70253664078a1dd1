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

    python bench/send.py [--n 100000] [--rounds 3] [--connections 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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


# -- the run ---------------------------------------------------------------------------------


def compile_bytecode() -> None:
    """The package's modules compiled to bytecode beside them (`__pycache__`, as Python writes
    it on first import), so that neither side's start-up includes compiling them."""
    import compileall

    compileall.compile_dir(ROOT / "pipeline", quiet=1)


def sent_in(config_path: Path) -> int:
    import sqlite3

    state = config_path.parent / "state" / "pipeline.sqlite3"
    with contextlib.closing(sqlite3.connect(state)) as db:
        return db.execute("SELECT count(*) FROM deliveries WHERE status = 'sent'").fetchone()[0]


def rounds(template: Path, tmp: Path, shares: list[Path], n: int,
           count: int) -> Iterator[tuple[str, float, float]]:
    """(side, seconds, tree peak MB) for `count` paired rounds, the first side alternating."""
    for r in range(count):
        for side in ("publish", "baseline") if r % 2 == 0 else ("baseline", "publish"):
            if side == "publish":
                project = tmp / f"publish-{r}"
                shutil.copytree(template, project)
                config_path = project / "config.yaml"
                seconds, peak, _ = timed([sys.executable, "-m", "pipeline", "--config", str(config_path),
                                          "publish", SEED, "--channel", CHANNEL], cwd=ROOT)
                if (sent := sent_in(config_path)) != n:
                    raise SystemExit(f"publish sent {sent:,} of {n:,}")
                shutil.rmtree(project)
            else:
                seconds, peak, out = timed([sys.executable, __file__, "--launch",
                                            *map(str, shares)], cwd=ROOT)
                if int(out) != n:
                    raise SystemExit(f"the baseline sent {out.strip()} of {n:,}")
            print(f"  round {r + 1} {side:8} {seconds:7.2f} s  {n / seconds:7.0f} msgs/s  "
                  f"{peak:5.0f} MB", file=sys.stderr, flush=True)
            yield side, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="subscribers (default 100,000)")
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds (at least 3; default 3)")
    parser.add_argument("--connections", type=int, default=4, help="SMTP connections (default 4)")
    parser.add_argument("--sink", choices=["auto", "smtp-sink", "aiosmtpd"], default="auto")
    parser.add_argument("--session", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--launch", type=Path, nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.session:
        session_process(args.session)
        return
    if args.launch:
        launcher(args.launch)
        return
    if args.rounds < 3:
        parser.error("--rounds: at least 3 paired rounds (a single run on a shared machine is noise)")

    port = free_port()
    sink_name, stop = start_sink(port, args.sink)
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
            results = list(rounds(tmp / "template", tmp, shares, args.n, args.rounds))
    finally:
        stop()
    report(args, sink_name, size, results)


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


if __name__ == "__main__":
    main()
