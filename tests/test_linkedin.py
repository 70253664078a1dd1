"""The LinkedIn channel: the exact Posts API and Images API requests (intercepted with respx), the
little-format escaping of every reserved character and the hashtags, the two-step thumbnail
upload, the errors, the receipt, and the access token kept out of every log, error and ledger row."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from pipeline.channels.linkedin import DEFAULT_VERSION, commentary, escape
from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.intake.posts import load_posts
from pipeline.models import Link, Snippet
from pipeline.publish import publish
from pipeline.render.social import snippet
from tests.conftest import SEED_SLUG, add_channel, jpeg, ledger_rows, send_through, thread_post

NAME = "li"
BASE = "https://api.linkedin.com"
POSTS, IMAGES = f"{BASE}/rest/posts", f"{BASE}/rest/images?action=initializeUpload"
UPLOAD = "https://www.linkedin.com/dms-uploads/sp/D4E10AQ/uploaded-image/0"
TOKEN = "AQV-linkedin-very-secret-token-4242"
ORG = "urn:li:organization:123"
INFUSION = "2024-03-12-your-first-infusion"
IMAGE_URL = "https://www.rtrwellnesscenter.com/images/infusion-room.jpg"
IMAGE_URN = "urn:li:image:C4E10AQFoo"
ALT = "A quiet treatment room with a reclining chair, a blanket and soft window light"
RESERVED = "\\|{}@[]()<>#*_~"


def enable_networks(project: Path, *networks: str) -> None:
    """`networks.<network>: {}` in the project's config.yaml (after bluesky, which it lists)."""
    path = project / "config.yaml"
    text = path.read_text(encoding="utf-8")
    assert "\n  bluesky: {}\n" in text
    added = "".join(f"  {n}: {{}}\n" for n in networks if f"\n  {n}: " not in text)
    path.write_text(text.replace("\n  bluesky: {}\n", "\n  bluesky: {}\n" + added, 1), encoding="utf-8")


def linkedin_config(project: Path, monkeypatch: pytest.MonkeyPatch, **extra: object) -> Config:
    monkeypatch.setenv("LINKEDIN_TOKEN", TOKEN)
    enable_networks(project, "linkedin")
    settings = {"author": ORG, "access_token": "${LINKEDIN_TOKEN}", "retries": 2, "retry_wait": 0.01,
                "max_wait": 5, "timeout": 5, **extra}
    return add_channel(project, NAME, "linkedin", settings)


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:     # the image cache: cleared by conftest
        yield router


def created(urn: str = "urn:li:share:7001") -> httpx.Response:
    return httpx.Response(201, headers={"x-restli-id": urn})


def initialized(upload_url: str = UPLOAD) -> httpx.Response:
    return httpx.Response(200, json={"value": {"uploadUrlExpiresAt": 1700000000000,
                                               "uploadUrl": upload_url, "image": IMAGE_URN}})


def body(route: respx.Route, i: int = 0) -> dict[str, object]:
    return json.loads(route.calls[i].request.content)


send = partial(send_through, name=NAME)
rows = partial(ledger_rows, channel=NAME)


def seed_snippet(config: Config, slug: str = SEED_SLUG) -> Snippet:
    post = next(p for p in load_posts(config).posts if p.slug == slug)
    return snippet(post, "linkedin", config, channel=NAME)


# --- the request ----------------------------------------------------------------------------------

