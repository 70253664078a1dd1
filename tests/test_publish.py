"""publish() in-process: the shipped outbox channel, a real SQLite ledger, real files."""

from __future__ import annotations

import email
import email.policy
import json
import mailbox
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from pipeline.channels.registry import CHANNELS
from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.intake.posts import load_posts
from pipeline.plan import key_prefix
from pipeline.publish import publish
from pipeline.render.email import render_edition
from pipeline.render.mime import MessageTemplate, message_id
from pipeline.render.personalize import Fill
from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from pipeline.store.ledger import Ledger
from tests.conftest import SEED_SLUG

NEWEST = "mood-journal"
INFUSION = "2024-03-12-your-first-infusion"
FOOTER = "Originally published at https://www.rtrwellnesscenter.com/mood-journal/ on May 20, 2024."
ADA, BOB, CY = "Ada@example.com", "bob@example.com", "cy@example.com"


@pytest.fixture
def subscribed(engine):
    """Three subscribers: two with a name, one without."""
    store.upsert(engine, "Ada@Example.com", "Ada")
    store.upsert(engine, BOB)
    store.upsert(engine, CY, "Cy Twombly")


@pytest.fixture
def outbox(project) -> Path:
    return project / "out" / "outbox"


def _messages(outbox: Path) -> list[email.message.EmailMessage]:
    box = mailbox.Maildir(outbox / "mail", create=False)
    return [email.message_from_bytes(box.get_bytes(k), policy=email.policy.default) for k in box.iterkeys()]


def _by_to(outbox: Path) -> dict[str, email.message.EmailMessage]:
    return {str(m["To"]): m for m in _messages(outbox)}


def _social(outbox: Path) -> list[dict]:
    return [json.loads(line) for line in (outbox / "social.jsonl").read_text().splitlines()]


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def _ledger_rows(config, **kwargs):
    ledger = Ledger(engine_for(config))
    try:
        return ledger.rows(**kwargs)
    finally:
        ledger.close()


def _with_config(project: Path, **changes):
    path = project / "config.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return load_config(path)


def _token_url(config, engine, address: str) -> str:
    sub = next(s for s in store.iter_subscribers(engine) if s.email == address)
    tok = store.token(sub.uid, sub.email, store.state_secret(engine))
    return f"{config.unsubscribe.base_url}/unsubscribe/{tok}"


# -- the first publish ------------------------------------------------------------------------

def test_publish_sends_newest_post_to_every_subscriber_network_and_article(config, subscribed, outbox):
    [report] = publish(config)
    assert (report.channel, report.editions, report.error) == ("outbox", [NEWEST], None)
    assert (report.sent, report.total, report.already_sent, report.failed) == (7, 7, 0, 0)
    assert sorted(_by_to(outbox)) == [ADA, BOB, CY]
    lines = _social(outbox)
    assert sorted(line["network"] for line in lines) == ["bluesky", "mastodon", "x"]
    assert {line["post"] for line in lines} == {NEWEST}
    assert all("rtrwellnesscenter.com/mood-journal/" in line["link"] for line in lines)
    article = (outbox / "articles" / f"{NEWEST}.md").read_text()
    assert FOOTER in article
    assert 'title: "Un journal d’humeur' in article


def test_publish_records_every_delivery_as_sent(config, subscribed):
    publish(config)
    rows = _ledger_rows(config)
    assert {r.key: r.status for r in rows} == {
        f"outbox:{NEWEST}:{k}": "sent" for k in
        ("ada@example.com", "bob@example.com", "cy@example.com", "x", "mastodon", "bluesky", "article")}
    assert {r.edition for r in rows} == {NEWEST}


def test_each_message_is_multipart_alternative_to_its_subscriber(config, subscribed, outbox):
    publish(config)
    for to, msg in _by_to(outbox).items():
        assert msg.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
        assert msg["Message-ID"] == message_id(NEWEST, to, "example.com")
        assert msg["From"] == "RTR Wellness Center <news@example.com>"
        assert msg["Subject"] == "Un journal d’humeur: track your mood in five minutes a day 🌿"
        assert msg["Date"].datetime.tzinfo is not None


