"""`pipeline send-test`: the edition, marked [TEST], through the configured email channel to a
real SMTP server, and never into the ledger."""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.store.engine import engine_for
from pipeline.web.send_test import MAX_RECIPIENTS, email_channel, parse_addresses, send_test
from tests.conftest import SEED_SLUG, add_channel, ledger_rows


@pytest.fixture
def smtp_project(project, sink):  # type: ignore[no-untyped-def]
    add_channel(project, "newsletter", "smtp", {"host": "127.0.0.1", "port": sink.port,
                                                "security": "none", "timeout": 5})
    text = (project / "config.yaml").read_text(encoding="utf-8")
    (project / "config.yaml").write_text(
        text.replace("channels:\n", "preview:\n  test_channel: newsletter\n"
                                    "  test_recipients: [team@example.com]\n\nchannels:\n", 1),
        encoding="utf-8")
    return project


def test_cli_send_test_reaches_smtp_marked_test_and_leaves_ledger_alone(smtp_project, sink, run_cli):
    result = run_cli("--config", smtp_project / "config.yaml", "send-test", SEED_SLUG,
                     "--to", "Ada@Example.com", "--to", "bob@example.com, ada@example.com")
    assert result.returncode == 0, result.stderr
    assert "sent test to Ada@example.com" in result.stdout
    assert sorted(r for m in sink.received for r in m.rcpt_tos) == ["Ada@example.com", "bob@example.com"]
    message = sink.received[0].message
    assert message["Subject"] == "[TEST] Ketamine’s Potential Ability to Heal Neurological Damage"
    assert message["X-Pipeline-Test"] == "yes"
    assert "utm_source=newsletter" in message.get_body(("html",)).get_content()
    from pipeline.config import load_config
    assert ledger_rows(load_config(smtp_project / "config.yaml"), dry_run=None) == []


def test_test_message_id_differs_from_the_real_sends(smtp_project, sink, run_cli):
    """A provider that drops a repeated Message-ID must not take the real send for the test."""
    from pipeline.config import load_config
    from pipeline.store.subscribers import upsert

    config = load_config(smtp_project / "config.yaml")
    upsert(engine_for(config), "ada@example.com", "Ada")
    send_test(config, SEED_SLUG, ["ada@example.com"])
    assert run_cli("--config", smtp_project / "config.yaml", "publish", SEED_SLUG,
                   "--channel", "newsletter").returncode == 0
    test, real = (m.message for m in sink.received)
    assert test["Subject"].startswith("[TEST] ") and not real["Subject"].startswith("[TEST]")
    assert test["Message-ID"] != real["Message-ID"]
    assert [r.status for r in ledger_rows(config, dry_run=None)] == ["sent"]


def test_default_recipients_and_channel_come_from_preview_config(smtp_project, sink, run_cli):
    result = run_cli("--config", smtp_project / "config.yaml", "send-test", SEED_SLUG)
    assert result.returncode == 0, result.stderr
    assert sink.recipients() == {"team@example.com": 1}


def test_outbox_is_the_default_email_channel(project, config):
    assert email_channel(config) == "outbox"
    results = send_test(config, SEED_SLUG, ["qa@example.com"])
    assert [r.ok for r in results] == [True]
    [message] = mailbox.Maildir(project / "out" / "outbox" / "mail", create=False)
    assert message["Subject"].startswith("[TEST] ")
    assert ledger_rows(config, dry_run=None) == []


