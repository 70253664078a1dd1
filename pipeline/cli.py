"""The command line. The only module that prints or sets exit codes; the library logs and raises."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline.errors import PipelineError

# Each command imports what it uses: `pipeline --help` loads click alone, and `schedule` never
# loads the renderers or the channel libraries (bench/startup.py measures this).
if TYPE_CHECKING:
    from datetime import datetime

    import rich.table
    from rich.console import Console

    from pipeline.config import Config
    from pipeline.models import Post, Problem
    from pipeline.preview import Batch


class _LazyConsole:
    """A rich Console made on first use: click prints `--help` itself, without rich."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr

    @functools.cached_property
    def console(self) -> Console:
        from rich.console import Console

        # markup=False: file names, addresses and server replies are data, never rich markup.
        return Console(stderr=self._stderr, highlight=False, soft_wrap=True, markup=False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


out = _LazyConsole(stderr=False)
err = _LazyConsole(stderr=True)
STYLES = {"error": "red", "warning": "yellow", "note": "cyan"}


def Table(*headers: Any, **options: Any) -> rich.table.Table:
    """A rich Table (the columns' headers, then rich's options), rich imported on first use."""
    from rich import table

    return table.Table(*headers, **options)


def say(kind: str, message: str, indent: str = "") -> None:
    """One line on stderr: `error: ...` / `warning: ...`, the label coloured, the message verbatim."""
    from rich.text import Text

    err.print(Text.assemble(indent, (f"{kind}:", STYLES[kind]), " ", message))


def report(problems: list[Problem] | tuple[Problem, ...]) -> None:
    """Every problem on one line, errors in red, warnings in yellow."""
    for p in problems:
        say(p.severity.value, str(p))


class _Context:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            from pipeline.config import load_config

            self._config = load_config(self.config_path)
        return self._config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="config file (default: $PIPELINE_CONFIG or ./config.yaml)")
