"""The bounce mailbox end to end, with real parts: Debian's Dovecot serving the mailbox over IMAP
(plain, IMAPS and STARTTLS, with a certificate the test makes), a local Maildir, a real SQLite
state, `pipeline bounces` run as a user runs it, and the timetable reading the mailbox first."""

from __future__ import annotations

import json
import logging
import mailbox
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from pipeline.bounces import verp
from pipeline.bounces.mailbox import MAX_BYTES, MailboxError, open_mailbox
from pipeline.bounces.reader import MessageClass, read_mailbox
from pipeline.config import Config, load_config
from pipeline.store.engine import engine_for
from pipeline.store.events import history
from tests.conftest import SEED_SLUG, ledger_rows, send_through
from tests.imap_server import PASSWORD, USER, Dovecot
from tests.test_bounce_parsing import (
    BOUNCES,
    SAMPLES,
    bounce_config,
    make_arf,
    make_dsn,
    make_unsubscribe_mail,
    status,
    subscribe,
    unsubscribe_token,
)

ENV = "BOUNCE_IMAP_PASSWORD"


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    server = Dovecot().start()
    yield server
    server.stop()


def imap_config(project: Path, server: Dovecot, monkeypatch: pytest.MonkeyPatch, *, security: str = "none",
                password: str = PASSWORD, **more: object) -> Config:
    """The project configured to read `server`'s mailbox; the password from the environment."""
    monkeypatch.setenv(ENV, password)
    port = server.tls_port if security == "tls" else server.port
    imap: dict[str, object] = {"host": "127.0.0.1", "port": port, "security": security,
                               "username": USER, "password": "${" + ENV + "}", "timeout": 10}
    if security != "none":
        imap["ca_file"] = str(server.ca_file)
    imap.update(more.pop("imap", {}))  # type: ignore[call-overload]
    return bounce_config(project, imap=imap, **more)


def dsn_for(subscriber, status: str, n: int, edition: str = SEED_SLUG, **kw: object) -> bytes:  # type: ignore[no-untyped-def]
    """A DSN for `subscriber`'s copy of `edition`, come back to its VERP address."""
    return make_dsn(to=verp.envelope(BOUNCES, subscriber.uid, edition), recipient=subscriber.email,
                    status=status, message_id=f"<dsn.{n}.{subscriber.uid[:6]}@mx.example.net>",
                    diagnostic=f"smtp; {'550' if status[0] == '5' else '450'} {status} see {n}", **kw)


# -- the whole life cycle over IMAP -------------------------------------------------------------