def test_posts_an_article_share_with_the_commentary_and_records_the_urn(project, monkeypatch, mock):
    config = linkedin_config(project, monkeypatch)
    route = mock.post(POSTS).mock(return_value=created("urn:li:share:7001"))
    report = send(config)
    assert (report.sent, report.failed, report.error) == (1, 0, None)
    [call] = route.calls
    request = call.request
    assert request.method == "POST" and str(request.url) == POSTS
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["LinkedIn-Version"] == DEFAULT_VERSION
    assert request.headers["X-Restli-Protocol-Version"] == "2.0.0"
    assert request.headers["Content-Type"] == "application/json"
    s = seed_snippet(config)
    link = "https://www.rtrwellnesscenter.com/?utm_source=li&utm_medium=social&utm_campaign=" + SEED_SLUG
    assert s.link is not None and s.link.uri == link
    assert body(route) == {
        "author": ORG,
        "commentary": commentary(s),
        "visibility": "PUBLIC",
        "distribution": {"feedDistribution": "MAIN_FEED", "targetEntities": [],
                         "thirdPartyDistributionChannels": []},
        "lifecycleState": "PUBLISHED",
        "isReshareDisabledByAuthor": False,
        "content": {"article": {"source": link,
                                "title": "Ketamine’s Potential Ability to Heal Neurological Damage"}},
    }
    text = str(body(route)["commentary"])
    assert text.startswith("Ketamine’s Potential Ability to Heal Neurological Damage\n\nIn recent years, ")
    assert "\n\n{hashtag|\\#|ketamine} {hashtag|\\#|depression} {hashtag|\\#|MentalHealth}\n" in text
    assert text.endswith("\nhttps://www.rtrwellnesscenter.com/?utm\\_source=li&utm\\_medium=social"
                         "&utm\\_campaign=2020-09-01-ketamine-neurological-damage")
    assert len(s.text) > 1000 and s.length <= 3000          # the long form LinkedIn allows
    [row] = rows(config)
    assert (row.status, row.remote_id, row.remote_url) == (
        "sent", "urn:li:share:7001", "https://www.linkedin.com/feed/update/urn:li:share:7001/")


@pytest.mark.parametrize("char", list(RESERVED))
def test_every_reserved_character_is_escaped_with_a_backslash(char):
    assert escape(f"a{char}b") == f"a\\{char}b"
    assert escape(char * 3) == f"\\{char}" * 3


def test_nothing_else_is_escaped():
    plain = "Hello, world! 50% off: a+b=c; 'quoted' \"too\" $5 ^ ` / ? & - . é 日本 \U0001F600"
    assert escape(plain) == plain


def test_commentary_escapes_everything_and_writes_hashtags_as_templates():
    text = ("A (big) [deal] {x} <y> @you *now* _then_ ~so~ a|b back\\slash C# #1 and #ThisTag.\n\n"
            "#MentalHealth #mental_health #cafe\u0301\nhttps://e.com/?a_b=1#frag")
    s = Snippet(network="linkedin", text=text, length=len(text), limit=3000,
                link=Link(start=text.index("https"), end=len(text), uri="https://e.com/?a_b=1#frag"),
                tags=("#MentalHealth",))
    assert commentary(s) == (
        "A \\(big\\) \\[deal\\] \\{x\\} \\<y\\> \\@you \\*now\\* \\_then\\_ \\~so\\~ a\\|b back\\\\slash "
        "C\\# \\#1 and {hashtag|\\#|ThisTag}.\n\n"
        "{hashtag|\\#|MentalHealth} {hashtag|\\#|mental\\_health} {hashtag|\\#|cafe\u0301}\n"
        "https://e.com/?a\\_b=1\\#frag")


def test_reserved_characters_in_a_title_reach_linkedin_escaped(project, monkeypatch, mock, write_post):
    title = "Ketamine (esketamine) & you: [part 1] <new> @clinic *today* _now_ ~soon~ a|b {x} #1 back\\slash"
    write_post("odd.md", "---\ntitle: " + json.dumps(title) + "\ndate: 2024-01-01\ntags: [ketamine]\n---\n"
               "Short body.\n")
    config = linkedin_config(project, monkeypatch)
    route = mock.post(POSTS).mock(return_value=created())
    assert send(config, "odd").sent == 1
    text = str(body(route)["commentary"])
    assert text.startswith("Ketamine \\(esketamine\\) & you: \\[part 1\\] \\<new\\> \\@clinic \\*today\\* "
                           "\\_now\\_ \\~soon\\~ a\\|b \\{x\\} \\#1 back\\\\slash\n\n")
    assert "{hashtag|\\#|ketamine}" in text
    assert body(route)["content"] == {"article": {
        "source": "https://www.rtrwellnesscenter.com/odd/?utm_source=li&utm_medium=social&utm_campaign=odd",
        "title": "Ketamine (esketamine) & you: [part 1] <new> @clinic *today* _now_ ~soon~ a|b {x} #1 "
                 "back\\slash"}}