@click.option("-v", "--verbose", count=True, help="more log output (-vv for debug)")
@click.version_option(package_name="pipeline")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """Newsletter and social-post publishing pipeline: Markdown posts to email editions,
    social snippets and cross-posts, on a timetable.

    \b
    Example:
      pipeline check && pipeline preview && pipeline run --once --dry-run
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # HTTP client libraries log each request URL at INFO; webhook URLs are secrets. Only -vv.
    for noisy in ("httpx", "httpcore", "urllib3", "requests_oauthlib", "oauthlib"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING) if verbose < 2 else level)
    ctx.obj = _Context(config_path)


@cli.command(short_help="Validate config, templates and posts.")
@click.option("--strict", is_flag=True, help="treat warnings as errors")
@click.option("--urls", is_flag=True,
              help="instead, list each post's slug and canonical URL, to compare with the live site")
@click.pass_obj
def check(obj: _Context, strict: bool, urls: bool) -> None:
    """Validate config, templates and every post; print every problem. With --urls, list each
    post's canonical URL as it will be sent (from site.generator's config, or site.permalink).

    \b
    Examples:
      pipeline check --strict
      pipeline check --urls
    """
    from pipeline.check import check_all
    from pipeline.models import Severity

    if urls:
        _url_table(obj.config, strict)
        return
    problems = check_all(obj.config)
    report(problems)
    errors = _failing(problems, strict)
    if errors:
        err.print(f"{len(errors)} problem(s) found")
        sys.exit(1)
    warnings = sum(p.severity is Severity.WARNING for p in problems)
    # A plain line: click prints it; importing rich for it would cost `check` 30 ms.
    click.echo(f"OK: config, templates and posts are valid ({warnings} warning(s))")


def _failing(problems: Sequence[Problem], strict: bool) -> list[Problem]:
    """The problems that fail `check`: errors, and with --strict warnings too (never notes)."""
    from pipeline.models import Severity

    return [p for p in problems
            if p.severity is Severity.ERROR or (strict and p.severity is Severity.WARNING)]


def _url_table(config: Config, strict: bool) -> None:
    from rich.table import Column

    from pipeline.check import check_urls

    urls = check_urls(config)
    out.print(f"Canonical URLs from {urls.source}; base {urls.base_url}")
    # A URL is never wrapped or cut, so that it can be copied whole; the other columns give way.
    table = Table(Column("slug", overflow="fold"), Column("URL", no_wrap=True, overflow="ignore"),
                  Column("file", overflow="fold"))
    for row in urls.rows:
        table.add_row(row.slug, row.url, row.path)
    out.print(table)
    for note in urls.notes:
        say("note", note)
    report(urls.problems)
    errors = _failing(urls.problems, strict)
    if errors:
        err.print(f"{len(errors)} problem(s) found")
        sys.exit(1)
    out.print(f"{len(urls.rows)} post(s)")


@cli.command(short_help="Render previews to disk, or serve them.")
@click.argument("slugs", nargs=-1)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="output folder (default: preview.out in config, out/preview)")
@click.option("--serve", is_flag=True, help="serve a preview page instead (re-rendered as files change)")
@click.option("--host", default="127.0.0.1", show_default=True, help="with --serve: the address to listen on")
@click.option("--port", type=int, default=None, help="with --serve: the port (default: preview.port, 8001)")
@click.option("--posts-only", is_flag=True, help="only the posts of `posts:`, not ready feed entries")
@click.pass_obj
def preview(obj: _Context, slugs: tuple[str, ...], out_dir: str | None, serve: bool, host: str,
            port: int | None, posts_only: bool) -> None:
    """Write each post's email (HTML, text, .eml) and snippets to disk, and print a table; with
    --serve, show them all on a local web page instead.

    \b
    Examples:
      pipeline preview
      pipeline preview --serve --port 8001
    """
    from pipeline.preview import load_articles, render_posts, write_preview

    config = obj.config
    if serve:
        _serve_preview(config, host, port or config.preview.port)
        return
    articles = load_articles(config, posts_only=posts_only)
    batch = render_posts(config, slugs, loaded=articles.loaded)
    target = Path(out_dir) if out_dir else config.path(config.preview.out)
    for item in batch.rendered:
        write_preview(item, config, target)
    if not out_dir:        # out/feed.xml (`feed.out`), the Atom feed of the posts; --out writes previews only
        _build_feed(config, posts=articles.local)
    _preview_table(batch, config)
    report(batch.problems)
    out.print(f"Wrote {len(batch.rendered)} preview(s) to {target}/")
    if articles.settling:
        out.print(f"{articles.settling} feed entr{'y is' if articles.settling == 1 else 'ies are'} "
                  "still settling: previewed once ready (`pipeline preview --serve` shows when)")
    # Nothing rendered while files were found and named (not read, refused): not a success.
    if batch.errors or (not batch.rendered and batch.problems):
        sys.exit(1)


def _serve_preview(config: Config, host: str, port: int) -> None:
    import socket

    import uvicorn

    from pipeline.web.preview_page import create_preview_app, is_loopback

    app = create_preview_app(config.root / Path(config.source).name, host=host)
    shown = f"[{host}]" if ":" in host else host
    out.print(f"Preview page on http://{shown}:{port}/ (Ctrl-C to stop)")
    if not is_loopback(host.strip("[]").lower()):
        # The page answers this machine's names and addresses (OwnHosts): say so, and how to reach it.
        say("warning", f"listening on {host}: anyone who can reach this machine (http://{socket.gethostname()}:"
                       f"{port}/ or one of its addresses) can see unsent posts and send tests; "
                       "other host names are refused")
    uvicorn.run(app, host=host, port=port, log_level="warning")


@cli.command("send-test", short_help="Send a [TEST] email to a few addresses.")
@click.argument("slug", required=False)
@click.option("--digest", "digest", default=None, metavar="ENTRY",
              help="send the next digest of this timetable entry instead of a post")
@click.option("--to", "to", multiple=True, help="address (repeatable; default: preview.test_recipients)")
@click.option("--channel", default=None,
              help="email channel (default: preview.test_channel, else the first smtp one, else the outbox)")
@click.pass_obj
def send_test_command(obj: _Context, slug: str | None, digest: str | None, to: tuple[str, ...],
                      channel: str | None) -> None:
    """Send a post's email (or with --digest ENTRY, the next digest as it stands), marked [TEST],
    to a few addresses through a real email channel when one is configured; the ledger is not
    touched.

    \b
    Examples:
      pipeline send-test 2020-09-01-ketamine-neurological-damage --to me@example.com
      pipeline send-test --digest weekly-newsletter
    """
    from pipeline.web.send_test import describe_channel, email_channel, send_digest_test, send_test

    if bool(slug) == bool(digest):
        raise click.UsageError("give a post's SLUG or --digest ENTRY (one of them)")
    config = obj.config
    addresses = list(to) or config.preview.test_recipients
    results = (send_digest_test(config, digest, addresses, channel=channel) if digest
               else send_test(config, slug or "", addresses, channel=channel))
    for r in results:
        if r.ok:
            out.print(f"sent test to {r.address} ({r.detail})")
        else:
            say("error", f"{r.address}: {r.detail}")
    if any(r.ok for r in results):      # the channel resolved and worked: say which it was
        out.print(f"Sent through {describe_channel(config, email_channel(config, channel))}")
    if not all(r.ok for r in results):
        sys.exit(1)


def _preview_table(batch: Batch, config: Config) -> None:
    networks = [n for n, s in config.networks.items() if s.enabled]
    table = Table(show_lines=False)
    for column in ("post", "subject", "email", *networks, "lint"):
        table.add_column(column, overflow="fold", no_wrap=column not in ("post", "subject"))
    for item in batch.rendered:
        lint = len(item.edition.lint)
        table.add_row(item.post.slug, item.edition.subject, f"{item.edition.size / 1000:.1f} KB",
                      *(f"{s.length}/{s.limit}" for s in item.snippets.values()),
                      f"{lint} warning(s)" if lint else "ok")
    out.print(table)


STATUSES = ["pending", "active", "unsubscribed", "bounced", "complained", "suppressed"]


@cli.group(short_help="Manage the subscriber list.")
def subscribers() -> None:
    """Manage the subscriber list (in the state database).

    \b
    Example:
      pipeline subscribers import docs/examples/subscribers.csv
    """


@subscribers.command("import", short_help="Import subscribers from a CSV file.")
@click.argument("csv_file", type=click.Path(dir_okay=False, exists=True))
@click.option("--resubscribe", is_flag=True,
              help="also reactivate addresses that unsubscribed, bounced or complained")
@click.pass_obj
def subscribers_import(obj: _Context, csv_file: str, resubscribe: bool) -> None:
    """Import a CSV with columns email, name (optional), tags (optional).

    \b
    Example:
      pipeline subscribers import list.csv
    """
    from pipeline.store import subscribers as store
    from pipeline.store.engine import engine_for

    result = store.import_csv(engine_for(obj.config), Path(csv_file), resubscribe=resubscribe)
    for line, message in result.errors:
        say("error", f"{csv_file}:{line}: {message}")
    out.print(f"{result.added} added, {result.updated} updated, {result.unchanged} unchanged, "
              f"{result.resubscribed} resubscribed, {result.kept_unsubscribed} kept unsubscribed "
              f"(or bounced, complained), {result.kept_suppressed} kept suppressed, "
              f"{len(result.errors)} rejected")
    if result.errors:
        sys.exit(1)


@subscribers.command("add", short_help="Add or update one subscriber.")
@click.argument("email")
@click.option("--name", default=None, help="the name used in the greeting")
@click.option("--tag", "tags", multiple=True, help="a tag (repeatable)")
@click.option("--resubscribe", is_flag=True,
              help="reactivate the address if it unsubscribed, bounced or complained")
@click.pass_obj
def subscribers_add(obj: _Context, email: str, name: str | None, tags: tuple[str, ...],
                    resubscribe: bool) -> None:
    """Add (or update) one subscriber.

    \b
    Example:
      pipeline subscribers add ana@example.com --name Ana --tag vip
    """
    from pipeline.store import subscribers as store
    from pipeline.store.engine import engine_for

    try:
        outcome = store.upsert(engine_for(obj.config), email, name, tags, resubscribe=resubscribe,
                               source="cli")
    except ValueError as exc:
        raise PipelineError(f"{email}: {exc}") from None
    out.print(f"{email}: {outcome.replace('_', ' ')}")


@subscribers.command("remove", short_help="Unsubscribe (or forget) an address.")
@click.argument("email")
@click.option("--forget", is_flag=True, help="delete the address entirely instead of keeping it unsubscribed")
@click.pass_obj
def subscribers_remove(obj: _Context, email: str, forget: bool) -> None:
    """Unsubscribe an address (kept so a re-import cannot resubscribe it), or --forget it.

    \b
    Example:
      pipeline subscribers remove ana@example.com
    """
    from pipeline.store import subscribers as store
    from pipeline.store.engine import engine_for

    try:
        done = (store.forget if forget else store.unsubscribe)(engine_for(obj.config), email)
    except ValueError as exc:
        raise PipelineError(f"{email}: {exc}") from None
    if not done:
        raise PipelineError(f"{email}: not a subscriber")
    out.print(f"{email}: {'forgotten' if forget else 'unsubscribed'}")


@subscribers.command("list", short_help="List subscribers.")
@click.option("--status", type=click.Choice(STATUSES), default=None,
              help="only subscribers in this state (default: all)")
@click.option("--json", "as_json", is_flag=True, help="print a JSON array instead of a table")
@click.pass_obj
def subscribers_list(obj: _Context, status: str | None, as_json: bool) -> None:
    """List subscribers.

    \b
    Example:
      pipeline subscribers list --status active --json
    """
    import json

    from pipeline.store import subscribers as store
    from pipeline.store.engine import engine_for

    rows = store.iter_subscribers(engine_for(obj.config), status=status)
    if as_json:
        out.print_json(json.dumps([{"email": s.email, "name": s.name, "tags": list(s.tags),
                                    "status": s.status, "reason": s.status_reason,
                                    "consent_at": s.consent_at.isoformat() if s.consent_at else None,
                                    "consent_source": s.consent_source} for s in rows]))
        return
    table = Table("email", "name", "tags", "status", "reason")
    for s in rows:
        table.add_row(s.email, s.name or "", ", ".join(s.tags), s.status, s.status_reason or "")
    out.print(table)


@subscribers.command("show", short_help="Show one subscriber: status, consent, history.")
@click.argument("email")
@click.pass_obj
def subscribers_show(obj: _Context, email: str) -> None:
    """Show one subscriber: status and why, the consent record, and what came back (bounces,
    complaints, unsubscribes), newest first.

    \b
    Example:
      pipeline subscribers show ana@example.com
    """
    from pipeline.store import events
    from pipeline.store.engine import engine_for

    engine = engine_for(obj.config)
    found = _find_subscriber(engine, email)
    if found is None:
        raise PipelineError(f"{email}: not a subscriber")
    consent = (f"{found.consent_at:%Y-%m-%d %H:%M} UTC via {found.consent_source}" if found.consent_at
               else "not given yet (waiting for the confirmation link)" if found.status == "pending"
               else "not recorded (added before consent was recorded)")
    out.print(f"{found.email}: {found.status}" + (f" ({found.status_reason})" if found.status_reason else ""))
    out.print(f"  name: {found.name or '-'}; tags: {', '.join(found.tags) or '-'}")
    out.print(f"  consent: {consent}")
    table = Table("when (UTC)", "event", "source", "edition", "detail")
    for event in events.history(engine, found.email):
        table.add_row(f"{event['at']:%Y-%m-%d %H:%M}", str(event["kind"]), str(event["source"]),
                      str(event["edition"] or ""), str(event["detail"] or ""))
    if table.row_count:
        out.print(table)


def _find_subscriber(engine, email: str):  # type: ignore[no-untyped-def]
    """The subscriber with this address, or None; an invalid address is a PipelineError."""
    from pipeline.store import subscribers as store

    try:
        return store.find(engine, address=email)
    except ValueError as exc:
        raise PipelineError(f"{email}: {exc}") from None


@subscribers.command("suppress", short_help="Never mail an address (your own blocklist).")
@click.argument("addresses", nargs=-1, required=True)
@click.option("--reason", default="suppressed by the operator", show_default=True,
              help="why, kept with the address")
@click.pass_obj
def subscribers_suppress(obj: _Context, addresses: tuple[str, ...], reason: str) -> None:
    """Put addresses on the suppression list: never mailed again, and no import, form or link can
    bring them back (only `subscribers unsuppress`). Unknown addresses are added as suppressed.

    \b
    Example:
      pipeline subscribers suppress abuse@example.com --reason "asked by phone"
    """
    from pipeline.store import subscribers as store
    from pipeline.store.engine import engine_for

    engine = engine_for(obj.config)
    for address in addresses:
        try:
            store.suppress(engine, address, reason=reason)
        except ValueError as exc:
            raise PipelineError(f"{address}: {exc}") from None
        out.print(f"{address}: suppressed")


@subscribers.command("unsuppress", short_help="Lift the suppression of an address.")
@click.argument("email")
@click.pass_obj
def subscribers_unsuppress(obj: _Context, email: str) -> None:
    """Lift a suppression: the address becomes unsubscribed (it is mailed again only after it
    signs up and confirms, or with `subscribers add --resubscribe`).

    \b
    Example:
      pipeline subscribers unsuppress ana@example.com
    """
    from pipeline.store import subscribers as store
    from pipeline.store.engine import engine_for

    engine = engine_for(obj.config)
    found = _find_subscriber(engine, email)
    if found is None or found.status != "suppressed":
        raise PipelineError(f"{email}: not suppressed ({found.status if found else 'not a subscriber'})")
    store.set_status(engine, email, store.SubscriberStatus.UNSUBSCRIBED, reason="suppression lifted")
    out.print(f"{email}: no longer suppressed (now unsubscribed)")


@subscribers.command("export", short_help="Export subscribers as CSV.")
@click.argument("csv_file", type=click.Path(dir_okay=False), required=False)
@click.option("--status", type=click.Choice(STATUSES), default=None,
              help="only subscribers in this state (default: all)")
@click.pass_obj
def subscribers_export(obj: _Context, csv_file: str | None, status: str | None) -> None:
    """Write subscribers as CSV to CSV_FILE (default: standard output).

    \b
    Example:
      pipeline subscribers export list.csv --status active
    """
    from pipeline.store import subscribers as store
    from pipeline.store.engine import engine_for

    engine = engine_for(obj.config)
    if csv_file:
        with open(csv_file, "w", encoding="utf-8", newline="") as f:
            count = store.export_csv(engine, f, status=status)
        err.print(f"{count} subscriber(s) written to {csv_file}")
    else:
        store.export_csv(engine, sys.stdout, status=status)


@cli.command(short_help="Send posts to the channels now.")
@click.argument("slugs", nargs=-1)
@click.option("--channel", "channels", multiple=True, help="channel name (repeatable; default: all)")
@click.option("--dry-run", is_flag=True, help="send everything to the outbox instead of the real channels")
@click.pass_obj
def publish(obj: _Context, slugs: tuple[str, ...], channels: tuple[str, ...], dry_run: bool) -> None:
    """Send the given posts (default: the newest) to the channels. Safe to run twice.

    \b
    Examples:
      pipeline publish --dry-run
      pipeline publish 2020-09-01-ketamine-neurological-damage --channel outbox
    """
    from pipeline.publish import publish as run_publish

    with _progress() as progress, _first_ctrl_c_stops() as stop:
        reports = run_publish(obj.config, slugs=slugs, channels=channels, dry_run=dry_run,
                              progress=progress, stop=stop)
    code = _summary(reports)
    if stop.is_set():
        err.print("aborted: the messages in flight were sent; `pipeline publish` again sends the rest")
        code = 130
    sys.exit(code)


@contextlib.contextmanager
def _first_ctrl_c_stops() -> Iterator[threading.Event]:
    """An event the first Ctrl-C (SIGINT) sets: the send stops after the messages in flight,
    what was not handed over goes back to pending. A second Ctrl-C interrupts at once, as
    usual. (A flag, not an exception: a KeyboardInterrupt raised inside a finalizer is lost.)"""
    import signal

    stop = threading.Event()

    def first(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _progress():  # type: ignore[no-untyped-def]
    """A rich progress bar fed by the publisher's progress callback (one task per channel); none
    when stderr is not a terminal."""

    if not err.is_terminal:
        # Into a file or a pipe (cron, systemd, a benchmark) a bar shows nothing, but it would
        # still be redrawn ten times a second beside the send.
        return contextlib.nullcontext(None)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("sent {task.fields[sent]} failed {task.fields[failed]}"),
                   TextColumn("{task.fields[rate]}"),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=err.console, transient=True)
    tasks: dict[str, int] = {}

    def update(report) -> None:  # type: ignore[no-untyped-def]
        if report.channel not in tasks:
            tasks[report.channel] = bar.add_task(report.channel, total=report.total or None, sent=0,
                                                 failed=0, rate="")
        done = report.sent + report.failed + report.deferred + report.unknown
        task = bar.tasks[tasks[report.channel]]
        rate = f"{done / task.elapsed:.0f}/s" if task.elapsed else ""
        bar.update(tasks[report.channel], completed=done, total=report.total or None, sent=report.sent,
                   failed=report.failed + report.unknown, rate=rate)

    @contextlib.contextmanager
    def run():  # type: ignore[no-untyped-def]
        with bar:
            yield update

    return run()


def _summary(reports) -> int:  # type: ignore[no-untyped-def]
    """Print what each channel did; the exit code: 1 if anything failed or a channel stopped."""
    code = 0
    for r in reports:
        editions = ", ".join(r.editions)
        if r.error:
            say("error", r.error)
            code = 1
        if r.jobs is not None:      # `execution: workers`: planned here, sent by `pipeline worker`s
            out.print(f"{r.channel}: {r.total} planned, {r.jobs} job{'s' if r.jobs != 1 else ''} deferred "
                      f"to the workers, {r.already_sent} already sent"
                      + (f", {r.resent} left sending by a lost worker resent" if r.resent else "")
                      + f" ({editions})")
            continue
        if r.total == 0 and not r.error:
            out.print(f"{r.channel}: nothing to send for {editions}"
                      f" ({r.already_sent} already sent)")
            continue
        out.print(f"{r.channel}: {r.sent} sent, {r.failed} failed, {r.unknown} unknown, "
                  f"{r.deferred} deferred, {r.already_sent} already sent"
                  + (f", {r.resent} resent after an interruption" if r.resent else "")
                  + (f", {r.bounced} address{'es' if r.bounced != 1 else ''} now bounced (not mailed again)"
                     if r.bounced else "")
                  + f" ({editions})")
        for message in r.errors[:5]:
            say("note", message, indent="  ")
        if r.failed or r.unknown:
            code = 1
    return code


@cli.command(short_help="Show what was sent where.")
@click.option("--json", "as_json", is_flag=True, help="print JSON (warnings go to stderr)")
@click.option("--dry-run", is_flag=True, help="show the dry-run ledger instead")
@click.pass_obj
def status(obj: _Context, as_json: bool, dry_run: bool) -> None:
    """Per post and channel: counts by status, resends, last errors, remote ids. With
    `execution: workers`, also the delivery queue (jobs waiting, running, failed; the workers
    alive), and `--json` gives {"deliveries": [...], "queue": {...}}.

    \b
    Example:
      pipeline status --json
    """
    import json

    from pipeline.store.engine import engine_for
    from pipeline.store.ledger import Ledger
    from pipeline.store.runs import runs, scheduler_roster

    engine = engine_for(obj.config)
    ledger = Ledger(engine)
    rows = ledger.counts(dry_run=dry_run)
    ledger.close()
    active, standbys = scheduler_roster(engine)
    # Missed runs go to stderr in both forms, so that stdout stays the ledger's rows (or JSON).
    for r in runs(engine):
        if r["status"] == "missed":
            say("warning", f"timetable entry {r['entry']}: the run due {r['fire_time']:%Y-%m-%d %H:%M} UTC "
                           f"was missed ({r['detail']})")
    queue = _queue(obj.config, engine)
    for warning in queue.warnings() if queue is not None else ():
        say("warning", warning)
    if as_json:
        # With `execution: workers`, an object: the ledger's rows and the delivery queue.
        found = {"deliveries": rows, "queue": queue.as_dict() if queue is not None else None} \
            if obj.config.execution == "workers" else rows
        # Colours only for a terminal: into a pipe the text is the same, and colouring a big
        # ledger's JSON took as long as reading it.
        out.print_json(json.dumps(found, default=str), highlight=out.is_terminal)
        return
    if active is not None or standbys:
        who = f"active on {active.host} (pid {active.pid})" if active else "no active scheduler"
        out.print(f"Timetable: {who}" + "".join(f"; standby on {s.host} (pid {s.pid})" for s in standbys))
    for line in queue.lines() if queue is not None else ():
        out.print(line, markup=False, highlight=False)
    if not rows:
        out.print("The ledger is empty: nothing has been sent yet.")
        return
    table = Table("post", "channel", "sent", "pending", "sending", "failed", "unknown", "resent")
    table.columns[0].no_wrap = True
    for r in rows:
        c = r["counts"]
        table.add_row(str(r["edition"]), str(r["channel"]),
                      *(str(c.get(s, 0)) for s in ("sent", "pending", "sending", "failed", "unknown")),
                      str(r["resends"]))
    out.print(table)
    for r in rows:
        for e in r["errors"]:
            say("note", f"{e['key']} ({e['status']}): {e['error']}")
        for m in r["remote"]:
            out.print(f"{m['key']}: {m['url'] or m['id']}")


def _queue(config: Config, engine):  # type: ignore[no-untyped-def]
    """The delivery queue `status` shows: with `execution: workers`, or where jobs or workers are
    (a PostgreSQL state with procrastinate's tables); else None."""
    from pipeline.workers.queue import queue_status

    found = queue_status(engine, stalled_after=config.workers.stalled_after)
    return found if found is not None and (config.execution == "workers" or not found.empty) else None


@cli.command(short_help="Retry pending, failed or unknown sends.")
@click.option("--failed", is_flag=True, help="retry deliveries that failed")
@click.option("--unknown", is_flag=True, help="retry deliveries whose outcome is unknown")
@click.option("--channel", "channels", multiple=True, help="only this channel (repeatable; default: all)")
@click.option("--dry-run", is_flag=True, help="retry the dry-run deliveries (into the outbox)")
@click.pass_obj
def retry(obj: _Context, failed: bool, unknown: bool, channels: tuple[str, ...], dry_run: bool) -> None:
    """Re-attempt what the ledger holds as pending (and, when asked, failed or unknown).

    \b
    Example:
      pipeline retry --failed --channel outbox
    """
    from pipeline.publish import retry as run_retry

    with _progress() as progress:
        reports = run_retry(obj.config, failed=failed, unknown=unknown, channels=channels,
                            dry_run=dry_run, progress=progress)
    if not reports:
        out.print("Nothing to retry.")
        return
    sys.exit(_summary(reports))


@cli.command(short_help="Read the bounce mailbox: bounces, complaints, unsubscribes.")
@click.option("--dry-run", is_flag=True,
              help="show what the unread messages would do; record nothing, mark nothing read")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of tables")
@click.pass_obj
def bounces(obj: _Context, dry_run: bool, as_json: bool) -> None:
    """Read the unread messages of the bounce mailbox (`bounces.imap` or `bounces.maildir`):
    DSNs, ARF complaint reports and mails to `unsubscribe.mailto`. Prints what they were, the
    subscribers whose status changed, and the bounce and complaint rates of the last 30 days.

    \b
    Examples:
      pipeline bounces --dry-run
      pipeline bounces --json
    """
    import json

    from rich.table import Column

    from pipeline.bounces.reader import COMPLAINT_LIMIT, LABELS, rates, read_mailbox
    from pipeline.store.engine import engine_for

    config = obj.config
    report = read_mailbox(config, dry_run=dry_run)
    rate = rates(engine_for(config))
    if as_json:
        out.print_json(json.dumps({
            "mailbox": report.where, "dry_run": dry_run, "messages": report.messages, "left": report.left,
            "classes": report.classes,
            "notes": list(report.notes),
            "changed": [{"email": c.email, "status": c.status, "kind": c.kind, "source": c.source,
                         "edition": c.edition} for c in report.changes],
            "events": [{"email": e.email, "kind": e.kind, "source": e.source, "edition": e.edition,
                        "detail": e.detail} for e in report.events] if dry_run else [],
            "rates": {"days": rate.days, "sent": rate.sent, "bounces": rate.bounces,
                      "complaints": rate.complaints, "bounce_rate": rate.bounce_rate,
                      "complaint_rate": rate.complaint_rate}}))
    else:
        out.print(f"{report.where}: {report.messages} unread message(s)"
                  + (" (dry run: nothing recorded, nothing marked read)" if dry_run else ""))
        if report.messages:
            table = Table("messages", Column("what they were", no_wrap=True))
            for kind, label in LABELS.items():
                if report.classes.get(kind):
                    table.add_row(str(report.classes[kind]), label)
            out.print(table)
        if report.changes:
            table = Table("subscriber", "now", "because", "edition")
            for c in report.changes:
                table.add_row(c.email, c.status, f"{c.kind} ({c.source})", c.edition or "")
            out.print(table)
        if dry_run and report.events:
            table = Table("subscriber", "event", "edition", "detail")
            for e in report.events:
                table.add_row(e.email, f"{e.kind} ({e.source})", e.edition or "", e.detail)
            out.print(table)
        if rate.sent:
            out.print(f"Last {rate.days} days: {rate.sent} sent, {rate.bounces} bounces "
                      f"({rate.bounce_rate:.2%}), {rate.complaints} complaints ({rate.complaint_rate:.2%})")
        else:
            out.print(f"Last {rate.days} days: nothing sent; {rate.bounces} bounces, "
                      f"{rate.complaints} complaints recorded")
    for note in report.notes:
        say("warning", note)
    if report.left:
        say("note", f"{report.left} more unread message(s) are left for the next run")
    if rate.complaints_too_high:
        say("warning", f"the complaint rate of the last {rate.days} days is {rate.complaint_rate:.2%}, "
                       f"at or above the {COMPLAINT_LIMIT:.1%} Gmail and Yahoo allow bulk senders: send less "
                       "often, to readers who asked, and make unsubscribing easy")


@cli.command(short_help="Serve the sign-up, confirm, manage, unsubscribe and archive pages.")
@click.option("--host", default="127.0.0.1", show_default=True, help="the address to listen on")
@click.option("--port", default=8080, show_default=True, type=int, help="the port to listen on")
@click.pass_obj
def serve(obj: _Context, host: str, port: int) -> None:
    """Serve the list's pages: the sign-up form (GET/POST /subscribe), confirmation links
    (/confirm/TOKEN), the manage page (/manage/TOKEN), one-click unsubscribe (/unsubscribe/TOKEN),
    the editions' archive (/archive/SLUG) and the ESP webhooks (/webhooks/PROVIDER); and /healthz,
    /readyz and /metrics (docs/metrics.md).

    \b
    Example:
      pipeline serve --host 127.0.0.1 --port 8080
    """
    from pipeline.web.server import build_server

    server = build_server(obj.config, host=host, port=port)
    # The request log (tokens replaced by uids) is at INFO, in place of uvicorn's access log.
    logging.getLogger("pipeline").setLevel(min(logging.INFO, logging.getLogger().level))
    out.print(f"Serving http://{host}:{port}/: the sign-up form at /subscribe, and the confirm, "
              "manage and unsubscribe links")
    server.run()


@cli.command("subscribe-form", short_help="Print an HTML sign-up form to paste into the site.")
@click.option("--action-url", default=None, metavar="URL",
              help="where the form posts (default: unsubscribe.base_url + /subscribe)")
@click.pass_obj
def subscribe_form(obj: _Context, action_url: str | None) -> None:
    """Print an HTML sign-up form (email, name, the topics of subscribe.topics, a honeypot; inline
    styles, no JavaScript) that posts to `pipeline serve`. Paste it into a page of the site: the
    origins of subscribe.allowed_origins (default: site.url) may post it.

    \b
    Examples:
      pipeline subscribe-form > subscribe-form.html
      pipeline subscribe-form --action-url https://news.example.com/subscribe
    """
    from pipeline.web.subscribe_form import action_warning, form_action
    from pipeline.web.subscribe_form import subscribe_form as snippet

    action = form_action(obj.config, action_url)
    warning = action_warning(action)
    if warning:
        say("warning", warning)
    out.print(snippet(obj.config, action), end="")


def _metrics_options(port_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--metrics-port` (with `port_help`) and `--metrics-host`, as `run` and `worker` take them."""
    def add(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option("--metrics-host", default="127.0.0.1", show_default=True,
                               help="with --metrics-port: the address to listen on")(command)
        return click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
                            help=port_help)(command)
    return add


@cli.command(short_help="Run the timetable (daemon or --once).")
@click.option("--once", is_flag=True,
              help="fire the entries that are due now (or missed within max_lateness), then exit")
@click.option("--dry-run", is_flag=True, help="send everything to the outbox instead of the real channels")
@_metrics_options("serve Prometheus metrics on this port (the daemon only; docs/metrics.md)")
@click.pass_obj
def run(obj: _Context, once: bool, dry_run: bool, metrics_port: int | None, metrics_host: str) -> None:
    """Run the timetable: in the foreground until Ctrl-C / SIGTERM, or `--once`.

    \b
    Examples:
      pipeline run
      pipeline run --once --dry-run
      pipeline run --metrics-port 9464
    """
    from pipeline.timetable.schedule import run_daemon, run_once

    config = obj.config
    if not config.schedule:
        raise PipelineError(f"{config.source}: the timetable is empty; add entries under `schedule:`")
    if once and metrics_port is not None:
        raise PipelineError("--metrics-port works with the daemon; `run --once` exits before a scrape")
    if once:
        fired = run_once(config, dry_run=dry_run)
        if not fired:
            out.print("Nothing is due.")
            return
        code = 0
        for name, reports in fired.items():
            out.print(f"{name}:" + ("" if reports else " nothing to send"))
            code = max(code, _summary(reports)) if reports else code
        sys.exit(code)
    if dry_run:
        raise PipelineError("--dry-run works with --once; the daemon sends for real")
    logging.getLogger("pipeline").setLevel(min(logging.INFO, logging.getLogger().level))
    metrics = None
    if metrics_port is not None:
        from pipeline.metrics.serve import serve_metrics

        metrics = serve_metrics(config, host=metrics_host, port=metrics_port)
    try:
        run_daemon(config, started=lambda: out.print(
            f"Running the timetable ({len(config.schedule)} entries); Ctrl-C stops after the send in "
            "progress. `pipeline schedule` shows what is next."
            + (f" Metrics: {metrics.url}" if metrics else "")))
    finally:
        if metrics is not None:
            metrics.close()


@cli.command(short_help="Send deferred deliveries (execution: workers).")
@click.option("--concurrency", type=click.IntRange(1, 64), default=None,
              help="jobs at once (default: workers.concurrency)")
@click.option("--until-idle", is_flag=True, help="exit once no delivery job is waiting or running")
@_metrics_options("serve Prometheus metrics on this port (docs/metrics.md)")
@click.pass_obj
def worker(obj: _Context, concurrency: int | None, until_idle: bool, metrics_port: int | None,
           metrics_host: str) -> None:
    """Take the delivery jobs `publish`, `retry` and the timetable defer with `execution:
    workers`, and send them; until Ctrl-C / SIGTERM (the messages in flight are finished).

    \b
    Examples:
      pipeline worker --concurrency 2
      pipeline worker --until-idle
    """
    config = obj.config
    if config.execution != "workers":
        raise PipelineError(f"{config.where('execution')}: `pipeline worker` needs `execution: workers` "
                            "(and a PostgreSQL state)")
    from pipeline.workers.runner import run_worker

    logging.getLogger("pipeline").setLevel(min(logging.INFO, logging.getLogger().level))
    metrics = None
    if metrics_port is not None:
        from pipeline.metrics.serve import serve_metrics

        metrics = serve_metrics(config, host=metrics_host, port=metrics_port)
    jobs = concurrency or config.workers.concurrency
    try:
        run_worker(config, concurrency=jobs, until_idle=until_idle, started=lambda: out.print(
            f"Worker running ({jobs} job{'s' if jobs != 1 else ''} at once); Ctrl-C stops after the "
            "messages in flight." + (f" Metrics: {metrics.url}" if metrics else "")))
    finally:
        if metrics is not None:
            metrics.close()


@cli.command(short_help="List the timetable's next fire times.")
@click.option("--next", "count", default=5, show_default=True, type=click.IntRange(1, 1000),
              help="how many fire times per entry")
@click.option("--from", "start", default=None, help="list fire times after this ISO-8601 time (with offset)")
@click.option("--json", "as_json", is_flag=True, help='print [{"name": ..., "fires": [...]}]')
@click.option("--ics", "ics", default=None, type=click.Path(dir_okay=False, writable=True),
              help="also write the plan as an iCalendar file: 30 days back to 90 ahead (or from --from)")
@click.pass_obj
def schedule(obj: _Context, count: int, start: str | None, as_json: bool, ics: str | None) -> None:
    """Each timetable entry's next fire times (its zone and UTC) and what it would send now.

    \b
    Example:
      pipeline schedule --next 3
      pipeline schedule --ics sends.ics
    """
    import json
    from datetime import UTC, datetime

    from pipeline.timetable.schedule import upcoming

    after = None
    if start:
        try:
            after = datetime.fromisoformat(start)
        except ValueError:
            raise PipelineError(f"--from {start!r}: not an ISO-8601 date-time "
                                "(e.g. 2026-11-01T00:00:00-04:00)") from None
        if after.tzinfo is None:
            raise PipelineError(f"--from {start!r}: give an offset, e.g. {start}-05:00 or {start}Z")
    items = upcoming(obj.config, after=after, count=count)
    if ics:
        _write_ics(obj.config, Path(ics), after)
    if as_json:
        out.print_json(json.dumps([{"name": u.entry.name, "fires": [f.isoformat() for f in u.fires]}
                                   for u in items]))
        return
    if not items:
        out.print("The timetable is empty (config key `schedule:`).")
        return
    table = Table("entry", "edition", "channels", "next fires (local, UTC)", "would send now")
    table.columns[3].no_wrap = True
    for u in items:
        fires = "\n".join(f"{f:%a %Y-%m-%d %H:%M %Z} ({f.astimezone(UTC):%H:%M}Z)" for f in u.fires)
        table.add_row(u.entry.name, u.entry.edition, ", ".join(u.entry.channels), fires,
                      "\n".join(u.would_send) or "nothing")
    out.print(table)


def _write_ics(config: Config, path: Path, after: datetime | None) -> None:
    """`schedule --ics`: the calendar feed the preview page serves at /calendar.ics."""
    from datetime import UTC, datetime, timedelta

    from pipeline.timetable.ical import feed_for

    now = datetime.now(UTC)
    start, end = (after, after + timedelta(days=90)) if after else (now - timedelta(days=30),
                                                                     now + timedelta(days=90))
    body = feed_for(config, start=start, end=end, now=now)
    try:
        path.write_bytes(body)
    except OSError as exc:
        raise PipelineError(f"--ics {path}: cannot write it ({exc.strerror})") from None


@cli.command(short_help="Fetch the feeds in `sources:`.")
@click.pass_obj
def fetch(obj: _Context) -> None:
    """Read the feeds in `sources:` (conditional GET) and store their new entries; a table per feed.

    \b
    Example:
      pipeline fetch
    """
    config = obj.config
    if not config.feeds:
        out.print("No feeds in `sources:`; nothing to fetch.")
        return
    from pipeline.intake.feeds import fetch_all

    reports = fetch_all(config)
    table = Table("feed", "status", "new", "held", "baseline", "skipped", "message")
    for r in reports:
        notes = [f"{r.updated} edited"] * bool(r.updated) + [f"{r.filtered} by filters"] * bool(r.filtered)
        table.add_row(r.name, {"not-modified": "304"}.get(r.status, r.status), str(r.new), str(r.held),
                      str(r.baseline), str(r.filtered + r.skipped),
                      r.error or "; ".join(notes + [f"{len(r.warnings)} warning(s)"] * bool(r.warnings)))
    out.print(table)
    for r in reports:
        if r.error:
            say("error", f"feed {r.name} ({r.url}): {r.error}")
        for warning in r.warnings:
            say("warning", f"feed {r.name}: {warning}")
    if any(r.failed for r in reports):
        sys.exit(1)


@cli.command("build-feed", short_help="Write the Atom feed of the posts.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None,
              help="output file (default: feed.out in config, out/feed.xml)")
@click.pass_obj
def build_feed(obj: _Context, out_file: str | None) -> None:
    """Write the Atom feed of the posts (newest first, canonical links) for the site to serve.

    \b
    Example:
      pipeline build-feed --out public/feed.xml
    """
    _build_feed(obj.config, Path(out_file) if out_file else None)


def _build_feed(config: Config, target: Path | None = None, *, posts: Sequence[Post] | None = None) -> None:
    from pipeline.feed_out import write_feed

    path, count = write_feed(config, target, posts=posts)
    out.print(f"Wrote the Atom feed ({count} entries) to {path}")


@cli.group(short_help="The state database: schema revisions, copying it elsewhere.")
def db() -> None:
    """The state database's schema revisions (upgrade, status) and moving the whole state to
    another database (copy), e.g. from SQLite to PostgreSQL. See docs/database.md.

    \b
    Example:
      pipeline db status
    """


@db.command("status", short_help="Show the database, its revision and the pending ones.")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_obj
def db_status(obj: _Context, as_json: bool) -> None:
    """Show the state database (password hidden), its schema revision, this version's head and
    the revisions `pipeline db upgrade` would apply. Changes nothing.

    \b
    Example:
      pipeline db status --json
    """
    import json

    from pipeline.store.engine import state_url
    from pipeline.store.migrate import database_status

    found = database_status(state_url(obj.config))
    if as_json:
        out.print_json(json.dumps(found.as_dict()), highlight=out.is_terminal)
        return
    state = found.revision
    out.print(f"database: {found.database}")
    if not found.exists:
        out.print(f"revision: none yet (the first command creates it at {state.head})")
        return
    out.print(f"revision: {state.current or 'none (made before revisions were recorded)'}")
    out.print(f"head:     {state.head}")
    if state.too_new:
        out.print("newer than this version: upgrade the pipeline to the version that wrote it")
    elif state.pending:
        out.print(f"pending:  {', '.join(state.pending)} (run `pipeline db upgrade`)")
    else:
        out.print("up to date")


@db.command("upgrade", short_help="Bring the database to this version's schema revision.")
@click.pass_obj
def db_upgrade(obj: _Context) -> None:
    """Apply the pending schema revisions to the state database, in one transaction; a database
    made before revisions were recorded gains what it lacks and keeps every row. Running it
    again does nothing.

    \b
    Example:
      pipeline db upgrade && pipeline status
    """
    from pipeline.store.engine import state_url
    from pipeline.store.migrate import upgrade

    done = upgrade(state_url(obj.config))
    if done.created:
        out.print(f"Created the state database {done.database} at revision {done.after}.")
    elif done.applied:
        out.print(f"Upgraded {done.database} from revision {done.before or 'none'} to {done.after} "
                  f"(applied {', '.join(done.applied)}).")
    else:
        out.print(f"{done.database} is at revision {done.after} already: nothing to do.")


@db.command("copy", short_help="Copy the whole state into an empty database (e.g. PostgreSQL).")
@click.option("--to", "target", required=True, metavar="URL",
              help="SQLAlchemy URL of the empty target, e.g. postgresql+psycopg://user@host/db "
                   "(password from PGPASSWORD or ~/.pgpass rather than the URL)")
@click.option("--batch", type=click.IntRange(min=1), default=1000, show_default=True,
              help="rows read and written at a time")
@click.pass_obj
def db_copy(obj: _Context, target: str, batch: int) -> None:
    """Copy every table of the state database (subscribers, ledger, runs, feeds, events,
    secrets) into an empty database, made or upgraded to head first; counts are checked per
    table and nothing is committed unless they all agree. Stop `run`, `serve` and workers first.

    \b
    Example:
      pipeline db copy --to postgresql+psycopg://pipeline@db.example.com/pipeline
    """
    from pipeline.store.engine import engine_for
    from pipeline.store.state_copy import copy_state

    done = copy_state(engine_for(obj.config), target, batch=batch)
    table = Table("table", "rows")
    table.columns[1].justify = "right"
    for count in done.tables:
        table.add_row(count.table, f"{count.rows:,}")
    out.print(table)
    out.print(f"Copied {sum(c.rows for c in done.tables):,} rows from {done.source} to {done.target}; "
              "counts checked. Point `state:` in config.yaml at the target to use it.")


def main() -> None:
    """Entry point: run the CLI; a user's mistake is one line on stderr and exit code 1."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except PipelineError as exc:
        for line in str(exc).splitlines():
            say("error", line)
        sys.exit(1)