def test_unreachable_server_is_reported_per_address(project, run_cli):
    from tests.smtp_sink import free_port

    add_channel(project, "newsletter", "smtp", {"host": "127.0.0.1", "port": free_port(),
                                                "security": "none", "timeout": 2, "retries": 0})
    result = run_cli("--config", project / "config.yaml", "send-test", SEED_SLUG, "--to",
                     "a@example.com", "--channel", "newsletter")
    assert result.returncode == 1
    assert "error: a@example.com:" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--to", "not-an-address"], "error: not an email address: 'not-an-address'"),
    ([], "error: no address to send the test to"),
    (["--to", "a@example.com", "--channel", "nope"], "no channel named 'nope'"),
])
def test_bad_input_is_one_line(project, run_cli, args, message):
    path = project / "config.yaml"
    text = path.read_text(encoding="utf-8")        # the shipped config names a test recipient
    path.write_text(re.sub(r"(?m)^  test_recipients: .*\n", "", text), encoding="utf-8")
    result = run_cli("--config", project / "config.yaml", "send-test", SEED_SLUG, *args)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_unknown_or_broken_post_names_the_reason(project, config, write_post):
    with pytest.raises(PipelineError, match="no post with slug 'nope'"):
        send_test(config, "nope", ["a@example.com"])
    write_post("broken.md", "---\ntitle: [unclosed\n---\nbody\n")
    with pytest.raises(PipelineError, match=r"posts/broken\.md"):
        send_test(config, "broken", ["a@example.com"])


def test_a_channel_that_sends_no_email_is_refused(project):
    config = add_channel(project, "hook", "webhook", {"url": "https://hooks.example.com/x"})
    with pytest.raises(PipelineError, match="sends no email"):
        email_channel(config, "hook")


def test_addresses_are_validated_normalized_and_capped():
    assert parse_addresses(["a@EXAMPLE.com; b@example.com", " A@example.com "]) == \
        ["a@example.com", "b@example.com"]
    with pytest.raises(PipelineError, match=f"at most {MAX_RECIPIENTS}"):
        parse_addresses([f"u{i}@example.com" for i in range(MAX_RECIPIENTS + 1)])


def test_message_parses_as_multipart_alternative(project, config):
    send_test(config, SEED_SLUG, ["qa@example.com"])
    [key] = mailbox.Maildir(project / "out" / "outbox" / "mail", create=False).keys()
    raw = mailbox.Maildir(project / "out" / "outbox" / "mail", create=False).get_bytes(key)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message.get_content_type() == "multipart/alternative"
    assert "Hi Alex" in message.get_body(("plain",)).get_content()


def test_cli_send_test_of_the_next_digest(project, run_cli, write_post):
    write_post("2099-01-01-later.md", "---\ntitle: Later\ndate: 2099-01-01\n---\nNot yet.\n")
    empty = run_cli("--config", project / "config.yaml", "send-test", "--digest", "weekly-newsletter",
                    "--to", "qa@example.com")
    assert empty.returncode == 1 and "has no articles yet" in empty.stderr
    # Dated a minute ago: after the previous Monday's fire, so in the next digest whatever the day.
    moment = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    write_post("fresh.md", f"---\ntitle: Fresh this week\ndate: {moment}\n---\nNew.\n")
    result = run_cli("--config", project / "config.yaml", "send-test", "--digest", "weekly-newsletter",
                     "--to", "qa@example.com")
    assert result.returncode == 0, result.stderr
    [message] = mailbox.Maildir(project / "out" / "outbox" / "mail", create=False)
    assert message["Subject"].startswith("[TEST] RTR Wellness Center: new articles")
    assert "Fresh this week" in message.get_payload(0).get_payload(decode=True).decode()
    from pipeline.config import load_config
    assert ledger_rows(load_config(project / "config.yaml"), dry_run=None) == []
    for args, error in ((["--digest", "nope"], "no digest entry named 'nope'"),
                        ([], "give a post's SLUG or --digest ENTRY")):
        bad = run_cli("--config", project / "config.yaml", "send-test", *args, "--to", "qa@example.com")
        assert bad.returncode != 0 and error in bad.stderr and "Traceback" not in bad.stderr


# -- a real channel when there is one; near matches for a mistyped slug (#14) -------------------

