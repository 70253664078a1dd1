"""The Mastodon channel: the exact requests Mastodon.py sends (intercepted with `responses`), the
Idempotency-Key that makes a resend harmless, the instance's character limit, threads, and what
each kind of failure leaves in the ledger."""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import io
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from urllib.parse import parse_qs

import PIL.Image
import pytest
import requests
import responses
import respx
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from pipeline.channels import images
from pipeline.config import Config
from pipeline.intake.posts import load_posts
from pipeline.models import Snippet
from pipeline.render.social import snippet, thread
from tests.conftest import SEED_SLUG, add_channel, ledger_rows, send_through, thread_post

NAME = "toots"
BASE = "https://social.example"
STATUSES = f"{BASE}/api/v1/statuses"
INSTANCE_V2 = f"{BASE}/api/v2/instance/"
INSTANCE_V1 = f"{BASE}/api/v1/instance/"
TOKEN = "mastodon-very-secret-token"


def mastodon_config(project: Path, monkeypatch: pytest.MonkeyPatch, **extra: object) -> Config:
    monkeypatch.setenv("MASTODON_TOKEN", TOKEN)
    settings = {"base_url": BASE, "access_token": "${MASTODON_TOKEN}", "retries": 2,
                "retry_wait": 0.01, "max_wait": 5, "timeout": 5, **extra}
    return add_channel(project, NAME, "mastodon", settings)


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def instance(mock: responses.RequestsMock, max_characters: int = 500) -> None:
    mock.get(INSTANCE_V2, json={"domain": "social.example", "title": "Social",
                                "configuration": {"statuses": {"max_characters": max_characters,
                                                               "max_media_attachments": 4}}})


def created(status_id: str) -> dict[str, object]:
    return {"status": 200, "json": {"id": status_id, "uri": f"{BASE}/users/rtr/statuses/{status_id}",
                                    "url": f"{BASE}/@rtr/{status_id}", "content": "<p>…</p>",
                                    "created_at": "2024-01-01T12:00:00.000Z", "visibility": "public"}}


send = partial(send_through, name=NAME)
rows = partial(ledger_rows, channel=NAME)


def snippets(config: Config, slug: str = SEED_SLUG) -> list[Snippet]:
    """The snippets the orchestrator hands the channel: rendered for it (utm_source=<channel>)."""
    post = next(p for p in load_posts(config).posts if p.slug == slug)
    return list(thread(post, "mastodon", config, channel=NAME) if post.thread
                else (snippet(post, "mastodon", config, channel=NAME),))


def posts(mock: responses.RequestsMock) -> list[responses.Call]:
    return [c for c in mock.calls if c.request.method == "POST"]


def form(call: responses.Call) -> dict[str, str]:
    body = call.request.body
    fields = parse_qs(body.decode() if isinstance(body, bytes) else body, strict_parsing=True)
    return {k: v[0] for k, v in fields.items()}


def key_of(delivery_key: str) -> str:
    return hashlib.sha256(delivery_key.encode()).hexdigest()[:32]


def test_posts_the_status_with_bearer_token_and_idempotency_key(project, monkeypatch, mock):
    config = mastodon_config(project, monkeypatch)
    instance(mock)
    mock.post(STATUSES, **created("110000000000000001"))
    report = send(config)
    assert (report.sent, report.failed, report.error) == (1, 0, None)
    [read, call] = mock.calls
    assert (read.request.method, read.request.url) == ("GET", INSTANCE_V2)
    assert call.request.method == "POST" and call.request.url == STATUSES
    [row] = rows(config)
    assert call.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert call.request.headers["Idempotency-Key"] == key_of(row.key)
    assert call.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    [text] = [s.text for s in snippets(config)]
    assert f"utm_source={NAME}" in text
    assert form(call) == {"status": text, "visibility": "public", "language": "en", "sensitive": "0"}
    assert (row.status, row.remote_id) == ("sent", "110000000000000001")
    assert row.remote_url == f"{BASE}/@rtr/110000000000000001"


def test_visibility_and_language_settings_are_sent(project, monkeypatch, mock):
    config = mastodon_config(project, monkeypatch, visibility="unlisted", language="FR")
    instance(mock)
    mock.post(STATUSES, **created("2"))
    assert send(config).sent == 1
    [call] = posts(mock)
    assert (form(call)["visibility"], form(call)["language"]) == ("unlisted", "fr")


