"""The Facebook Page channel: the exact Graph API request (intercepted with respx), the Graph API's
error objects mapped to what the ledger does next, the receipt, and the Page token kept out of
every URL, log line, error and ledger row."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import respx

from pipeline.channels.facebook import DEFAULT_API_VERSION, RATE_LIMIT_WAIT
from pipeline.config import Config
from pipeline.intake.posts import load_posts
from pipeline.publish import publish
from pipeline.render.social import snippet
from tests.conftest import SEED_SLUG, add_channel, ledger_rows, send_through, thread_post
from tests.test_linkedin import enable_networks

NAME = "fb"
PAGE = "5678"
BASE = "https://graph.facebook.com"
FEED = f"{BASE}/{DEFAULT_API_VERSION}/{PAGE}/feed"
TOKEN = "EAAG-page-very-secret-token-1234"


def facebook_config(project: Path, monkeypatch: pytest.MonkeyPatch, **extra: object) -> Config:
    monkeypatch.setenv("FACEBOOK_PAGE_TOKEN", TOKEN)
    enable_networks(project, "facebook")
    settings = {"page_id": PAGE, "access_token": "${FACEBOOK_PAGE_TOKEN}", "retries": 2,
                "retry_wait": 0.01, "max_wait": 5, "timeout": 5, **extra}
    return add_channel(project, NAME, "facebook", settings)


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def created(post_id: str = f"{PAGE}_1001") -> httpx.Response:
    return httpx.Response(200, json={"id": post_id})


def graph_error(code: int, message: str, *, status: int = 400, subcode: int | None = None,
                transient: bool = False, headers: dict[str, str] | None = None) -> httpx.Response:
    error: dict[str, object] = {"message": message, "type": "OAuthException", "code": code,
                                "fbtrace_id": "AbCdEf"}
    if subcode is not None:
        error["error_subcode"] = subcode
    if transient:
        error["is_transient"] = True
    return httpx.Response(status, json={"error": error}, headers=headers)


send = partial(send_through, name=NAME)
rows = partial(ledger_rows, channel=NAME)


def test_posts_message_and_link_to_the_page_feed_and_records_the_post_id(project, monkeypatch, mock):
    config = facebook_config(project, monkeypatch)
    route = mock.post(FEED).mock(return_value=created(f"{PAGE}_1001"))
    report = send(config)
    assert (report.sent, report.failed, report.error) == (1, 0, None)
    [call] = route.calls
    request = call.request
    assert request.method == "POST" and str(request.url) == FEED        # no token in the URL
    # The Page token is the documented `access_token` parameter (the Pages API's own examples),
    # in the body: no Authorization header, which the Pages API documents nowhere.
    assert "Authorization" not in request.headers
    assert request.headers["Content-Type"] == "application/json"
    post = next(p for p in load_posts(config).posts if p.slug == SEED_SLUG)
    s = snippet(post, "facebook", config, channel=NAME)
    link = "https://www.rtrwellnesscenter.com/?utm_source=fb&utm_medium=social&utm_campaign=" + SEED_SLUG
    assert json.loads(request.content) == {"message": s.text, "link": link, "access_token": TOKEN}
    assert s.text.startswith("Ketamine’s Potential Ability to Heal Neurological Damage\n\n")
    assert s.text.endswith("\n\n#ketamine #depression #MentalHealth\n" + link)
    [row] = rows(config)
    assert (row.status, row.remote_id, row.remote_url) == (
        "sent", f"{PAGE}_1001", f"https://www.facebook.com/{PAGE}_1001")


def test_a_configured_api_version_and_base_url_and_no_card(project, monkeypatch, mock):
    config = facebook_config(project, monkeypatch, base_url="https://graph.fb.test", api_version="v21.0",
                             image="none")
    route = mock.post(f"https://graph.fb.test/v21.0/{PAGE}/feed").mock(return_value=created())
    assert send(config).sent == 1
    assert set(json.loads(route.calls[0].request.content)) == {"message", "access_token"}


@pytest.mark.parametrize(("reply", "words"), [
    (graph_error(190, "Error validating access token: Session has expired on Friday.", subcode=463),
     ["190/463", "expired or was revoked", "update the environment"]),
    (graph_error(200, "Requires pages_manage_posts permission", status=403),
     ["200", "lacks a permission", f"pages_manage_posts for page {PAGE}"]),
], ids=["190-expired", "200-permission"])
def test_a_token_that_cannot_post_stops_the_channel_with_what_to_fix(project, monkeypatch, mock, reply,
                                                                    words):
    config = facebook_config(project, monkeypatch)
    route = mock.post(FEED).mock(return_value=reply)
    report = send(config)
    assert (report.sent, route.call_count) == (0, 1)
    text = str(report.error)
    for word in words:
        assert word in text, word
    assert TOKEN not in text
    [row] = rows(config)
    assert row.status == "pending"                  # sent once the token is fixed


@pytest.mark.parametrize("code", [4, 17, 32, 613])
def test_rate_limits_wait_for_the_time_facebook_gives(project, monkeypatch, mock, code):
    config = facebook_config(project, monkeypatch)
    usage = json.dumps({PAGE: [{"type": "pages", "call_count": 100, "estimated_time_to_regain_access": 0}]})
    route = mock.post(FEED).mock(side_effect=[
        graph_error(code, "Application request limit reached", status=403,
                    headers={"X-Business-Use-Case-Usage": usage, "Retry-After": "1"}),
        created(f"{PAGE}_7")])
    report = send(config)
    assert (report.sent, report.deferred, route.call_count) == (1, 0, 2)
    assert rows(config)[0].remote_id == f"{PAGE}_7"


def test_a_long_rate_limit_leaves_the_row_pending(project, monkeypatch, mock):
    config = facebook_config(project, monkeypatch)
    usage = json.dumps({PAGE: [{"type": "pages", "estimated_time_to_regain_access": 12}]})
    route = mock.post(FEED).mock(return_value=graph_error(
        32, "Page request limit reached", headers={"X-Business-Use-Case-Usage": usage}))
    report = send(config)
    assert (report.sent, report.deferred, report.failed, route.call_count) == (0, 1, 0, 1)
    [row] = rows(config)
    assert row.status == "pending" and "about 720 s" in (row.last_error or "")


def test_a_rate_limit_without_usage_headers_waits_five_minutes(project, monkeypatch, mock):
    config = facebook_config(project, monkeypatch)
    mock.post(FEED).mock(return_value=graph_error(4, "Application request limit reached"))
    assert send(config).deferred == 1
    assert f"about {RATE_LIMIT_WAIT:.0f} s" in (rows(config)[0].last_error or "")


@pytest.mark.parametrize(("reply", "words"), [
    (graph_error(368, "It looks like you were misusing this feature by going too fast."),
     ["368", "blocked this Page", "retry --failed"]),
    (graph_error(100, "Invalid parameter"), ["100", "Invalid parameter", f"channels.{NAME}.page_id"]),
    (graph_error(506, "Duplicate status message"), ["506", "Duplicate status message"]),
], ids=["368-blocked", "100-invalid", "506-duplicate"])
def test_refusals_fail_with_facebooks_message(project, monkeypatch, mock, reply, words):
    config = facebook_config(project, monkeypatch)
    route = mock.post(FEED).mock(return_value=reply)
    report = send(config)
    assert (report.sent, route.call_count) == (0, 1)
    [row] = rows(config)
    assert row.status == "failed"
    for word in words:
        assert word in (row.last_error or ""), word


@pytest.mark.parametrize("reply", [
    graph_error(2, "Service temporarily unavailable", status=500),
    graph_error(1, "An unknown error occurred", status=500),
    graph_error(-3, "Something odd", transient=True),
    httpx.Response(502, text="<html>bad gateway</html>"),
    httpx.ConnectError("refused"),
], ids=["2", "1", "is_transient", "502-html", "connect-error"])
def test_temporary_errors_are_retried(project, monkeypatch, mock, reply):
    config = facebook_config(project, monkeypatch)
    route = mock.post(FEED).mock(side_effect=[reply, created(f"{PAGE}_9")])
    assert send(config).sent == 1
    assert route.call_count == 2


def test_no_answer_is_unknown_and_never_resent(project, monkeypatch, mock):
    config = facebook_config(project, monkeypatch)
    route = mock.post(FEED).mock(side_effect=httpx.ReadTimeout("timed out"))
    report = send(config)
    assert (report.sent, report.unknown, route.call_count) == (0, 1, 1)
    assert rows(config)[0].status == "unknown"
    assert (send(config).total, route.call_count) == (0, 1)


def test_a_reply_without_an_id_is_unknown(project, monkeypatch, mock):
    config = facebook_config(project, monkeypatch)
    mock.post(FEED).mock(return_value=httpx.Response(200, json={"success": True}))
    assert send(config).unknown == 1
    assert rows(config)[0].status == "unknown"


def test_a_thread_fails_before_anything_is_posted(project, monkeypatch, mock, write_post):
    write_post("story.md", thread_post(3000))
    config = facebook_config(project, monkeypatch)        # 3,000 sentences: three parts of 63,206
    route = mock.post(FEED).mock(return_value=created())
    report = send(config, "story")
    assert report.sent == 0 and route.call_count == 0
    first = min(rows(config), key=lambda r: r.part)
    assert first.part == 1 and first.status == "failed" and "no thread" in (first.last_error or "")


def test_publishing_twice_sends_once(project, monkeypatch, mock):
    config = facebook_config(project, monkeypatch)
    route = mock.post(FEED).mock(return_value=created())
    [first] = publish(config, slugs=[SEED_SLUG], channels=[NAME])
    [again] = publish(config, slugs=[SEED_SLUG], channels=[NAME])
    assert (first.sent, again.total, again.sent, again.already_sent) == (1, 0, 0, 1)
    assert route.call_count == 1


@pytest.mark.parametrize("reply", [
    graph_error(190, f"Invalid OAuth access token - Cannot parse access token {TOKEN}"),
    httpx.Response(401, text=f"token {TOKEN} refused"),
    httpx.ConnectError("refused"),
    httpx.ReadTimeout("no answer"),
], ids=["190-echoing-token", "401-html-echoing-token", "connect-error", "read-timeout"])
def test_the_token_appears_in_no_log_no_error_and_no_ledger_row(project, monkeypatch, mock, caplog, reply):
    config = facebook_config(project, monkeypatch, retries=0)
    mock.post(FEED).mock(side_effect=[reply] * 4)
    with caplog.at_level(logging.DEBUG):
        report = send(config)
    assert report.sent == 0
    [row] = rows(config)
    shown = " ".join([*report.errors, str(report.error), repr(row), caplog.text])
    assert row.last_error and TOKEN not in shown
    db = config.path(config.state)
    assert TOKEN.encode() not in b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


@pytest.mark.parametrize(("key", "value"), [("page_id", "my-page"), ("api_version", "25")])
def test_bad_settings_name_the_key_and_never_the_token(project, monkeypatch, key, value):
    config = facebook_config(project, monkeypatch, **{key: value})
    report = send(config)
    assert report.error is not None and f"channels.{NAME}.{key}" in report.error
    assert TOKEN not in report.error