def test_imap_mailbox_moves_each_subscriber_as_its_messages_say(project, dovecot, monkeypatch):
    config = imap_config(project, dovecot, monkeypatch)
    hard, soft3, soft2, policy, complainer, leaver, forged = subscribe(
        config, "hard@example.org", "soft3@example.org", "soft2@example.org", "policy@example.org",
        "complainer@example.org", "leaver@example.org", "forged@example.org")
    send_through(config, name="outbox")               # the seed edition, in the ledger for each of them
    forged_token = forged.uid + "." + "0" * 40
    dovecot.deliver(
        dsn_for(hard, "5.1.1", 1),
        *(dsn_for(soft3, "4.4.7", n) for n in (1, 2, 3)),
        *(dsn_for(soft2, "4.2.2", n) for n in (1, 2)),
        dsn_for(policy, "5.7.1", 1),
        make_arf(original_mail_from=verp.envelope(BOUNCES, complainer.uid, SEED_SLUG), rcpt_to=None,
                 to="redacted@example.org"),
        make_unsubscribe_mail(subject=f"unsubscribe {unsubscribe_token(config, leaver)}",
                              sender="someone@forwarder.example"),
        make_unsubscribe_mail(subject=f"unsubscribe {forged_token}", message_id="<forged@x.example>",
                              sender=f"Forged <{forged.email}>"),
        (SAMPLES / "is-not-bounce-01.eml").read_bytes(),
        (SAMPLES / "rfc3464-07.eml").read_bytes(),
    )

    report = read_mailbox(config)

    assert report.messages == 12 and report.left == 0
    assert report.classes == {"hard": 1, "soft": 5, "policy": 1, "complaint": 1, "unsubscribe": 1,
                              "rejected": 1, "not-understood": 1, "ignored": 1}
    assert {a: status(config, a) for a in ("hard@example.org", "soft3@example.org", "soft2@example.org",
                                           "policy@example.org", "complainer@example.org",
                                           "leaver@example.org", "forged@example.org")} == {
        "hard@example.org": "bounced", "soft3@example.org": "bounced", "soft2@example.org": "active",
        "policy@example.org": "active", "complainer@example.org": "complained",
        "leaver@example.org": "unsubscribed", "forged@example.org": "active"}
    assert sorted((c.email, c.status, c.kind, c.source, c.edition) for c in report.changes) == [
        ("complainer@example.org", "complained", "complaint", "arf", SEED_SLUG),
        ("hard@example.org", "bounced", "hard", "dsn", SEED_SLUG),
        ("leaver@example.org", "unsubscribed", "unsubscribe", "mailto", None),
        ("soft3@example.org", "bounced", "soft", "dsn", SEED_SLUG)]
    assert [e["kind"] for e in history(engine_for(config), "soft3@example.org")] == ["soft"] * 3
    assert all("\\Seen" in flags for flags in dovecot.flags())     # every message, even unread ones

    # Reading again: every message was marked read, so nothing is read and nothing changes.
    again = read_mailbox(config)
    assert (again.messages, again.changes) == (0, ())
    # The same DSN delivered twice (a resend, a second copy) counts once.
    dovecot.deliver(dsn_for(soft2, "4.2.2", 2))
    dup = read_mailbox(config)
    assert (dup.messages, dup.classes, dup.changes) == (1, {"duplicate": 1}, ())
    assert status(config, "soft2@example.org") == "active"
    assert [e["kind"] for e in history(engine_for(config), "soft2@example.org")] == ["soft"] * 2


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_imap_over_tls_with_the_servers_ca(project, dovecot, monkeypatch, security):
    config = imap_config(project, dovecot, monkeypatch, security=security)
    [ada] = subscribe(config, "ada@example.org")
    dovecot.deliver(dsn_for(ada, "5.1.1", 1))
    report = read_mailbox(config)
    assert report.classes == {"hard": 1} and status(config, "ada@example.org") == "bounced"
    assert "Login: user=<bounces>, method=PLAIN" in dovecot.log() and ", TLS," in dovecot.log()


def test_an_untrusted_certificate_is_one_line(project, dovecot, monkeypatch):
    config = imap_config(project, dovecot, monkeypatch, security="tls", imap={"ca_file": None})
    with pytest.raises(MailboxError) as caught:
        read_mailbox(config)
    message = str(caught.value)
    assert "\n" not in message
    assert f"bounces.imap: 127.0.0.1:{dovecot.tls_port}: cannot connect (tls): TLS certificate not " \
        "trusted (" in message
    assert message.endswith("; set bounces.imap.ca_file to its CA, or tls_verify: false for a test server")


def test_tls_on_the_plain_port_says_which_port_is_usual(project, dovecot, monkeypatch):
    config = imap_config(project, dovecot, monkeypatch, security="tls", imap={"port": dovecot.port})
    with pytest.raises(MailboxError, match=r"cannot connect \(tls\) \(is the port an IMAPS port\? 993 is "
                                           r"the usual one\): "):
        read_mailbox(config)


def test_delete_true_expunges_what_was_read(project, dovecot, monkeypatch):
    config = imap_config(project, dovecot, monkeypatch, delete=True)
    [ada] = subscribe(config, "ada@example.org")
    dovecot.deliver(dsn_for(ada, "5.1.1", 1), (SAMPLES / "is-not-bounce-01.eml").read_bytes())
    assert read_mailbox(config).messages == 2
    assert dovecot.flags() == []
    assert status(config, "ada@example.org") == "bounced"