def test_the_idempotency_key_is_deterministic_and_differs_per_delivery(project, monkeypatch, mock):
    from pipeline.channels.mastodon import idempotency_key

    assert idempotency_key("toots:slug:mastodon") == idempotency_key("toots:slug:mastodon")
    assert idempotency_key("toots:slug:mastodon") != idempotency_key("toots:slug:mastodon:2")
    assert len(idempotency_key("k")) == 32


def test_read_timeout_is_retried_with_the_same_idempotency_key(project, monkeypatch, mock):
    config = mastodon_config(project, monkeypatch)
    instance(mock)
    mock.post(STATUSES, body=requests.ReadTimeout("read timed out"))
    mock.post(STATUSES, **created("3"))
    report = send(config)
    assert (report.sent, report.unknown, report.failed) == (1, 0, 0)
    first, second = posts(mock)
    [row] = rows(config)
    assert first.request.headers["Idempotency-Key"] == second.request.headers["Idempotency-Key"] == \
        key_of(row.key)
    assert form(first) == form(second)
    assert (row.status, row.remote_id, row.attempts) == ("sent", "3", 1)


def test_a_snippet_longer_than_the_instances_limit_fails_before_posting(project, monkeypatch, mock):
    config = mastodon_config(project, monkeypatch)
    [part] = snippets(config)
    instance(mock, max_characters=part.length - 1)
    report = send(config)
    assert (report.sent, report.failed) == (0, 1)
    assert posts(mock) == []
    [row] = rows(config)
    error = row.last_error or ""
    assert row.status == "failed"
    assert f"{part.length} characters" in error and f"at most {part.length - 1}" in error
    assert "networks.mastodon.limit" in error


def test_the_limit_is_read_from_v1_when_the_server_has_no_v2(project, monkeypatch, mock):
    config = mastodon_config(project, monkeypatch)
    [part] = snippets(config)
    mock.get(INSTANCE_V2, status=404, json={"error": "Record not found"})
    mock.get(INSTANCE_V1, json={"uri": "social.example", "title": "Social",
                                "configuration": {"statuses": {"max_characters": part.length - 1}}})
    send(config)
    assert [c.request.url for c in mock.calls] == [INSTANCE_V2, INSTANCE_V1]
    assert f"at most {part.length - 1}" in (rows(config)[0].last_error or "")


def test_the_configured_limit_applies_when_the_instance_does_not_say(project, monkeypatch, mock):
    config = mastodon_config(project, monkeypatch, limit=100)
    mock.get(INSTANCE_V2, status=500, json={"error": "oops"})
    report = send(config)
    assert (report.failed, posts(mock)) == (1, [])
    assert "at most 100" in (rows(config)[0].last_error or "")


def test_thread_parts_reply_to_the_previous_part_in_order(project, monkeypatch, mock, write_post):
    write_post("thread.md", thread_post(80))
    config = mastodon_config(project, monkeypatch)
    texts = [s.text for s in snippets(config, "thread")]
    assert len(texts) >= 3
    instance(mock)
    for i in range(len(texts)):
        mock.post(STATUSES, **created(f"100{i}"))
    report = send(config, "thread")
    assert (report.sent, report.failed) == (len(texts), 0)
    sent = [form(c) for c in posts(mock)]
    assert [s["status"] for s in sent] == texts
    assert "in_reply_to_id" not in sent[0]
    assert [s["in_reply_to_id"] for s in sent[1:]] == [f"100{i}" for i in range(len(texts) - 1)]
    keys = [c.request.headers["Idempotency-Key"] for c in posts(mock)]
    assert len(set(keys)) == len(texts)
    assert [c.request.url for c in mock.calls if c.request.method == "GET"] == [INSTANCE_V2]   # once
    assert sorted((r.part, r.remote_id) for r in rows(config)) == [(i + 1, f"100{i}")
                                                                   for i in range(len(texts))]