def test_message_ids_are_deterministic_and_distinct(config, subscribed, outbox):
    publish(config)
    ids = [m["Message-ID"] for m in _messages(outbox)]
    assert len(set(ids)) == 3
    assert message_id(NEWEST, ADA, "example.com") == message_id(NEWEST, ADA.lower(), "example.com")


def test_each_message_has_one_click_list_unsubscribe(config, engine, subscribed, outbox):
    publish(config)
    for to, msg in _by_to(outbox).items():
        url = _token_url(config, engine, to)
        assert msg["List-Unsubscribe"] == f"<{url}>"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        html = msg.get_body(("html",)).get_content()
        assert f'href="{url}"' in html
        assert f"Unsubscribe: {url}" in msg.get_body(("plain",)).get_content()


def test_unsubscribe_tokens_resolve_to_their_subscriber(config, engine, subscribed, outbox):
    publish(config)
    secret = store.state_secret(engine)
    for to, msg in _by_to(outbox).items():
        tok = str(msg["List-Unsubscribe"]).strip("<>").rsplit("/", 1)[1]
        assert store.resolve_token(engine, tok, secret).email == to


def test_unsubscribe_mailto_adds_a_second_target(project, subscribed, outbox, engine):
    config = _with_config(project, unsubscribe={"mailto": "leave@example.com"})
    publish(config)
    msg = _by_to(outbox)[BOB]
    url = _token_url(config, engine, BOB)
    tok = url.rsplit("/", 1)[1]
    assert msg["List-Unsubscribe"] == f"<{url}>, <mailto:leave@example.com?subject=unsubscribe%20{tok}>"


def test_body_greets_named_subscribers_by_name_and_others_with_the_fallback(config, subscribed, outbox):
    publish(config)
    messages = _by_to(outbox)
    for to, greeting in ((ADA, "Hi Ada,"), (CY, "Hi Cy Twombly,"), (BOB, "Hi there,")):
        plain = messages[to].get_body(("plain",)).get_content()
        html = messages[to].get_body(("html",)).get_content()
        assert plain.replace("\r\n", "\n").startswith(greeting + "\n")
        assert greeting in html
    assert "Hi there" not in messages[ADA].get_body(("plain",)).get_content()


# -- running again ----------------------------------------------------------------------------

def test_second_publish_sends_nothing_and_writes_nothing(config, subscribed, outbox):
    publish(config)
    before = _files(outbox)
    [report] = publish(config)
    assert (report.sent, report.total, report.already_sent, report.resent) == (0, 0, 7, 0)
    assert _files(outbox) == before


def test_a_new_subscriber_gets_the_post_on_the_next_publish(config, engine, subscribed, outbox):
    publish(config)
    store.upsert(engine, "dee@example.com", "Dee")
    [report] = publish(config)
    assert (report.sent, report.total, report.already_sent) == (1, 1, 7)
    assert sorted(_by_to(outbox)) == [ADA, BOB, CY, "dee@example.com"]


def test_unsubscribed_subscriber_gets_nothing_on_a_later_post(config, engine, subscribed, outbox):
    publish(config, slugs=[INFUSION])
    store.unsubscribe(engine, BOB)
    [report] = publish(config)
    assert (report.editions, report.sent) == ([NEWEST], 6)
    later = [str(m["To"]) for m in _messages(outbox) if m["Message-ID"] ==
             message_id(NEWEST, str(m["To"]), "example.com")]
    assert sorted(later) == [ADA, CY]
    assert not any(r.recipient == BOB for r in _ledger_rows(config, edition=NEWEST))


# -- which post -------------------------------------------------------------------------------

def test_publish_a_named_slug(config, subscribed, outbox):
    [report] = publish(config, slugs=[INFUSION])
    assert (report.editions, report.sent) == ([INFUSION], 7)
    assert (outbox / "articles" / f"{INFUSION}.md").exists()
    assert not (outbox / "articles" / f"{NEWEST}.md").exists()
    assert {m["Subject"] for m in _messages(outbox)} == \
        {"Your First Infusion: What to Expect, Step by Step"}