def test_a_member_author_and_a_configured_version_and_base_url(project, monkeypatch, mock):
    base = "https://li.api.test"
    config = linkedin_config(project, monkeypatch, author="urn:li:person:8675-3_09", version="202601",
                             base_url=base, visibility="CONNECTIONS")
    route = mock.post(f"{base}/rest/posts").mock(return_value=created("urn:li:ugcPost:9"))
    assert send(config).sent == 1
    request = route.calls[0].request
    assert request.headers["LinkedIn-Version"] == "202601"
    assert body(route)["author"] == "urn:li:person:8675-3_09"
    assert body(route)["visibility"] == "CONNECTIONS"
    assert rows(config)[0].remote_id == "urn:li:ugcPost:9"


# --- the image ------------------------------------------------------------------------------------

def test_the_thumbnail_is_uploaded_in_two_steps_then_attached_to_the_article(project, monkeypatch, mock):
    config = linkedin_config(project, monkeypatch)
    picture = jpeg()
    fetch = mock.get(IMAGE_URL).mock(return_value=httpx.Response(
        200, content=picture, headers={"Content-Type": "image/jpeg"}))
    init = mock.post(IMAGES).mock(return_value=initialized())
    put = mock.put(UPLOAD).mock(return_value=httpx.Response(201))
    route = mock.post(POSTS).mock(return_value=created())
    assert send(config, INFUSION).sent == 1
    assert (fetch.call_count, init.call_count, put.call_count, route.call_count) == (1, 1, 1, 1)
    assert "Authorization" not in fetch.calls[0].request.headers        # the token stays with LinkedIn
    request = init.calls[0].request
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["LinkedIn-Version"] == DEFAULT_VERSION
    assert request.headers["X-Restli-Protocol-Version"] == "2.0.0"
    assert parse_qs(urlsplit(str(request.url)).query) == {"action": ["initializeUpload"]}
    assert json.loads(request.content) == {"initializeUploadRequest": {"owner": ORG}}
    upload = put.calls[0].request
    assert upload.content == picture and upload.headers["Content-Type"] == "image/jpeg"
    assert upload.headers["Authorization"] == f"Bearer {TOKEN}"
    assert body(route)["content"] == {"article": {
        "source": f"https://www.rtrwellnesscenter.com/{INFUSION}/?utm_source=li&utm_medium=social"
                  f"&utm_campaign={INFUSION}",
        "title": "Your First Infusion: What to Expect, Step by Step",
        "description": "A first ketamine infusion is calmer than most people expect. Here is how the day "
                       "goes, from check-in to the ride home.",
        "thumbnail": IMAGE_URN}}


def test_attach_posts_the_image_with_its_alt_text(project, monkeypatch, mock):
    config = linkedin_config(project, monkeypatch, image="attach")
    mock.get(IMAGE_URL).mock(return_value=httpx.Response(200, content=jpeg()))
    mock.post(IMAGES).mock(return_value=initialized())
    mock.put(UPLOAD).mock(return_value=httpx.Response(201))
    route = mock.post(POSTS).mock(return_value=created())
    assert send(config, INFUSION).sent == 1
    assert body(route)["content"] == {"media": {"id": IMAGE_URN, "altText": ALT}}
    assert str(body(route)["commentary"]).endswith(f"utm\\_campaign={INFUSION}")    # the link in the text


def test_none_fetches_no_image(project, monkeypatch, mock):
    config = linkedin_config(project, monkeypatch, image="none")
    fetch = mock.get(IMAGE_URL).mock(return_value=httpx.Response(200, content=jpeg()))
    route = mock.post(POSTS).mock(return_value=created())
    assert send(config, INFUSION).sent == 1
    assert fetch.call_count == 0
    assert "thumbnail" not in body(route)["content"]["article"]            # type: ignore[index]