def test_rate_limit_resetting_within_max_wait_is_waited_out(project, monkeypatch, mock):
    config = mastodon_config(project, monkeypatch, max_wait=5)
    instance(mock)
    reset = time.time() + 1
    mock.post(STATUSES, status=429, json={"error": "Too many requests"},
              headers={"X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "0",
                       "X-RateLimit-Reset": datetime.fromtimestamp(reset, UTC).isoformat()})
    mock.post(STATUSES, **created("7"))
    report = send(config)
    assert (report.sent, report.deferred) == (1, 0)
    assert len(posts(mock)) == 2
    assert time.time() >= reset - 0.1
    assert rows(config)[0].remote_id == "7"


def test_rate_limit_resetting_beyond_max_wait_leaves_the_row_pending(project, monkeypatch, mock):
    config = mastodon_config(project, monkeypatch, max_wait=5)
    instance(mock)
    reset = datetime.fromtimestamp(time.time() + 3600, UTC).isoformat().replace("+00:00", "Z")
    mock.post(STATUSES, status=429, json={"error": "Too many requests"},
              headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset})
    report = send(config)
    assert (report.sent, report.deferred, report.failed) == (0, 1, 0)
    assert len(posts(mock)) == 1
    [row] = rows(config)
    assert row.status == "pending" and row.next_attempt_at is not None
    assert (row.next_attempt_at - datetime.now(UTC)).total_seconds() > 3000
    assert "rate limited (429)" in (row.last_error or "")


def test_server_error_is_retried_then_sent(project, monkeypatch, mock):
    config = mastodon_config(project, monkeypatch)
    instance(mock)
    mock.post(STATUSES, status=503, body="<html>Service Unavailable</html>")
    mock.post(STATUSES, **created("8"))
    report = send(config)
    assert (report.sent, report.failed) == (1, 0)
    assert len(posts(mock)) == 2
    assert rows(config)[0].remote_id == "8"


def test_connection_refused_is_retried(project, monkeypatch, mock):
    config = mastodon_config(project, monkeypatch)
    instance(mock)
    refused = requests.ConnectionError(MaxRetryError(None, STATUSES, NewConnectionError(None, "refused")))
    mock.post(STATUSES, body=refused)
    mock.post(STATUSES, **created("9"))
    assert send(config).sent == 1
    assert len(posts(mock)) == 2


def test_connection_dropped_mid_exchange_is_retried_with_the_same_key(project, monkeypatch, mock):
    config = mastodon_config(project, monkeypatch)
    instance(mock)
    mock.post(STATUSES, body=requests.ConnectionError(ProtocolError("Connection aborted.")))
    mock.post(STATUSES, **created("12"))
    report = send(config)
    assert (report.sent, report.unknown) == (1, 0)
    first, second = posts(mock)
    assert first.request.headers["Idempotency-Key"] == second.request.headers["Idempotency-Key"]


def test_unauthorized_fails_naming_the_token_and_never_the_secret(project, monkeypatch, mock):
    config = mastodon_config(project, monkeypatch)
    instance(mock)
    mock.post(STATUSES, status=401, json={"error": "The access token is invalid"})
    report = send(config)
    assert (report.sent, report.failed) == (0, 1)
    assert len(posts(mock)) == 1
    [row] = rows(config)
    error = row.last_error or ""
    assert row.status == "failed"
    assert "401 unauthorized" in error and "access token" in error and "update the environment" in error
    assert "The access token is invalid" in error
    assert TOKEN not in error and TOKEN not in " ".join(report.errors)


def test_forbidden_names_the_write_scope(project, monkeypatch, mock):
    config = mastodon_config(project, monkeypatch)
    instance(mock)
    mock.post(STATUSES, status=403, json={"error": "This action is outside the authorized scopes"})
    send(config)
    [row] = rows(config)
    assert row.status == "failed" and "403 forbidden" in (row.last_error or "")
    assert "write:statuses" in (row.last_error or "")


def test_validation_error_fails_with_the_servers_message_without_retry(project, monkeypatch, mock):
    config = mastodon_config(project, monkeypatch)
    instance(mock)
    mock.post(STATUSES, status=422, json={"error": "Validation failed: Text character limit of 500 exceeded"})
    report = send(config)
    assert (report.failed, len(posts(mock))) == (1, 1)
    assert "422: Validation failed" in (rows(config)[0].last_error or "")