def test_a_real_email_channel_is_preferred_to_the_outbox_and_named(project, sink, run_cli):
    # The shipped config lists the outbox first; the smtp channel comes after it.
    add_channel(project, "newsletter", "smtp", {"host": "127.0.0.1", "port": sink.port,
                                                "security": "none", "timeout": 5})
    result = run_cli("--config", project / "config.yaml", "send-test", SEED_SLUG, "--to", "qa@example.com")
    assert result.returncode == 0, result.stderr
    assert sink.recipients() == {"qa@example.com": 1}
    assert not (project / "out" / "outbox" / "mail").exists()
    assert f"Sent through channel newsletter (smtp, 127.0.0.1:{sink.port})" in result.stdout


def test_the_outbox_says_nothing_leaves_the_machine(project, sink, run_cli):
    add_channel(project, "newsletter", "smtp", {"host": "127.0.0.1", "port": sink.port,
                                                "security": "none", "timeout": 5})
    result = run_cli("--config", project / "config.yaml", "send-test", SEED_SLUG, "--to", "qa@example.com",
                     "--channel", "outbox")
    assert result.returncode == 0, result.stderr
    assert "Sent through outbox (out/outbox: nothing leaves this machine)" in result.stdout
    assert sink.received == []
    assert len(mailbox.Maildir(project / "out" / "outbox" / "mail", create=False)) == 1


def test_email_channel_order(project, config):
    assert email_channel(config) == "outbox"                    # the only one
    config = add_channel(project, "hook", "webhook", {"url": "https://hooks.example.com/x"})
    assert email_channel(config) == "outbox"                    # a webhook sends no email
    config = add_channel(project, "first", "smtp", {"host": "127.0.0.1"})
    config = add_channel(project, "second", "smtp", {"host": "127.0.0.1"})
    assert email_channel(config) == "first"                     # the first real one
    assert email_channel(config, "second") == "second" and email_channel(config, "outbox") == "outbox"
    path = project / "config.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace(
        "preview:\n", "preview:\n  test_channel: second\n", 1), encoding="utf-8")
    assert email_channel(load_config(path)) == "second"


def test_a_test_channel_that_does_not_exist_names_its_line(project):
    path = project / "config.yaml"
    text = path.read_text(encoding="utf-8").replace("preview:\n", "preview:\n  test_channel: newsleter\n", 1)
    path.write_text(text, encoding="utf-8")
    line = text.splitlines().index("  test_channel: newsleter") + 1
    with pytest.raises(PipelineError, match=rf"config\.yaml:{line}: preview\.test_channel: no channel "
                                            r"named 'newsleter' \(configured: outbox\)"):
        email_channel(load_config(path))


@pytest.mark.parametrize("typed, suggested", [
    ("ketamin", "2020-09-01-ketamine-neurological-damage"),                     # a fragment
    ("2020-09-01-ketamine-neurologcal-damage", "2020-09-01-ketamine-neurological-damage"),  # a typo
    ("ketamine-neurological-damag", "2020-09-01-ketamine-neurological-damage"),  # without the date
    ("infusoin", "2024-03-12-your-first-infusion"),                             # one word, mistyped
    ("2024-05-20-mood-journal-spreadsheet", "mood-journal"),                    # the file name
])
def test_an_unknown_slug_lists_the_near_matches(project, run_cli, typed, suggested):
    result = run_cli("--config", project / "config.yaml", "send-test", typed, "--to", "qa@example.com")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith(f"error: no post with slug {typed!r} in posts/; did you mean: ")
    assert suggested in line.split("did you mean: ", 1)[1].rstrip("?").split(", ")


def test_an_unknown_slug_without_near_match_says_how_to_see_the_slugs(config):
    with pytest.raises(PipelineError) as caught:
        send_test(config, "zzzz", ["qa@example.com"])
    assert str(caught.value) == ("no post with slug 'zzzz' in posts/; `pipeline preview` lists the slugs "
                                 "(a post's `slug:`, else its file name: `ls posts/`)")