@pytest.mark.parametrize("step", ["fetch", "initialize", "upload", "foreign-upload-url"])
def test_a_failed_thumbnail_posts_without_it_with_a_warning(project, monkeypatch, mock, caplog, step):
    config = linkedin_config(project, monkeypatch)
    mock.get(IMAGE_URL).mock(return_value=httpx.Response(404) if step == "fetch"
                             else httpx.Response(200, content=jpeg()))
    init = mock.post(IMAGES).mock(return_value=(
        httpx.Response(500, json={"message": "Internal error", "status": 500}) if step == "initialize"
        else initialized("https://uploads.example.net/put-here" if step == "foreign-upload-url" else UPLOAD)))
    put = mock.put(url__regex=r".*").mock(return_value=httpx.Response(
        400 if step == "upload" else 201))
    route = mock.post(POSTS).mock(return_value=created())
    with caplog.at_level(logging.WARNING):
        report = send(config, INFUSION)
    assert (report.sent, report.failed) == (1, 0)
    assert "thumbnail" not in body(route)["content"]["article"]            # type: ignore[index]
    assert "without" in caplog.text
    assert put.call_count == (1 if step == "upload" else 0)
    assert init.call_count == (0 if step == "fetch" else 1)
    assert TOKEN not in caplog.text


# --- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("reply", "status", "words"), [
    (httpx.Response(401, json={"message": "Invalid access token", "status": 401}), "failed",
     ["401 unauthorized", "access token", "update the environment"]),
    (httpx.Response(403, json={"message": "Not enough permissions to access: partnerApiPostsExternal.CREATE",
                               "status": 403}), "failed", ["403 forbidden", "w_organization_social"]),
    (httpx.Response(422, json={"message": "ERROR :: /commentary :: length 3100 exceeds 3000",
                               "status": 422}), "failed", ["422", "/commentary", "exceeds 3000"]),
], ids=["401", "403", "422"])
def test_refusals_fail_with_what_to_fix(project, monkeypatch, mock, reply, status, words):
    config = linkedin_config(project, monkeypatch)
    route = mock.post(POSTS).mock(return_value=reply)
    report = send(config)
    assert (report.sent, report.failed, route.call_count) == (0, 1, 1)
    [row] = rows(config)
    assert row.status == status
    for word in words:
        assert word in (row.last_error or ""), word
    assert TOKEN not in (row.last_error or "") and TOKEN not in " ".join(report.errors)


def test_a_sunset_version_stops_the_channel_naming_the_key(project, monkeypatch, mock):
    config = linkedin_config(project, monkeypatch)
    route = mock.post(POSTS).mock(return_value=httpx.Response(
        426, json={"message": "Requested version 20241001 is not active", "status": 426}))
    report = send(config)
    assert (report.sent, route.call_count) == (0, 1)
    for word in ["426", f"version {DEFAULT_VERSION}", f"channels.{NAME}.version", "YYYYMM"]:
        assert word in str(report.error), word
    assert rows(config)[0].status == "pending"            # sent once the version is set


def test_a_retried_post_uploads_its_image_once(project, monkeypatch, mock):
    config = linkedin_config(project, monkeypatch)
    mock.get(IMAGE_URL).mock(return_value=httpx.Response(200, content=jpeg()))
    init = mock.post(IMAGES).mock(return_value=initialized())
    put = mock.put(UPLOAD).mock(return_value=httpx.Response(201))
    route = mock.post(POSTS).mock(side_effect=[httpx.Response(502), created()])
    assert send(config, INFUSION).sent == 1
    assert (init.call_count, put.call_count, route.call_count) == (1, 1, 2)
    assert body(route, 1)["content"]["article"]["thumbnail"] == IMAGE_URN     # type: ignore[index]


def test_rate_limit_within_max_wait_is_waited_out(project, monkeypatch, mock):
    config = linkedin_config(project, monkeypatch)
    route = mock.post(POSTS).mock(side_effect=[
        httpx.Response(429, headers={"Retry-After": "1"}, json={"message": "Too many requests"}),
        created("urn:li:share:8")])
    report = send(config)
    assert (report.sent, report.deferred, route.call_count) == (1, 0, 2)
    assert rows(config)[0].remote_id == "urn:li:share:8"


def test_rate_limit_beyond_max_wait_leaves_the_row_pending(project, monkeypatch, mock):
    config = linkedin_config(project, monkeypatch)
    route = mock.post(POSTS).mock(return_value=httpx.Response(429, headers={"Retry-After": "3600"}))
    report = send(config)
    assert (report.sent, report.deferred, report.failed, route.call_count) == (0, 1, 0, 1)
    [row] = rows(config)
    assert row.status == "pending" and "rate limited (429)" in (row.last_error or "")