def test_second_publish_sends_nothing(project, monkeypatch, mock):
    config = mastodon_config(project, monkeypatch)
    instance(mock)
    mock.post(STATUSES, **created("10"))
    send(config)
    calls = len(mock.calls)
    again = send(config)
    assert (again.total, again.sent, again.already_sent) == (0, 0, 1)
    assert len(mock.calls) == calls


INFUSION = "2024-03-12-your-first-infusion"
IMAGE_URL = "https://www.rtrwellnesscenter.com/images/infusion-room.jpg"
ALT = "A quiet treatment room with a reclining chair, a blanket and soft window light"
MEDIA = f"{BASE}/api/v2/media"


def photo(size: tuple[int, int] = (640, 480)) -> bytes:
    out = io.BytesIO()
    PIL.Image.new("RGB", size, "teal").save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture
def site() -> Iterator[respx.MockRouter]:
    """The blog's web server (httpx, for the image fetch), with a fresh image cache."""
    images.cache_clear()
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        yield router
    images.cache_clear()


def media_instance(mock: responses.RequestsMock, **media: object) -> None:
    """An instance document with media limits; Mastodon.py also reads v1 for the version."""
    v2 = {"domain": "social.example", "version": "4.3.0", "api_versions": {"mastodon": 2},
          "configuration": {"statuses": {"max_characters": 500, "max_media_attachments": 4},
                            "media_attachments": media}}
    mock.get(INSTANCE_V2, json=v2)
    mock.get(INSTANCE_V1, json={"uri": "social.example", "version": "4.3.0"})


def uploaded(media_id: str) -> dict[str, object]:
    return {"status": 200, "json": {"id": media_id, "type": "image", "url": f"{BASE}/m/{media_id}.jpg",
                                    "description": ALT}}


def multipart(call: responses.Call) -> email.message.Message:
    """The parsed multipart/form-data body of an upload."""
    head = f"Content-Type: {call.request.headers['Content-Type']}\r\n\r\n".encode()
    return email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + call.request.body)


def parts(call: responses.Call) -> dict[str, tuple[str | None, bytes]]:
    """name -> (content type, bytes) of each form field."""
    return {part.get_param("name", header="content-disposition"):
            (part.get_content_type(), part.get_payload(decode=True)) for part in multipart(call).iter_parts()}


def test_the_image_is_uploaded_with_its_alt_and_attached_to_the_status(project, monkeypatch, mock, site):
    config = mastodon_config(project, monkeypatch)
    data = photo()
    site.get(IMAGE_URL).respond(200, content=data, headers={"Content-Type": "image/jpeg"})
    media_instance(mock, image_size_limit=16777216, image_matrix_limit=33177600,
                   supported_mime_types=["image/jpeg", "image/png"])
    mock.post(MEDIA, **uploaded("901"))
    mock.post(STATUSES, **created("11"))
    assert send(config, INFUSION).sent == 1
    upload, status = posts(mock)
    assert upload.request.url == MEDIA and status.request.url == STATUSES
    assert upload.request.headers["Authorization"] == f"Bearer {TOKEN}"
    fields = parts(upload)
    assert fields["description"] == ("text/plain", ALT.encode())
    assert fields["file"] == ("image/jpeg", data)        # fits as it is: sent byte for byte
    assert form(status)["media_ids[]"] == "901"
    [row] = rows(config)
    assert status.request.headers["Idempotency-Key"] == key_of(row.key)


def test_the_image_is_fitted_to_the_instances_media_limits(project, monkeypatch, mock, site):
    config = mastodon_config(project, monkeypatch)
    site.get(IMAGE_URL).respond(200, content=photo((1600, 1200)), headers={"Content-Type": "image/jpeg"})
    media_instance(mock, image_matrix_limit=640000, supported_mime_types=["image/jpeg"])   # 800 x 800
    mock.post(MEDIA, **uploaded("902"))
    mock.post(STATUSES, **created("12"))
    assert send(config, INFUSION).sent == 1
    mime, data = parts(posts(mock)[0])["file"]
    with PIL.Image.open(io.BytesIO(data)) as im:
        assert (mime, im.size) == ("image/jpeg", (800, 600))