def test_a_folder_other_than_the_inbox(project, dovecot, monkeypatch):
    config = imap_config(project, dovecot, monkeypatch, imap={"folder": "Bounces 2026"})
    [ada] = subscribe(config, "ada@example.org")
    dovecot.deliver(dsn_for(ada, "5.1.1", 1), folder="Bounces 2026")
    dovecot.deliver((SAMPLES / "is-not-bounce-01.eml").read_bytes())        # INBOX: not read
    assert read_mailbox(config).classes == {"hard": 1}
    assert dovecot.flags() == [{"\\Recent"}]
    missing = imap_config(project, dovecot, monkeypatch, imap={"folder": "Nope"})
    with pytest.raises(MailboxError, match=r"cannot open folder 'Nope' \(bounces.imap.folder\)"):
        read_mailbox(missing)


def test_a_big_message_is_read_up_to_the_cap(project, dovecot, monkeypatch):
    config = imap_config(project, dovecot, monkeypatch)
    [ada] = subscribe(config, "ada@example.org")
    # The report comes first; the returned message (here 1.5 MB of it) after.
    raw = dsn_for(ada, "5.1.1", 1).replace(b"--\r\n", b"\r\n" + b"x" * 76 * 20_000 + b"\r\n--\r\n", 1)
    dovecot.deliver(raw)
    with open_mailbox(config) as box:
        [ref] = box.unread()
        incoming = box.read(ref)
    assert incoming is not None and incoming.truncated and len(incoming.raw) == MAX_BYTES
    assert read_mailbox(config).classes == {"hard": 1}


def test_at_most_limit_messages_per_run(project, dovecot, monkeypatch):
    config = imap_config(project, dovecot, monkeypatch)
    [ada] = subscribe(config, "ada@example.org")
    dovecot.deliver(*(dsn_for(ada, "4.2.2", n) for n in range(3)))
    first = read_mailbox(config, limit=2)
    assert (first.messages, first.left) == (2, 1)
    assert (read_mailbox(config, limit=2).messages, status(config, "ada@example.org")) == (1, "bounced")


def test_a_wrong_password_is_one_line_without_the_password(project, dovecot, monkeypatch):
    config = imap_config(project, dovecot, monkeypatch, password="hunter2-wrong")
    with pytest.raises(MailboxError) as caught:
        read_mailbox(config)
    message = str(caught.value)
    assert "\n" not in message and "hunter2" not in message
    assert message.startswith(f"{config.where('bounces', 'imap')}: 127.0.0.1:{dovecot.port}: login as "
                              "'bounces' refused (check bounces.imap.username and the password's "
                              "environment variable): [AUTHENTICATIONFAILED]")


# -- `pipeline bounces` -------------------------------------------------------------------------

