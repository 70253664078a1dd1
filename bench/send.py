"""Sending speed: one edition to N synthetic subscribers through `pipeline publish`, against a
bare-smtplib baseline measured in the same run (same message bytes, same number of connections,
same sink). Prints a table; the last line is `ratio <publish/baseline msgs/s> peak_rss_mb <MB>`.

The sink is Postfix's smtp-sink when installed (`make bench` installs the postfix package without
configuring or starting it); otherwise aiosmtpd, which saturates near 300 msgs/s and so cannot
measure a fast sender (a warning says so).

    python bench/send.py [--n 100000] [--connections 4]
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import insert

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import load_config  # noqa: E402
from pipeline.intake.posts import load_posts  # noqa: E402
from pipeline.render.email import render_edition  # noqa: E402
from pipeline.render.mime import MessageTemplate, build_message  # noqa: E402
from pipeline.store.engine import engine_for  # noqa: E402
from pipeline.store.schema import subscribers  # noqa: E402
from pipeline.store.subscribers import token  # noqa: E402

SEED = "2020-09-01-ketamine-neurological-damage"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sink(port: int, kind: str):  # type: ignore[no-untyped-def]
    """(name, stop function)."""
    binary = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists()
                                          else None)
    if kind in ("auto", "smtp-sink") and binary:
        proc = subprocess.Popen([binary, "-u", "nobody", f"127.0.0.1:{port}", "1024"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise SystemExit(f"sink did not start on port {port}")


def make_project(tmp: Path, port: int, connections: int) -> Path:
    shutil.copy(ROOT / "config.yaml", tmp / "config.yaml")
    shutil.copytree(ROOT / "templates", tmp / "templates")
    shutil.copytree(ROOT / "posts", tmp / "posts")
    with (tmp / "config.yaml").open("a", encoding="utf-8") as f:
        f.write(f"\n  newsletter:\n    type: smtp\n    host: 127.0.0.1\n    port: {port}\n"
                f"    security: none\n    connections: {connections}\n")
    return tmp / "config.yaml"


def add_subscribers(config_path: Path, n: int) -> None:
    engine = engine_for(load_config(config_path))
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for start in range(0, n, 10_000):
            conn.execute(insert(subscribers), [
                {"uid": secrets.token_hex(16), "email": f"reader{i}@example.com",
                 "email_key": f"reader{i}@example.com", "name": f"Reader {i}", "tags": "",
                 "status": "active", "created_at": now, "updated_at": now}
                for i in range(start, min(n, start + 10_000))])


def run_publish(config_path: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one `pipeline publish` process."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(config_path), "publish",
                             SEED, "--channel", "newsletter"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    out, err = proc.communicate()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"publish failed:\n{out}\n{err}")
    return elapsed, usage.ru_maxrss / 1024


def baseline(port: int, message: bytes, n: int, connections: int) -> float:
    """Seconds for bare smtplib to send `message` n times over `connections` connections."""
    def worker(count: int) -> None:
        conn = smtplib.SMTP("127.0.0.1", port)
        for i in range(count):
            conn.sendmail("news@example.com", [f"reader{i}@example.com"], message)
        conn.quit()

    shares = [n // connections + (1 if i < n % connections else 0) for i in range(connections)]
    threads = [threading.Thread(target=worker, args=(c,)) for c in shares]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def preparation(config_path: Path, rounds: int = 5, per_round: int = 2000) -> tuple[float, float, bytes]:
    """Median microseconds per recipient: filling the serialized edition (with its unsubscribe
    token), and building a fresh EmailMessage the ordinary way. Also one message, for the baseline."""
    config = load_config(config_path)
    post = next(p for p in load_posts(config).posts if p.slug == SEED)
    edition = render_edition(post, config, channel="newsletter")
    template = MessageTemplate(edition, sender=config.sender, domain="example.com", date=datetime.now(UTC))
    uid = secrets.token_hex(16)

    def fill(i: int) -> bytes:
        address = f"reader{i}@example.com"
        url = f"https://news.example.com/unsubscribe/{token(uid, address, 'secret')}"
        return template.render(to=address, values={"name": f"Reader {i}", "email": address,
                                                   "unsubscribe_url": url,
                                                   "manage_url": url.replace("/unsubscribe/", "/manage/")},
                               list_unsubscribe=f"<{url}>")

    fast, slow = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        for i in range(per_round):
            fill(i)
        fast.append((time.perf_counter() - t) / per_round * 1e6)
        t = time.perf_counter()
        for i in range(per_round // 20):
            bytes(build_message(edition, sender=config.sender, to=f"reader{i}@example.com",
                                values={"name": "x", "email": "x", "unsubscribe_url": "x", "manage_url": "x"},
                                domain="example.com", date=datetime.now(UTC)))
        slow.append((time.perf_counter() - t) / (per_round // 20) * 1e6)
    return statistics.median(fast), statistics.median(slow), fill(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="subscribers (default 100,000)")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--sink", choices=["auto", "smtp-sink", "aiosmtpd"], default="auto")
    args = parser.parse_args()
    port = free_port()
    sink_name, stop = start_sink(port, args.sink)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config_path = make_project(Path(tmp), port, args.connections)
            add_subscribers(config_path, args.n)
            fast, slow, message = preparation(config_path)
            base = baseline(port, message, args.n, args.connections)
            seconds, rss = run_publish(config_path)
    finally:
        stop()
    rate, base_rate = args.n / seconds, args.n / base
    table = Table(title=f"{args.n:,} messages of {len(message) / 1000:.0f} KB, {args.connections} "
                        f"connections, sink: {sink_name}")
    for col in ("sender", "seconds", "msgs/s", "peak RSS MB"):
        table.add_column(col, justify="right")
    table.add_row("pipeline publish (ledger, personalization)", f"{seconds:.1f}", f"{rate:.0f}", f"{rss:.0f}")
    table.add_row("baseline: bare smtplib, same bytes", f"{base:.1f}", f"{base_rate:.0f}", "")
    console = Console(width=120)
    console.print(table)
    console.print(f"per-recipient preparation: {fast:.1f} µs filling the serialized edition "
                  f"(a fresh EmailMessage would take {slow:.0f} µs)")
    print(f"ratio {rate / base_rate:.2f} peak_rss_mb {rss:.0f}")
    _ = resource  # peak RSS comes from wait4's rusage for the publish process alone


if __name__ == "__main__":
    main()