def test_a_retried_status_reuses_the_uploaded_media_and_its_idempotency_key(project, monkeypatch, mock,
                                                                          site):
    config = mastodon_config(project, monkeypatch)
    site.get(IMAGE_URL).respond(200, content=photo(), headers={"Content-Type": "image/jpeg"})
    media_instance(mock)
    mock.post(MEDIA, **uploaded("903"))
    mock.post(STATUSES, body=requests.ReadTimeout("no answer"))
    mock.post(STATUSES, **created("13"))
    assert send(config, INFUSION).sent == 1
    upload, first, second = posts(mock)
    assert upload.request.url == MEDIA
    assert form(first) == form(second) and form(second)["media_ids[]"] == "903"
    assert first.request.headers["Idempotency-Key"] == second.request.headers["Idempotency-Key"]
    assert len(site.calls) == 1


def test_a_refused_upload_posts_the_status_without_the_image(project, monkeypatch, mock, site, caplog):
    config = mastodon_config(project, monkeypatch)
    site.get(IMAGE_URL).respond(200, content=photo(), headers={"Content-Type": "image/jpeg"})
    media_instance(mock)
    mock.post(MEDIA, status=403, json={"error": "This action is outside the authorized scopes"})
    mock.post(STATUSES, **created("14"))
    with caplog.at_level(logging.WARNING):
        assert send(config, INFUSION).sent == 1
    assert "media_ids[]" not in form(posts(mock)[-1])
    assert "lacks the write:media scope" in caplog.text and IMAGE_URL in caplog.text
    assert TOKEN not in caplog.text


def test_an_upload_server_error_retries_the_delivery(project, monkeypatch, mock, site):
    config = mastodon_config(project, monkeypatch)
    site.get(IMAGE_URL).respond(200, content=photo(), headers={"Content-Type": "image/jpeg"})
    media_instance(mock)
    mock.post(MEDIA, status=503, json={"error": "busy"})
    mock.post(MEDIA, **uploaded("905"))
    mock.post(STATUSES, **created("15"))
    assert send(config, INFUSION).sent == 1
    assert [c.request.url for c in posts(mock)] == [MEDIA, MEDIA, STATUSES]
    assert form(posts(mock)[-1])["media_ids[]"] == "905"


def test_an_image_that_cannot_be_fetched_is_left_out(project, monkeypatch, mock, site, caplog):
    config = mastodon_config(project, monkeypatch)
    site.get(IMAGE_URL).respond(200, text="<html>moved</html>", headers={"Content-Type": "image/jpeg"})
    instance(mock)
    mock.post(STATUSES, **created("16"))
    with caplog.at_level(logging.WARNING):
        assert send(config, INFUSION).sent == 1
    assert [c.request.url for c in posts(mock)] == [STATUSES]
    assert f"the image {IMAGE_URL} is not an image" in caplog.text


@pytest.mark.parametrize("mode", ["card", "none"])
def test_card_and_none_upload_nothing(project, monkeypatch, mock, site, mode):
    config = mastodon_config(project, monkeypatch, image=mode)
    instance(mock)
    mock.post(STATUSES, **created("17"))
    assert send(config, INFUSION).sent == 1
    assert [c.request.url for c in mock.calls] == [INSTANCE_V2, STATUSES]
    assert "media_ids[]" not in form(posts(mock)[0])
    assert len(site.calls) == 0


def test_a_thread_carries_the_image_on_its_first_part_only(project, monkeypatch, mock, site, write_post):
    write_post("thread.md", thread_post(80).replace(
        "social: {thread: true}", f"social: {{thread: true}}\nimage: {IMAGE_URL}\nimage_alt: {ALT}"))
    config = mastodon_config(project, monkeypatch)
    site.get(IMAGE_URL).respond(200, content=photo(), headers={"Content-Type": "image/jpeg"})
    media_instance(mock)
    mock.post(MEDIA, **uploaded("906"))
    count = len(snippets(config, "thread"))
    for i in range(count):
        mock.post(STATUSES, **created(f"200{i}"))
    assert send(config, "thread").sent == count
    statuses = [form(c) for c in posts(mock) if c.request.url == STATUSES]
    assert [s.get("media_ids[]") for s in statuses] == ["906"] + [None] * (count - 1)
    assert [c.request.url for c in posts(mock)].count(MEDIA) == 1
