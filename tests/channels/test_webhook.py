"""The webhook channel: the exact JSON each preset POSTs (intercepted with respx), what each kind
of failure leaves in the ledger, and that the secret URL is shown nowhere."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import respx

from pipeline.config import Config
from pipeline.intake.posts import load_posts
from pipeline.render.social import snippet, thread
from tests.conftest import SEED_SLUG, add_channel, ledger_rows, send_through, thread_post

NAME = "team-chat"
TOKEN = "T0001/B0002/s3cr3tW3bh00kT0k3n"
URL = f"https://hooks.example.com/services/{TOKEN}"
INFUSION = "2024-03-12-your-first-infusion"


def webhook_config(project: Path, monkeypatch: pytest.MonkeyPatch, url: str = URL, **extra: object) -> Config:
    monkeypatch.setenv("WEBHOOK_URL", url)
    settings = {"url": "${WEBHOOK_URL}", "retries": 2, "retry_wait": 0.01, "max_wait": 5, "timeout": 5,
                **extra}
    return add_channel(project, NAME, "webhook", settings)


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


send = partial(send_through, name=NAME)
rows = partial(ledger_rows, channel=NAME)


def texts(config: Config, network: str = "mastodon", slug: str = SEED_SLUG) -> list[str]:
    """The texts the orchestrator hands the channel: rendered for it (utm_source=<channel>)."""
    post = next(p for p in load_posts(config).posts if p.slug == slug)
    found = (thread(post, network, config, channel=NAME) if post.thread
             else (snippet(post, network, config, channel=NAME),))
    return [s.text for s in found]


def body(route: respx.Route, i: int = 0) -> object:
    return json.loads(route.calls[i].request.content)


def test_slack_preset_posts_text_as_json_with_extra_headers(project, monkeypatch, mock):
    config = webhook_config(project, monkeypatch, preset="slack", headers={"X-Team": "news"})
    route = mock.post(URL).mock(return_value=httpx.Response(200, text="ok"))
    report = send(config)
    assert (report.sent, report.failed, report.error) == (1, 0, None)
    [text] = texts(config)
    assert body(route) == {"text": text}
    request = route.calls[0].request
    assert request.method == "POST" and str(request.url) == URL
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Team"] == "news"
    [row] = rows(config)
    assert (row.status, row.remote_id, row.remote_url) == ("sent", None, None)


def test_discord_preset_posts_content_and_records_the_message_id(project, monkeypatch, mock):
    config = webhook_config(project, monkeypatch, URL + "?wait=true", preset="discord", network="bluesky")
    route = mock.post(URL + "?wait=true").mock(
        return_value=httpx.Response(200, json={"id": "1234567890", "content": "..."}))
    assert send(config).sent == 1
    [text] = texts(config, "bluesky")
    assert body(route) == {"content": text}
    assert route.calls[0].request.headers["Content-Type"] == "application/json"
    assert rows(config)[0].remote_id == "1234567890"


def test_discord_text_over_2000_characters_fails_before_sending(project, monkeypatch, mock):
    cfg = project / "config.yaml"
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("mastodon: {limit: 500}",
                                                           "mastodon: {limit: 5000}"), encoding="utf-8")
    config = webhook_config(project, monkeypatch, preset="discord")
    assert len(texts(config)[0]) > 2000
    route = mock.post(URL).mock(return_value=httpx.Response(204))
    report = send(config)
    assert (report.sent, report.failed) == (0, 1)
    assert not route.called
    [row] = rows(config)
    assert "Discord takes at most 2000" in (row.last_error or "")


def test_json_preset_posts_the_post_fields_network_text_link_and_part(project, monkeypatch, mock):
    config = webhook_config(project, monkeypatch)
    route = mock.post(URL).mock(return_value=httpx.Response(202, headers={"X-Request-Id": "req-77"}))
    assert send(config, INFUSION).sent == 1
    [text] = texts(config, slug=INFUSION)
    post = next(p for p in load_posts(config).posts if p.slug == INFUSION)
    link = snippet(post, "mastodon", config, channel=NAME).link
    assert link is not None and f"utm_source={NAME}" in link.uri
    assert body(route) == {
        "post": {"slug": INFUSION, "title": "Your First Infusion: What to Expect, Step by Step",
                 "canonical_url": post.canonical_url,
                 "summary": "A first ketamine infusion is calmer than most people expect. Here is how "
                            "the day goes, from check-in to the ride home."},
        "network": "mastodon", "text": text, "link": link.uri, "part": 0}
    assert route.calls[0].request.headers["Content-Type"] == "application/json"
    assert rows(config)[0].remote_id == "req-77"


def test_json_preset_sends_a_threads_parts_in_order(project, monkeypatch, mock, write_post):
    write_post("thread.md", thread_post(40))
    config = webhook_config(project, monkeypatch, network="x")
    route = mock.post(URL).mock(return_value=httpx.Response(204))
    parts = texts(config, "x", "thread")
    assert len(parts) >= 3
    assert send(config, "thread").sent == len(parts)
    sent = [body(route, i) for i in range(len(route.calls))]
    assert [(b["part"], b["text"]) for b in sent] == list(enumerate(parts, 1))   # type: ignore[index]
    assert [b["link"] is not None for b in sent] == [False] * (len(parts) - 1) + [True]  # type: ignore[index]


def test_rate_limit_with_retry_after_within_max_wait_is_waited_out(project, monkeypatch, mock):
    config = webhook_config(project, monkeypatch)
    route = mock.post(URL).mock(side_effect=[httpx.Response(429, headers={"Retry-After": "1"}),
                                             httpx.Response(200)])
    report = send(config)
    assert (report.sent, report.deferred) == (1, 0)
    assert route.call_count == 2


def test_rate_limit_beyond_max_wait_leaves_the_row_pending(project, monkeypatch, mock):
    config = webhook_config(project, monkeypatch)
    route = mock.post(URL).mock(return_value=httpx.Response(429, headers={"Retry-After": "3600"}))
    report = send(config)
    assert (report.sent, report.deferred, report.failed) == (0, 1, 0)
    assert route.call_count == 1
    [row] = rows(config)
    assert row.status == "pending" and row.next_attempt_at is not None


def test_server_error_is_retried_then_sent(project, monkeypatch, mock):
    config = webhook_config(project, monkeypatch)
    route = mock.post(URL).mock(side_effect=[httpx.Response(502, text="bad gateway"), httpx.Response(200)])
    assert send(config).sent == 1
    assert route.call_count == 2


def test_connection_refused_is_retried(project, monkeypatch, mock):
    config = webhook_config(project, monkeypatch)
    route = mock.post(URL).mock(side_effect=[httpx.ConnectError("refused"), httpx.Response(200)])
    assert send(config).sent == 1
    assert route.call_count == 2


def test_unauthorized_fails_naming_the_fix(project, monkeypatch, mock):
    config = webhook_config(project, monkeypatch)
    route = mock.post(URL).mock(return_value=httpx.Response(401, text="invalid_token"))
    report = send(config)
    assert (report.sent, report.failed) == (0, 1)
    assert route.call_count == 1
    [row] = rows(config)
    error = row.last_error or ""
    assert "401 unauthorized" in error and "webhook URL" in error and "update the environment" in error


def test_timeout_after_sending_is_unknown_and_not_resent(project, monkeypatch, mock):
    config = webhook_config(project, monkeypatch)
    route = mock.post(URL).mock(side_effect=httpx.ReadTimeout("timed out"))
    report = send(config)
    assert (report.sent, report.unknown, report.failed) == (0, 1, 0)
    assert route.call_count == 1
    [row] = rows(config)
    assert row.status == "unknown" and "may have been posted" in (row.last_error or "")


def test_second_publish_sends_nothing(project, monkeypatch, mock):
    config = webhook_config(project, monkeypatch)
    route = mock.post(URL).mock(return_value=httpx.Response(200))
    send(config)
    again = send(config)
    assert (again.total, again.sent, again.already_sent) == (0, 0, 1)
    assert route.call_count == 1


@pytest.mark.parametrize("reply", [
    httpx.Response(404, text=f"no_service: {URL} is unknown"),
    httpx.Response(403, json={"error": "forbidden", "url": URL}),
    httpx.ConnectError(f"cannot reach {URL}"),
    httpx.ReadTimeout(f"no answer from {URL}"),
], ids=["404-echoing-url", "403", "connect-error", "read-timeout"])
def test_the_url_appears_in_no_error_no_ledger_row_and_no_log(project, monkeypatch, mock, caplog, reply):
    config = webhook_config(project, monkeypatch, retries=0)
    mock.post(URL).mock(side_effect=[reply])
    with caplog.at_level(logging.DEBUG):
        report = send(config)
    assert report.sent == 0 and report.errors
    [row] = rows(config)
    assert row.last_error
    shown = " ".join([*report.errors, str(report.error), repr(row), caplog.text])
    assert TOKEN not in shown and "s3cr3t" not in shown
    if isinstance(reply, httpx.Response):            # httpx's request line is there, redacted
        assert "HTTP Request: POST https://hooks.example.com/…" in caplog.text
    db = config.path(config.state)
    assert TOKEN.encode() not in b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def test_not_found_says_the_webhook_is_unknown(project, monkeypatch, mock):
    config = webhook_config(project, monkeypatch)
    mock.post(URL).mock(return_value=httpx.Response(404, json={"message": "Unknown Webhook", "code": 10015}))
    send(config)
    [row] = rows(config)
    assert row.status == "failed" and "does not know this webhook URL" in (row.last_error or "")


def test_a_disabled_network_is_a_config_error(project, monkeypatch, mock):
    cfg = project / "config.yaml"
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("bluesky: {}", "bluesky: {enabled: false}"),
                   encoding="utf-8")
    config = webhook_config(project, monkeypatch, network="bluesky")
    report = send(config)
    assert report.error is not None and f"channels.{NAME}.network" in report.error
    assert TOKEN not in report.error