def test_publish_an_unknown_slug_names_it(config, subscribed, outbox):
    with pytest.raises(PipelineError, match="no post with slug 'no-such-post'"):
        publish(config, slugs=["no-such-post"])
    assert not outbox.exists()


def test_publish_a_draft_is_an_error(config, write_post, subscribed, outbox):
    write_post("2024-06-01-draft.md", """
        ---
        title: Not yet
        date: 2024-06-01
        draft: true
        ---

        Work in progress.
        """)
    with pytest.raises(PipelineError, match="is a draft"):
        publish(config, slugs=["2024-06-01-draft"])
    [report] = publish(config)          # the newest publishable post is still mood-journal
    assert report.editions == [NEWEST]


def test_publish_a_post_dated_in_the_future_is_an_error(config, write_post, subscribed, outbox):
    write_post("2199-01-01-later.md", """
        ---
        title: Later
        date: 2199-01-01
        ---

        Not before then.
        """)
    with pytest.raises(PipelineError, match="in the future"):
        publish(config, slugs=["2199-01-01-later"])
    [report] = publish(config)
    assert report.editions == [NEWEST]
    assert not (outbox / "articles" / "2199-01-01-later.md").exists()


# -- dry run ----------------------------------------------------------------------------------

def test_dry_run_writes_to_the_outbox_and_records_dry_run_rows(config, subscribed, outbox):
    [report] = publish(config, dry_run=True)
    assert report.sent == 7
    assert len(_messages(outbox)) == 3
    dry = _ledger_rows(config, dry_run=True)
    assert len(dry) == 7
    assert all(r.key.startswith("dry-run:outbox:mood-journal:") and r.dry_run for r in dry)
    assert _ledger_rows(config) == []


def test_real_publish_after_a_dry_run_still_sends(config, subscribed, outbox):
    publish(config, dry_run=True)
    [report] = publish(config)
    assert (report.sent, report.already_sent) == (7, 0)
    assert len(_messages(outbox)) == 6
    assert len(_ledger_rows(config)) == 7
    assert len(_ledger_rows(config, dry_run=True)) == 7


# -- failures ---------------------------------------------------------------------------------

def test_unknown_channel_type_is_reported_and_other_channels_still_send(project, subscribed, outbox):
    config = _with_config(project, channels={"bad": {"type": "carrier-pigeon"},
                                             "outbox": {"type": "outbox", "path": "out/outbox"}})
    bad, good = publish(config)
    assert bad.channel == "bad"
    assert "carrier-pigeon" in bad.error
    assert f"known types: {', '.join(sorted(CHANNELS))}" in bad.error
    assert "bluesky, devto, facebook, linkedin, mastodon, outbox" in bad.error
    assert bad.sent == 0
    assert (good.channel, good.error, good.sent) == ("outbox", None, 7)
    assert len(_messages(outbox)) == 3


def test_row_left_sending_by_a_crash_is_resent(config, engine, subscribed, outbox):
    ledger = Ledger(engine)
    ledger.plan_recipients(channel="outbox", edition=NEWEST, dry_run=False,
                           key_prefix=key_prefix("outbox", NEWEST, dry_run=False))
    key = f"outbox:{NEWEST}:ada@example.com"
    assert ledger.begin(key)
    ledger.close()

    [report] = publish(config)
    assert (report.resent, report.sent, report.total) == (1, 7, 7)
    ledger = Ledger(engine)
    row = ledger.get(key)
    assert (row.status, row.resends, row.attempts) == ("sent", 1, 2)
    assert ledger.counts()[0]["resends"] == 1
    ledger.close()
    assert sorted(_by_to(outbox)) == [ADA, BOB, CY]


def test_social_row_deferred_by_the_network_is_not_sent_before_its_time(config, engine, outbox):
    ledger = Ledger(engine)
    key = f"outbox:{NEWEST}:x"
    ledger.plan(key=key, channel="outbox", edition=NEWEST, kind="social", network="x")
    ledger.begin(key)
    ledger.release(key, "429 rate limited", until=datetime.now(UTC) + timedelta(hours=1))
    ledger.close()
    publish(config)
    assert {r.key: r.status for r in _ledger_rows(config)}[key] == "pending"
    assert sorted(line["network"] for line in _social(outbox)) == ["bluesky", "mastodon"]