def test_cli_reports_classes_changes_and_rates(project, dovecot, monkeypatch, run_cli):
    config = imap_config(project, dovecot, monkeypatch)
    ada, bob, _ = subscribe(config, "ada@example.org", "bob@example.org", "cy@example.org")
    send_through(config, name="outbox")              # 3 emails sent in the last 30 days
    dovecot.deliver(dsn_for(ada, "5.1.1", 1),
                    make_arf(original_mail_from=verp.envelope(BOUNCES, bob.uid, SEED_SLUG), rcpt_to=None,
                             to="x@example.org"),
                    (SAMPLES / "is-not-bounce-01.eml").read_bytes())
    env = {ENV: PASSWORD}

    dry = run_cli("--config", project / "config.yaml", "bounces", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "3 unread message(s) (dry run: nothing recorded, nothing marked read)" in dry.stdout
    assert "hard (dsn)" in dry.stdout and "complaint (arf)" in dry.stdout
    assert status(config, "ada@example.org") == "active" and all("\\Seen" not in f for f in dovecot.flags())

    done = run_cli("--config", project / "config.yaml", "bounces", env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"imap://127.0.0.1:{dovecot.port}/INBOX: 3 unread message(s)"
    cells = [[cell.strip() for cell in line.strip("│").split("│")] for line in lines if line.startswith("│")]
    assert {("1", "bounces: hard (address does not exist)"), ("1", "complaints (marked as spam)"),
            ("1", "not understood")} <= {tuple(row) for row in cells if len(row) == 2}
    assert any("ada@example.org" in line and "bounced" in line and SEED_SLUG in line for line in lines)
    assert any("bob@example.org" in line and "complained" in line for line in lines)
    assert "Last 30 days: 3 sent, 1 bounces (33.33%), 1 complaints (33.33%)" in done.stdout
    # One warning for the complaint rate, one line per message the reader could not use.
    warnings = [line for line in done.stderr.splitlines() if "warning:" in line]
    assert any("the complaint rate of the last 30 days is 33.33%, at or above the 0.3%" in w
               for w in warnings)
    assert any(w.endswith(": not understood (no delivery report, feedback report or unsubscribe request "
                          "found); marked read") for w in warnings)
    assert "Traceback" not in done.stderr

    as_json = run_cli("--config", project / "config.yaml", "bounces", "--json", env=env)
    data = json.loads(as_json.stdout)
    assert (data["messages"], data["changed"], data["rates"]["sent"], data["rates"]["complaints"]) == \
        (0, [], 3, 1)


def test_cli_wrong_password_exits_1_on_one_line(project, dovecot, monkeypatch, run_cli):
    config = imap_config(project, dovecot, monkeypatch)
    result = run_cli("--config", project / "config.yaml", "bounces", env={ENV: "s3cret-but-wrong"})
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {config.where('bounces', 'imap')}: 127.0.0.1:{dovecot.port}: "
                           "login as 'bounces' refused")
    assert "s3cret" not in result.stderr


def test_cli_unreachable_server_exits_1_on_one_line(project, monkeypatch, run_cli):
    from tests.imap_server import free_port

    port = free_port()                               # nobody listens there
    path = project / "config.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["bounces"] = {"imap": {"host": "127.0.0.1", "port": port, "security": "none", "username": "u",
                                "password": "${" + ENV + "}", "timeout": 5}}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    monkeypatch.setenv(ENV, "pw")
    result = run_cli("--config", path, "bounces", env={ENV: "pw"})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"error: {load_config(path).where('bounces', 'imap')}: "
                                          f"127.0.0.1:{port}: cannot connect (none): connection refused"]


def test_cli_without_a_mailbox_says_how_to_configure_one(project, run_cli):
    result = run_cli("--config", project / "config.yaml", "bounces")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {project / 'config.yaml'}: no bounce mailbox configured")
    assert "bounces: {imap:" in line and "bounces: {maildir: PATH}" in line
    suggested = line.split("`")[1]            # what to paste is valid YAML, braces balanced
    imap = yaml.safe_load(suggested.replace("...", "x"))["bounces"]["imap"]
    assert imap["password"] == "${BOUNCE_PASSWORD}"


# -- a Maildir ----------------------------------------------------------------------------------

def maildir_config(project: Path, **more: object) -> tuple[Config, mailbox.Maildir]:
    config = bounce_config(project, maildir="mail/bounces", **more)
    (project / "mail").mkdir(exist_ok=True)
    return config, mailbox.Maildir(project / "mail" / "bounces", create=True)


def test_maildir_messages_move_to_cur_with_the_seen_flag(project):
    config, box = maildir_config(project)
    [ada, bob] = subscribe(config, "ada@example.org", "bob@example.org")
    box.add(dsn_for(ada, "5.1.1", 1))
    box.add(make_unsubscribe_mail(subject=f"unsubscribe {unsubscribe_token(config, bob)}"))
    already = mailbox.MaildirMessage(dsn_for(bob, "5.1.1", 2))
    already.set_subdir("cur")
    already.add_flag("S")                            # read before (by a person): left alone
    box.add(already)

    report = read_mailbox(config)

    assert report.classes == {"hard": 1, "unsubscribe": 1}
    assert (status(config, "ada@example.org"), status(config, "bob@example.org")) == \
        ("bounced", "unsubscribed")
    assert list((project / "mail" / "bounces" / "new").iterdir()) == []
    assert sorted(p.name.rpartition(":")[2] for p in (project / "mail" / "bounces" / "cur").iterdir()) == \
        ["2,S"] * 3
    assert read_mailbox(config).messages == 0