def test_server_error_and_refused_connection_are_retried(project, monkeypatch, mock):
    config = linkedin_config(project, monkeypatch)
    route = mock.post(POSTS).mock(side_effect=[httpx.Response(503, text="unavailable"),
                                               httpx.ConnectError("refused"), created("urn:li:share:9")])
    assert send(config).sent == 1
    assert route.call_count == 3


def test_no_answer_is_unknown_and_never_resent(project, monkeypatch, mock):
    config = linkedin_config(project, monkeypatch)
    route = mock.post(POSTS).mock(side_effect=httpx.ReadTimeout("timed out"))
    report = send(config)
    assert (report.sent, report.unknown, route.call_count) == (0, 1, 1)
    assert rows(config)[0].status == "unknown"
    assert (send(config).total, route.call_count) == (0, 1)


def test_a_reply_without_the_post_urn_is_unknown(project, monkeypatch, mock):
    config = linkedin_config(project, monkeypatch)
    mock.post(POSTS).mock(return_value=httpx.Response(201))
    assert send(config).unknown == 1
    assert "x-restli-id" in (rows(config)[0].last_error or "")


def test_a_thread_fails_before_anything_is_posted(project, monkeypatch, mock, write_post):
    write_post("story.md", thread_post(400))
    config = linkedin_config(project, monkeypatch)
    route = mock.post(POSTS).mock(return_value=created())
    report = send(config, "story")
    assert report.sent == 0 and route.call_count == 0
    first = min(rows(config), key=lambda r: r.part)
    assert first.part == 1 and first.status == "failed" and "no threads" in (first.last_error or "")


# --- the ledger, the token ------------------------------------------------------------------------

def test_publishing_twice_sends_once(project, monkeypatch, mock):
    config = linkedin_config(project, monkeypatch)
    route = mock.post(POSTS).mock(return_value=created())
    [first] = publish(config, slugs=[SEED_SLUG], channels=[NAME])
    [again] = publish(config, slugs=[SEED_SLUG], channels=[NAME])
    assert (first.sent, again.total, again.sent, again.already_sent) == (1, 0, 0, 1)
    assert route.call_count == 1


@pytest.mark.parametrize("reply", [
    httpx.Response(401, text=f"bad token {TOKEN}"),
    httpx.Response(500, json={"message": f"echo Bearer {TOKEN}"}),
    httpx.ConnectError("refused"),
    httpx.ReadTimeout("no answer"),
], ids=["401-echoing-token", "500-echoing-token", "connect-error", "read-timeout"])
def test_the_token_appears_in_no_log_no_error_and_no_ledger_row(project, monkeypatch, mock, caplog, reply):
    config = linkedin_config(project, monkeypatch, retries=0)
    mock.post(POSTS).mock(side_effect=[reply] * 4)
    with caplog.at_level(logging.DEBUG):
        report = send(config)
    assert report.sent == 0
    [row] = rows(config)
    shown = " ".join([*report.errors, str(report.error), repr(row), caplog.text])
    assert row.last_error and TOKEN not in shown
    db = config.path(config.state)
    assert TOKEN.encode() not in b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


@pytest.mark.parametrize(("key", "value", "words"), [
    ("author", "urn:li:company:123", "author"),
    ("author", "urn:li:organization:abc", "author"),
    ("version", "2024-10", "version"),
    ("visibility", "FRIENDS", "visibility"),
])
def test_bad_settings_name_the_key_and_never_the_token(project, monkeypatch, key, value, words):
    config = linkedin_config(project, monkeypatch, **{key: value})
    report = send(config)
    assert report.error is not None and f"channels.{NAME}.{words}" in report.error
    assert TOKEN not in report.error
    if key == "author":
        assert "urn:li:person:<id>" in report.error and "urn:li:organization:<number>" in report.error


def test_connections_only_is_refused_for_an_organization(project, monkeypatch):
    config = linkedin_config(project, monkeypatch, visibility="CONNECTIONS")
    with pytest.raises(ConfigError, match="organization"):
        from pipeline.channels.registry import build_channel
        build_channel(config, NAME)