# -- MessageTemplate --------------------------------------------------------------------------

NAMES = ["Ada <Lovelace> & Co", "Zoë Łukasiewicz 日本語 🌿", "x" * 300, "é" * 150 + " " + "n" * 149]


@pytest.fixture
def seed_edition(config):
    post = next(p for p in load_posts(config).posts if p.slug == SEED_SLUG)
    return render_edition(post, config)


def _template(edition) -> MessageTemplate:
    return MessageTemplate(edition, sender="RTR Wellness Center <news@example.com>",
                           domain="example.com", date=datetime(2024, 5, 20, 12, tzinfo=UTC))


def _values(name: str) -> dict[str, str]:
    return {"name": name, "email": "reader@example.com",
            "unsubscribe_url": "https://news.example.com/unsubscribe/abc.def?x=1&y=2",
            "manage_url": "https://news.example.com/manage/abc.def?x=1&y=2"}


@pytest.mark.parametrize("name", NAMES, ids=["markup", "non-ascii", "long", "long-non-ascii"])
def test_message_template_decodes_to_what_fill_gives(seed_edition, name):
    raw = _template(seed_edition).render(to="reader@example.com", values=_values(name))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    plain = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    html = msg.get_body(("html",)).get_content().replace("\r\n", "\n")
    assert plain == Fill.of(seed_edition.text, escape=False)(_values(name))
    assert html == Fill.of(seed_edition.html, escape=True)(_values(name))
    assert f"Hi {name}," in plain
    assert msg.defects == []
    assert all(p.defects == [] for p in msg.iter_parts())


@pytest.mark.parametrize("name", NAMES, ids=["markup", "non-ascii", "long", "long-non-ascii"])
def test_message_template_lines_are_crlf_and_at_most_78_bytes(seed_edition, name):
    raw = _template(seed_edition).render(to="reader@example.com", values=_values(name))
    assert raw.endswith(b"\r\n")
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")
    too_long = [line for line in raw.split(b"\r\n") if len(line) > 78]
    assert too_long == []


def test_message_template_headers_for_the_recipient(seed_edition):
    raw = _template(seed_edition).render(to="reader@example.com", values=_values("Ada"),
                                         list_unsubscribe="<https://a.example/u/1>, <mailto:u@a.example>")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["To"] == "reader@example.com"
    assert msg["Message-ID"] == message_id(SEED_SLUG, "reader@example.com", "example.com")
    assert msg["List-Unsubscribe"] == "<https://a.example/u/1>, <mailto:u@a.example>"
    assert msg["Date"] == "Mon, 20 May 2024 12:00:00 +0000"
    assert b"List-Unsubscribe: <https://a.example/u/1>,\r\n <mailto:u@a.example>\r\n" in raw



def test_dry_run_of_a_network_channel_needs_no_credentials_and_posts_only_its_network(project):
    path = project / "config.yaml"
    path.write_text(path.read_text(encoding="utf-8") + (
        "  x:\n    type: x\n    consumer_key: ${NO_X_KEY}\n    consumer_secret: ${NO_X_SECRET}\n"
        "    access_token: ${NO_X_TOKEN}\n    access_token_secret: ${NO_X_TOKEN_SECRET}\n"
        "  slack: {type: webhook, url: \"${NO_SLACK_URL}\", preset: slack, network: bluesky}\n"),
        encoding="utf-8")
    config = load_config(path)
    reports = publish(config, slugs=["mood-journal"], channels=["x", "slack"], dry_run=True)
    assert [(r.channel, r.sent, r.error) for r in reports] == [("x", 1, None), ("slack", 1, None)]
    lines = [json.loads(line) for line in
             (project / "out" / "outbox" / "social.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(line["channel"], line["network"]) for line in lines] == [("x", "x"), ("slack", "bluesky")]
    assert all(line["key"].startswith("dry-run:") for line in lines)
    assert "utm_source=x" in lines[0]["link"] and "utm_source=slack" in lines[1]["link"]