def test_maildir_dry_run_changes_nothing(project):
    config, box = maildir_config(project)
    [ada] = subscribe(config, "ada@example.org")
    box.add(dsn_for(ada, "5.1.1", 1))
    report = read_mailbox(config, dry_run=True)
    assert report.classes == {"hard": 1} and report.changes == ()
    assert [(e.email, e.kind) for e in report.events] == [("ada@example.org", "hard")]
    assert status(config, "ada@example.org") == "active"
    assert len(list((project / "mail" / "bounces" / "new").iterdir())) == 1
    assert history(engine_for(config), "ada@example.org") == []


def test_maildir_delete_removes_what_was_read(project):
    config, box = maildir_config(project, delete=True)
    [ada] = subscribe(config, "ada@example.org")
    box.add(dsn_for(ada, "5.1.1", 1))
    box.add(b"garbage\x00\xff")
    assert read_mailbox(config).classes == {"hard": 1, "not-understood": 1}
    assert len(box) == 0


def test_a_missing_maildir_is_one_line(project):
    config = bounce_config(project, maildir="no/such/folder")
    with pytest.raises(MailboxError) as caught:
        read_mailbox(config)
    assert str(caught.value) == (f"{config.where('bounces', 'maildir')}: "
                                 f"{project / 'no/such/folder'} is not a Maildir (it needs the folders cur/, "
                                 "new/ and tmp/); give the path of the mailbox your mail server delivers "
                                 "bounces to")


# -- the timetable ------------------------------------------------------------------------------

MONDAY = datetime(2026, 6, 8, 9, 5, tzinfo=ZoneInfo("America/New_York"))


def with_schedule(project: Path) -> Config:
    path = project / "config.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["schedule"] = [{"name": "weekly", "channels": ["outbox"], "cron": "0 9 * * mon",
                         "edition": "latest"}]
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load_config(path)


def test_each_timetable_run_reads_the_bounce_mailbox_before_sending(project):
    from pipeline.timetable.schedule import run_once

    config, box = maildir_config(project)
    [ada, _] = subscribe(config, "ada@example.org", "bob@example.org")
    box.add(dsn_for(ada, "5.1.1", 1, edition="an-earlier-edition"))
    config = with_schedule(project)

    done = run_once(config, now=MONDAY)

    assert [r.sent for r in done["weekly"]] == [5]   # bob's email, the article and 3 social posts
    assert status(config, "ada@example.org") == "bounced"
    assert sorted(r.recipient for r in ledger_rows(config, "outbox") if r.recipient) == ["bob@example.org"]
    assert list((project / "mail" / "bounces" / "new").iterdir()) == []


def test_a_mailbox_that_cannot_be_read_is_one_log_line_and_the_run_goes_on(project, monkeypatch, caplog):
    from pipeline.timetable.schedule import run_once
    from tests.imap_server import free_port

    monkeypatch.setenv(ENV, "pw")
    bounce_config(project, imap={"host": "127.0.0.1", "port": free_port(), "security": "none",
                                 "username": "u", "password": "${" + ENV + "}", "timeout": 5})
    config = with_schedule(project)
    subscribe(config, "ada@example.org")
    caplog.set_level(logging.INFO)

    done = run_once(config, now=MONDAY)

    assert [r.sent for r in done["weekly"]] == [5]
    [record] = [r for r in caplog.records if "bounce mailbox" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(f"bounce mailbox not read: {config.where('bounces', 'imap')}: ")
    assert record.getMessage().endswith("cannot connect (none): connection refused")


def test_a_dry_run_of_the_timetable_leaves_the_mailbox_alone(project):
    from pipeline.timetable.schedule import run_once

    config, box = maildir_config(project)
    [ada] = subscribe(config, "ada@example.org")
    box.add(dsn_for(ada, "5.1.1", 1))
    config = with_schedule(project)
    run_once(config, now=MONDAY, dry_run=True)
    assert status(config, "ada@example.org") == "active"
    assert len(list((project / "mail" / "bounces" / "new").iterdir())) == 1


def test_the_duplicate_class_is_reported(project):
    config, box = maildir_config(project)
    [ada] = subscribe(config, "ada@example.org")
    box.add(dsn_for(ada, "4.2.2", 1))
    box.add(dsn_for(ada, "4.2.2", 1))
    assert read_mailbox(config).classes == {MessageClass.SOFT: 1, MessageClass.DUPLICATE: 1}
