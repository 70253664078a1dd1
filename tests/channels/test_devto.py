"""The DEV (Forem) channel: the exact request it sends (intercepted with respx), the footer and
canonical URL, tag normalization, and what each kind of failure leaves in the ledger."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import respx

from pipeline.channels.devto import absolute_links, footer_markdown, forem_tags
from pipeline.config import Config
from pipeline.intake.posts import load_posts
from pipeline.models import Footer
from pipeline.preview import render_post
from tests.conftest import SEED_SLUG, add_channel, ledger_rows, send_through

NAME = "dev"
BASE = "https://dev.example"
URL = f"{BASE}/api/articles"
KEY = "devto-very-secret-key"
INFUSION = "2024-03-12-your-first-infusion"
FOOTER = ("\n\n---\n\n*Originally published at [www.rtrwellnesscenter.com]"
          "(https://www.rtrwellnesscenter.com) on September 1, 2020.*")


def devto_config(project: Path, monkeypatch: pytest.MonkeyPatch, **extra: object) -> Config:
    monkeypatch.setenv("DEVTO_API_KEY", KEY)
    settings = {"base_url": BASE, "api_key": "${DEVTO_API_KEY}", "retries": 2, "retry_wait": 0.01,
                "max_wait": 5, "timeout": 5, **extra}
    return add_channel(project, NAME, "devto", settings)


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def created(article_id: int = 1234, published: bool = False) -> httpx.Response:
    return httpx.Response(201, json={"type_of": "article", "id": article_id, "published": published,
                                     "url": f"{BASE}/rtr/ketamine-{article_id}"})


send = partial(send_through, name=NAME)
rows = partial(ledger_rows, channel=NAME)


def article(route: respx.Route, i: int = 0) -> dict[str, object]:
    body = json.loads(route.calls[i].request.content)
    assert set(body) == {"article"}
    return body["article"]


def test_creates_a_draft_with_canonical_url_and_footer(project, monkeypatch, mock):
    config = devto_config(project, monkeypatch)
    route = mock.post(URL).mock(return_value=created(1234))
    report = send(config)
    assert (report.sent, report.failed, report.error) == (1, 0, None)
    [call] = route.calls
    request = call.request
    assert request.method == "POST" and str(request.url) == URL
    assert request.headers["api-key"] == KEY
    assert request.headers["Accept"] == "application/vnd.forem.api-v1+json"
    assert request.headers["Content-Type"] == "application/json"
    post = next(p for p in load_posts(config).posts if p.slug == SEED_SLUG)
    assert article(route) == {
        "title": "Ketamine’s Potential Ability to Heal Neurological Damage",
        "body_markdown": post.body_markdown.strip() + FOOTER,
        "published": False,
        "canonical_url": "https://www.rtrwellnesscenter.com",
        "tags": ["ketamine", "depression", "mentalhealth"],
    }
    [row] = rows(config)
    assert (row.status, row.remote_id, row.remote_url) == ("sent", "1234", f"{BASE}/rtr/ketamine-1234")


def test_summary_image_and_relative_links_are_sent_absolute(project, monkeypatch, mock):
    config = devto_config(project, monkeypatch, published=True, organization_id=42)
    route = mock.post(URL).mock(return_value=created(5, published=True))
    assert send(config, INFUSION).sent == 1
    sent = article(route)
    assert sent["published"] is True and sent["organization_id"] == 42
    assert sent["description"] == ("A first ketamine infusion is calmer than most people expect. Here is "
                                   "how the day goes, from check-in to the ride home.")
    assert sent["main_image"] == "https://www.rtrwellnesscenter.com/images/infusion-room.jpg"
    assert sent["canonical_url"] == "https://www.rtrwellnesscenter.com/2024-03-12-your-first-infusion/"
    body = str(sent["body_markdown"])
    assert "](https://www.rtrwellnesscenter.com/images/reception.jpg)" in body
    assert "](/images/" not in body
    assert "[call the front desk](https://www.rtrwellnesscenter.com/contact/)" in body
    assert body.endswith("\n\n---\n\n*Originally published at [www.rtrwellnesscenter.com]"
                         "(https://www.rtrwellnesscenter.com/2024-03-12-your-first-infusion/) "
                         "on March 12, 2024.*")
    assert sent["tags"] == ["ketamine", "firstvisit", "patientguide"]


def test_tags_are_normalized_to_at_most_four(project, monkeypatch, mock):
    config = devto_config(project, monkeypatch, tags=["Python", "Mental Health", "C++", "naïve-Q&A",
                                                      "python", "self-care", "extra"])
    route = mock.post(URL).mock(return_value=created())
    send(config)
    assert article(route)["tags"] == ["python", "mentalhealth", "c", "naiveqa"]


def test_forem_tags_drop_empty_and_overlong_names():
    assert forem_tags(["🌿", "", "a" * 31, "Ok"]) == ["ok"]
    assert forem_tags(["mood journal", "self-care", "naïve questions welcome"]) == [
        "moodjournal", "selfcare", "naivequestionswelcome"]


def test_absolute_links_leave_code_anchors_and_absolute_urls_alone():
    markdown = ("[a](/x) [b](#top) [c](https://e.org/y) ![d](img.png \"t\")\n"
                "[ref]: /z\n"
                "```\n[e](/code)\n```\n"
                "    [f](/indented)\n")
    assert absolute_links(markdown, "https://site.org/post/") == (
        "[a](https://site.org/x) [b](#top) [c](https://e.org/y) ![d](https://site.org/post/img.png \"t\")\n"
        "[ref]: https://site.org/z\n"
        "```\n[e](/code)\n```\n"
        "    [f](/indented)\n")


def test_footer_markdown_escapes_the_sentence_and_links_the_host(config):
    post = next(p for p in load_posts(config).posts if p.slug == SEED_SLUG)
    rendered = render_post(post, config)
    text = "*First* at {site} [{date}]".replace("{site}", post.canonical_url)
    odd = dataclasses.replace(rendered, footer=Footer(html="", text=text))
    assert footer_markdown(odd) == ("\\*First\\* at [www.rtrwellnesscenter.com]"
                                    "(https://www.rtrwellnesscenter.com) \\[{date}\\]")


def test_rate_limit_with_retry_after_within_max_wait_is_waited_out(project, monkeypatch, mock):
    config = devto_config(project, monkeypatch)
    route = mock.post(URL).mock(side_effect=[
        httpx.Response(429, headers={"Retry-After": "1"},
                       json={"error": "Rate limit reached", "status": 429}),
        created(7)])
    report = send(config)
    assert (report.sent, report.deferred) == (1, 0)
    assert route.call_count == 2
    assert rows(config)[0].remote_id == "7"


def test_rate_limit_beyond_max_wait_leaves_the_row_pending(project, monkeypatch, mock):
    config = devto_config(project, monkeypatch)
    route = mock.post(URL).mock(return_value=httpx.Response(429, headers={"Retry-After": "3600"}))
    report = send(config)
    assert (report.sent, report.deferred, report.failed) == (0, 1, 0)
    assert route.call_count == 1
    [row] = rows(config)
    assert row.status == "pending" and row.next_attempt_at is not None
    assert "rate limited (429)" in (row.last_error or "")


def test_server_error_is_retried_then_sent(project, monkeypatch, mock):
    config = devto_config(project, monkeypatch)
    route = mock.post(URL).mock(side_effect=[httpx.Response(502, text="bad gateway"), created(8)])
    report = send(config)
    assert (report.sent, report.failed) == (1, 0)
    assert route.call_count == 2
    assert rows(config)[0].remote_id == "8"


def test_connection_refused_is_retried(project, monkeypatch, mock):
    config = devto_config(project, monkeypatch)
    route = mock.post(URL).mock(side_effect=[httpx.ConnectError("refused"), created(9)])
    assert send(config).sent == 1
    assert route.call_count == 2


def test_unauthorized_fails_naming_the_key_and_never_the_secret(project, monkeypatch, mock):
    config = devto_config(project, monkeypatch)
    route = mock.post(URL).mock(return_value=httpx.Response(401, json={"error": "unauthorized",
                                                                       "status": 401}))
    report = send(config)
    assert (report.sent, report.failed) == (0, 1)
    assert route.call_count == 1
    [row] = rows(config)
    error = row.last_error or ""
    assert row.status == "failed"
    assert "401 unauthorized" in error and "API key" in error and "update the environment" in error
    assert KEY not in error and KEY not in " ".join(report.errors)


def test_unprocessable_fails_with_forems_message(project, monkeypatch, mock):
    config = devto_config(project, monkeypatch)
    route = mock.post(URL).mock(return_value=httpx.Response(
        422, json={"error": "Canonical url has already been taken", "status": 422}))
    report = send(config)
    assert (report.failed, route.call_count) == (1, 1)
    assert "422: Canonical url has already been taken" in (rows(config)[0].last_error or "")


def test_timeout_after_sending_is_unknown_and_not_resent(project, monkeypatch, mock):
    config = devto_config(project, monkeypatch)
    route = mock.post(URL).mock(side_effect=httpx.ReadTimeout("timed out"))
    report = send(config)
    assert (report.sent, report.unknown, report.failed) == (0, 1, 0)
    assert route.call_count == 1
    [row] = rows(config)
    assert row.status == "unknown" and "may have been posted" in (row.last_error or "")
    again = send(config)
    assert (again.total, route.call_count) == (0, 1)


def test_a_reply_without_an_id_is_unknown(project, monkeypatch, mock):
    config = devto_config(project, monkeypatch)
    mock.post(URL).mock(return_value=httpx.Response(201, text="<html>ok</html>"))
    assert send(config).unknown == 1
    assert rows(config)[0].status == "unknown"


def test_second_publish_sends_nothing(project, monkeypatch, mock):
    config = devto_config(project, monkeypatch)
    route = mock.post(URL).mock(return_value=created(10))
    send(config)
    again = send(config)
    assert (again.total, again.sent, again.already_sent) == (0, 0, 1)
    assert route.call_count == 1
