"""The X channel: the exact request tweepy sends (intercepted with `responses`), threads, and what
each kind of failure leaves in the ledger."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import requests
import responses
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from pipeline.config import Config
from pipeline.intake.posts import load_posts
from pipeline.render.social import snippet, thread
from tests.conftest import SEED_SLUG, add_channel, ledger_rows, send_through, thread_post

NAME = "tweets"
BASE = "https://api.x.com"
URL = f"{BASE}/2/tweets"
SECRETS = {"X_CONSUMER_KEY": "ck-public-id", "X_CONSUMER_SECRET": "cs-very-secret",
           "X_ACCESS_TOKEN": "at-token-id", "X_ACCESS_TOKEN_SECRET": "ats-very-secret"}


def x_config(project: Path, monkeypatch: pytest.MonkeyPatch, **extra: object) -> Config:
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    settings = {"consumer_key": "${X_CONSUMER_KEY}", "consumer_secret": "${X_CONSUMER_SECRET}",
                "access_token": "${X_ACCESS_TOKEN}", "access_token_secret": "${X_ACCESS_TOKEN_SECRET}",
                "retries": 2, "retry_wait": 0.01, "max_wait": 5, "timeout": 5, **extra}
    return add_channel(project, NAME, "x", settings)


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def created(tweet_id: str, text: str = "") -> dict[str, object]:
    data = {"id": tweet_id, "text": text, "edit_history_tweet_ids": [tweet_id]}
    return {"status": 201, "json": {"data": data}}


send = partial(send_through, name=NAME)
rows = partial(ledger_rows, channel=NAME)


def parts(config: Config, slug: str = SEED_SLUG) -> list[str]:
    """The texts the orchestrator hands the channel: rendered for it (utm_source=<channel>)."""
    post = next(p for p in load_posts(config).posts if p.slug == slug)
    found = thread(post, "x", config, channel=NAME) if post.thread else (snippet(post, "x", config,
                                                                                   channel=NAME),)
    return [s.text for s in found]


def body(call: responses.Call) -> dict[str, object]:
    return json.loads(call.request.body)


def test_posts_the_snippet_signed_with_oauth1_and_records_id_and_url(project, monkeypatch, mock):
    config = x_config(project, monkeypatch)
    mock.post(URL, **created("1790000000000000001"))
    report = send(config)
    assert (report.sent, report.failed, report.error) == (1, 0, None)
    [call] = mock.calls
    assert call.request.method == "POST" and call.request.url == URL
    auth = call.request.headers["Authorization"]
    assert auth.startswith("OAuth ")
    assert 'oauth_consumer_key="ck-public-id"' in auth and 'oauth_token="at-token-id"' in auth
    assert "oauth_signature=" in auth and 'oauth_signature_method="HMAC-SHA1"' in auth
    assert "cs-very-secret" not in auth and "ats-very-secret" not in auth
    assert call.request.headers["Content-Type"] == "application/json"
    [text] = parts(config)
    assert body(call) == {"text": text}
    assert f"utm_source={NAME}" in text
    [row] = rows(config)
    assert (row.status, row.remote_id) == ("sent", "1790000000000000001")
    assert row.remote_url == "https://x.com/i/web/status/1790000000000000001"


def test_configured_base_url_is_the_one_requested(project, monkeypatch, mock):
    config = x_config(project, monkeypatch, base_url="http://x-proxy.test:8080/")
    mock.post("http://x-proxy.test:8080/2/tweets", **created("42"))
    assert send(config).sent == 1
    assert [c.request.url for c in mock.calls] == ["http://x-proxy.test:8080/2/tweets"]


def test_thread_parts_reply_to_the_previous_part_in_order(project, monkeypatch, mock, write_post):
    write_post("thread.md", thread_post(40))
    config = x_config(project, monkeypatch)
    texts = parts(config, "thread")
    assert len(texts) >= 3
    for i in range(len(texts)):
        mock.post(URL, **created(f"100{i}"))
    report = send(config, "thread")
    assert (report.sent, report.failed) == (len(texts), 0)
    sent = [body(c) for c in mock.calls]
    assert sent[0] == {"text": texts[0]}
    assert sent[1:] == [{"text": t, "reply": {"in_reply_to_tweet_id": f"100{i}"}}
                        for i, t in enumerate(texts[1:])]
    assert sorted((r.part, r.remote_id) for r in rows(config)) == [(i + 1, f"100{i}")
                                                                   for i in range(len(texts))]


def test_rate_limit_resetting_within_max_wait_is_waited_out(project, monkeypatch, mock):
    config = x_config(project, monkeypatch, max_wait=5)
    reset = int(time.time()) + 1
    mock.post(URL, status=429, json={"title": "Too Many Requests", "detail": "Too Many Requests"},
              headers={"x-rate-limit-reset": str(reset), "x-rate-limit-remaining": "0"})
    mock.post(URL, **created("7"))
    report = send(config)
    assert (report.sent, report.deferred) == (1, 0)
    assert len(mock.calls) == 2
    assert time.time() >= reset - 1
    assert rows(config)[0].remote_id == "7"


def test_rate_limit_resetting_beyond_max_wait_leaves_the_row_pending(project, monkeypatch, mock):
    config = x_config(project, monkeypatch, max_wait=5)
    mock.post(URL, status=429, json={"title": "Too Many Requests", "detail": "Too Many Requests"},
              headers={"x-rate-limit-reset": str(int(time.time()) + 3600)})
    report = send(config)
    assert (report.sent, report.deferred, report.failed) == (0, 1, 0)
    assert len(mock.calls) == 1
    [row] = rows(config)
    assert row.status == "pending" and row.next_attempt_at is not None
    assert "rate limited (429)" in (row.last_error or "")


def test_server_error_is_retried_then_sent(project, monkeypatch, mock):
    config = x_config(project, monkeypatch)
    mock.post(URL, status=503, json={"title": "Service Unavailable", "detail": "Service Unavailable"})
    mock.post(URL, **created("8"))
    report = send(config)
    assert (report.sent, report.failed) == (1, 0)
    assert len(mock.calls) == 2
    assert rows(config)[0].remote_id == "8"


def test_connection_refused_before_sending_is_retried(project, monkeypatch, mock):
    config = x_config(project, monkeypatch)
    refused = requests.ConnectionError(MaxRetryError(None, URL, NewConnectionError(None, "refused")))
    mock.post(URL, body=refused)
    mock.post(URL, **created("9"))
    assert send(config).sent == 1
    assert len(mock.calls) == 2


def test_unauthorized_fails_naming_the_keys_and_never_a_secret(project, monkeypatch, mock):
    config = x_config(project, monkeypatch)
    mock.post(URL, status=401, json={"title": "Unauthorized", "type": "about:blank", "status": 401,
                                     "detail": "Unauthorized"})
    report = send(config)
    assert (report.sent, report.failed) == (0, 1)
    assert len(mock.calls) == 1
    [row] = rows(config)
    assert row.status == "failed"
    error = row.last_error or ""
    assert "401 unauthorized" in error and "access_token" in error and "update the environment" in error
    assert not any(secret in error or secret in " ".join(report.errors) for secret in SECRETS.values())


def test_duplicate_content_fails_for_good_without_a_retry(project, monkeypatch, mock):
    config = x_config(project, monkeypatch)
    mock.post(URL, status=403, json={"detail": "You are not allowed to create a Tweet with duplicate "
                                               "content.", "type": "about:blank", "title": "Forbidden",
                                     "status": 403})
    report = send(config)
    assert (report.sent, report.failed, report.unknown) == (0, 1, 0)
    assert len(mock.calls) == 1
    [row] = rows(config)
    assert row.status == "failed" and "duplicate content" in (row.last_error or "")
    again = send(config)                     # failed rows are not retried by a new publish
    assert (again.total, len(mock.calls)) == (0, 1)


def test_other_forbidden_names_the_write_permission(project, monkeypatch, mock):
    config = x_config(project, monkeypatch)
    mock.post(URL, status=403, json={"title": "Forbidden", "detail": "You are not permitted to perform "
                                                                      "this action."})
    send(config)
    [row] = rows(config)
    assert row.status == "failed" and "403 forbidden" in (row.last_error or "")
    assert "write access" in (row.last_error or "")


def test_timeout_after_sending_is_unknown_and_not_resent(project, monkeypatch, mock):
    config = x_config(project, monkeypatch)
    mock.post(URL, body=requests.ReadTimeout("read timed out"))
    report = send(config)
    assert (report.sent, report.unknown, report.failed) == (0, 1, 0)
    assert len(mock.calls) == 1
    [row] = rows(config)
    assert row.status == "unknown" and "may have been posted" in (row.last_error or "")


def test_connection_dropped_mid_exchange_is_unknown(project, monkeypatch, mock):
    config = x_config(project, monkeypatch)
    mock.post(URL, body=requests.ConnectionError(ProtocolError("Connection aborted.")))
    report = send(config)
    assert (report.unknown, len(mock.calls)) == (1, 1)


def test_second_publish_sends_nothing(project, monkeypatch, mock):
    config = x_config(project, monkeypatch)
    mock.post(URL, **created("10"))
    send(config)
    again = send(config)
    assert (again.total, again.sent, again.already_sent) == (0, 0, 1)
    assert len(mock.calls) == 1


INFUSION = "2024-03-12-your-first-infusion"
IMAGE_URL = "https://www.rtrwellnesscenter.com/images/infusion-room.jpg"


def test_attach_cannot_upload_and_skips_the_image_with_one_warning(project, monkeypatch, mock, caplog):
    # tweepy 4.17 has no v2 media upload: nothing but the tweet may be requested.
    config = x_config(project, monkeypatch, image="attach")
    mock.post(URL, **created("11"))
    with caplog.at_level(logging.WARNING, logger="pipeline.channels.x"):
        assert send(config, INFUSION).sent == 1
    [call] = mock.calls
    assert set(body(call)) == {"text"}
    warnings = [r.getMessage() for r in caplog.records if r.name == "pipeline.channels.x"]
    assert len(warnings) == 1
    assert f"the image {IMAGE_URL} is not attached" in warnings[0] and INFUSION in warnings[0]


@pytest.mark.parametrize("mode", [None, "card", "none"])
def test_card_the_default_and_none_post_the_text_alone_without_a_warning(project, monkeypatch, mock,
                                                                          caplog, mode):
    config = x_config(project, monkeypatch, **({"image": mode} if mode else {}))
    mock.post(URL, **created("12"))
    with caplog.at_level(logging.WARNING, logger="pipeline.channels.x"):
        assert send(config, INFUSION).sent == 1
    [call] = mock.calls
    assert set(body(call)) == {"text"}
    assert not [r for r in caplog.records if r.name == "pipeline.channels.x"]
