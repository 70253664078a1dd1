"""The Bluesky channel against a mocked PDS (respx intercepts the httpx requests atproto sends):
the exact createSession / createRecord / uploadBlob requests, facets, rkeys, threads, faults."""

from __future__ import annotations

import base64
import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import PIL.Image
import pytest
import respx
from atproto_client.models.string_formats import TID_RE

from pipeline.channels import images
from pipeline.channels.bluesky import TID_ALPHABET, facets, record_key, tid
from pipeline.config import Config, load_config
from pipeline.models import Link, Status
from tests.conftest import SEED_SLUG, ledger_rows, send_through

NAME = "bluesky"
BASE = "https://pds.test"
HANDLE = "news.example.com"
DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
SECRET = "abcd-efgh-ijkl-mnop"
XRPC = f"{BASE}/xrpc"
SEED_TEXT = ("Ketamine’s Potential Ability to Heal Neurological Damage\n\nIn recent years, ketamine has been "
             "shown to possess capabilities as an extraordinarily effective treatment for a variety of "
             "conditions and symptoms.\n\n#ketamine #depression #MentalHealth\nrtrwellnesscenter.com")
SEED_URL = ("https://www.rtrwellnesscenter.com/?utm_source=bluesky&utm_medium=social"
            "&utm_campaign=2020-09-01-ketamine-neurological-damage")
SEED_TITLE = "Ketamine’s Potential Ability to Heal Neurological Damage"
INFUSION = "2024-03-12-your-first-infusion"
THREAD = "2024-06-01-breathing"


def _jwt(**claims: object) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'typ': 'at+jwt', 'alg': 'ES256K'})}.{part(claims)}.c2lnbmF0dXJl"


ACCESS_JWT = _jwt(scope="com.atproto.appPass", sub=DID, exp=int(time.time()) + 7200)
REFRESH_JWT = _jwt(scope="com.atproto.refresh", sub=DID, exp=int(time.time()) + 86400)


def bsky_config(project: Path, monkeypatch: pytest.MonkeyPatch, **extra: object) -> Config:
    monkeypatch.setenv("BSKY_APP_PASSWORD", SECRET)
    settings = {"base_url": BASE, "handle": HANDLE, "app_password": "${BSKY_APP_PASSWORD}",
                "retries": 2, "retry_wait": 0.01, "timeout": 5, "max_wait": 3, **extra}
    path = project / "config.yaml"
    lines = [f"  {NAME}:", "    type: bluesky", *(f"    {k}: {v}" for k, v in settings.items())]
    path.write_text(path.read_text(encoding="utf-8") + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return load_config(path)


def _cid(rkey: str) -> str:
    return f"bafyreih{rkey}"


def _created(request: httpx.Request) -> httpx.Response:
    """The PDS's answer to a createRecord: the record's uri and cid."""
    rkey = json.loads(request.content)["rkey"]
    return httpx.Response(200, json={"uri": f"at://{DID}/app.bsky.feed.post/{rkey}", "cid": _cid(rkey),
                                     "commit": {"cid": "bafyreicommit", "rev": "3l5commitrev2a"},
                                     "validationStatus": "valid"})


def script(*first: httpx.Response | Exception) -> Callable[[httpx.Request], httpx.Response]:
    """A createRecord side effect: the given answers (or exceptions) in turn, then successes."""
    queue = list(first)

    def answer(request: httpx.Request) -> httpx.Response:
        if queue:
            item = queue.pop(0)
            if isinstance(item, Exception):
                raise item
            return item
        return _created(request)

    return answer


@pytest.fixture
def pds() -> Iterator[respx.MockRouter]:
    """A PDS: login succeeds, createRecord creates, getRecord finds nothing. No other request
    (and no real network) is allowed. The image cache starts empty."""
    images.cache_clear()
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        mock.post(f"{XRPC}/com.atproto.server.createSession", name="login").respond(
            200, json={"did": DID, "handle": HANDLE, "accessJwt": ACCESS_JWT, "refreshJwt": REFRESH_JWT,
                       "email": "news@example.com", "active": True})
        mock.post(f"{XRPC}/com.atproto.repo.createRecord", name="create").mock(side_effect=_created)
        mock.get(f"{XRPC}/com.atproto.repo.getRecord", name="get").respond(
            400, json={"error": "RecordNotFound", "message": "Could not locate record"})
        yield mock
    images.cache_clear()


send = partial(send_through, name=NAME)
rows = partial(ledger_rows, channel=NAME)


def bodies(pds: respx.MockRouter, route: str = "create") -> list[dict[str, Any]]:
    return [json.loads(call.request.content) for call in pds.routes[route].calls]


def decode_tid(value: str) -> tuple[int, int]:
    number = 0
    for ch in value:
        number = number * 32 + TID_ALPHABET.index(ch)
    return number >> 10, number & 1023


# The pure parts: facets and record keys


def test_facets_use_utf8_byte_offsets_after_emoji_and_accents():
    text = "Café ☕ 😀 résumé — read: example.com/x... #Ketamine #MentalHealth\nnaïve #Ketamine2 #Ketamine"
    start = text.index("example.com")
    link = Link(start=start, end=start + len("example.com/x..."),
                uri="https://www.example.com/x/long/path/?utm_source=bluesky&utm_medium=social")
    found = facets(text, link, ("#Ketamine", "#MentalHealth"))
    raw = text.encode("utf-8")
    sliced = [raw[f["index"]["byteStart"]:f["index"]["byteEnd"]].decode("utf-8") for f in found]
    assert sliced == ["example.com/x...", "#Ketamine", "#MentalHealth", "#Ketamine"]
    assert [f["features"] for f in found] == [
        [{"$type": "app.bsky.richtext.facet#link", "uri": link.uri}],
        [{"$type": "app.bsky.richtext.facet#tag", "tag": "Ketamine"}],
        [{"$type": "app.bsky.richtext.facet#tag", "tag": "MentalHealth"}],
        [{"$type": "app.bsky.richtext.facet#tag", "tag": "Ketamine"}]]
    # Byte offsets, not character offsets: "é", "☕", "😀", "—" take 2, 3, 4 and 3 bytes.
    assert found[0]["index"] == {"byteStart": start + 1 + 2 + 3 + 1 + 3,
                                 "byteEnd": start + 10 + len("example.com/x...")}


def test_facets_without_link_or_tags_and_not_inside_the_link():
    assert facets("Just text #NotATag", None, ()) == []
    text = "see example.com/#Tag"
    link = Link(start=4, end=len(text), uri="https://example.com/#Tag")
    assert [f["features"][0]["$type"] for f in facets(text, link, ("#Tag",))] == \
        ["app.bsky.richtext.facet#link"]


def test_record_key_is_a_deterministic_tid_from_the_date_and_the_key():
    date = datetime(2020, 9, 1, 4, 0, tzinfo=UTC)
    key = f"{NAME}:{SEED_SLUG}:bluesky"
    rkey = record_key(key, date, 0)
    assert rkey == record_key(key, date, 0) and len(rkey) == 13 and TID_RE.match(rkey)
    micros, clock = decode_tid(rkey)
    base = (date - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert base <= micros < base + 1_000_000 and micros % 1000 == 0 and 0 <= clock < 1024
    assert record_key(f"{key}:2", date, 2) != rkey and record_key("other:key", date, 0) != rkey
    # A thread's parts share the hashed offset, so their rkeys sort in the parts' order.
    parts = [record_key(key, date, 1), *(record_key(f"{key}:{n}", date, n, thread=key) for n in (2, 3))]
    assert all(TID_RE.match(p) for p in parts) and parts == sorted(parts) and len(set(parts)) == 3
    assert [decode_tid(p)[0] - decode_tid(parts[0])[0] for p in parts] == [0, 1, 2]
    assert tid(0, 0) == "2222222222222" and decode_tid(tid(2**53 - 1, 1023)) == (2**53 - 1, 1023)


# Through the orchestrator


def test_posts_the_exact_record_and_records_uri_cid_and_url(project, monkeypatch, pds):
    config = bsky_config(project, monkeypatch)
    before = datetime.now(UTC)
    report = send(config)
    assert (report.sent, report.failed, report.error) == (1, 0, None)

    [login] = pds.routes["login"].calls
    assert json.loads(login.request.content) == {"identifier": HANDLE, "password": SECRET}
    [call] = pds.routes["create"].calls
    assert call.request.headers["Authorization"] == f"Bearer {ACCESS_JWT}"
    assert call.request.headers["Content-Type"] == "application/json"
    body = json.loads(call.request.content)
    created = datetime.fromisoformat(body["record"].pop("createdAt").replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= created <= datetime.now(UTC)
    rkey = record_key(f"{NAME}:{SEED_SLUG}:bluesky", datetime(2020, 9, 1, 4, tzinfo=UTC), 0)
    assert TID_RE.match(body["rkey"]) and body["rkey"] == rkey

    def facet(start: int, end: int, feature: dict[str, str]) -> dict[str, Any]:
        return {"$type": "app.bsky.richtext.facet", "features": [feature],
                "index": {"$type": "app.bsky.richtext.facet#byteSlice", "byteStart": start, "byteEnd": end}}

    def tag(name: str) -> dict[str, str]:
        return {"$type": "app.bsky.richtext.facet#tag", "tag": name}

    assert body == {
        "repo": DID, "collection": "app.bsky.feed.post", "rkey": rkey,
        "record": {
            "$type": "app.bsky.feed.post", "text": SEED_TEXT, "langs": ["en"],
            "facets": [facet(210, 219, tag("ketamine")), facet(220, 231, tag("depression")),
                       facet(232, 245, tag("MentalHealth")),
                       facet(246, 267, {"$type": "app.bsky.richtext.facet#link", "uri": SEED_URL})],
            "embed": {"$type": "app.bsky.embed.external",
                      "external": {"$type": "app.bsky.embed.external#external", "uri": SEED_URL,
                                   "title": SEED_TITLE, "description": ""}}}}
    raw = SEED_TEXT.encode("utf-8")
    assert raw[246:267] == b"rtrwellnesscenter.com" and raw[232:245] == b"#MentalHealth"

    [row] = rows(config)
    assert row.status == Status.SENT
    assert row.remote_id == f"at://{DID}/app.bsky.feed.post/{rkey} {_cid(rkey)}"
    assert row.remote_url == f"https://bsky.app/profile/{HANDLE}/post/{rkey}"


def test_second_publish_sends_nothing(project, monkeypatch, pds):
    config = bsky_config(project, monkeypatch)
    assert send(config).sent == 1
    again = send(config)
    assert (again.total, again.sent, again.already_sent) == (0, 0, 1)
    assert pds.routes["create"].call_count == 1 and pds.routes["login"].call_count == 1


def _rate_limited(reset: float) -> httpx.Response:
    headers = {"RateLimit-Limit": "5000", "RateLimit-Remaining": "0", "RateLimit-Reset": str(int(reset)),
               "RateLimit-Policy": "5000;w=3600"}
    return httpx.Response(429, headers=headers,
                          json={"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"})


def test_rate_limit_resetting_within_max_wait_is_waited_out(project, monkeypatch, pds):
    config = bsky_config(project, monkeypatch)
    pds.routes["create"].side_effect = script(_rate_limited(time.time() + 2))
    started = time.monotonic()
    report = send(config)
    assert time.monotonic() - started >= 0.9      # waited for RateLimit-Reset (1 to 2 s away)
    assert (report.sent, report.deferred, report.failed) == (1, 0, 0)
    first, second = bodies(pds)
    assert first["rkey"] == second["rkey"]
    [row] = rows(config)
    assert row.status == Status.SENT


def test_rate_limit_resetting_beyond_max_wait_leaves_the_row_pending(project, monkeypatch, pds):
    config = bsky_config(project, monkeypatch)
    pds.routes["create"].side_effect = script(_rate_limited(time.time() + 3600))
    report = send(config)
    assert (report.sent, report.deferred, report.failed) == (0, 1, 0)
    assert pds.routes["create"].call_count == 1
    [row] = rows(config)
    assert row.status == Status.PENDING and "rate limited (429)" in (row.last_error or "")
    assert row.next_attempt_at is not None
    assert row.next_attempt_at > datetime.now(UTC) + timedelta(minutes=50)


def test_server_error_is_retried_then_sent(project, monkeypatch, pds):
    config = bsky_config(project, monkeypatch)
    pds.routes["create"].side_effect = script(
        httpx.Response(503, json={"error": "ServiceUnavailable", "message": "try later"}))
    report = send(config)
    assert (report.sent, report.failed) == (1, 0)
    first, second = bodies(pds)
    assert first["rkey"] == second["rkey"]
    # A 5xx may hide an already created record: the channel looked before retrying.
    [probe] = pds.routes["get"].calls
    assert dict(probe.request.url.params) == {"repo": DID, "collection": "app.bsky.feed.post",
                                              "rkey": first["rkey"]}


def test_server_error_that_persists_fails_with_the_reply(project, monkeypatch, pds):
    config = bsky_config(project, monkeypatch)
    pds.routes["create"].side_effect = script(*[httpx.Response(
        502, json={"error": "UpstreamFailure", "message": "upstream down"}) for _ in range(3)])
    report = send(config)
    assert (report.sent, report.failed) == (0, 1)
    assert pds.routes["create"].call_count == 3          # 1 + retries: 2
    [row] = rows(config)
    assert row.status == Status.FAILED
    assert "server error 502: UpstreamFailure: upstream down" in (row.last_error or "")


def test_refused_login_stops_the_channel_with_the_fix_and_no_secret(project, monkeypatch, pds):
    config = bsky_config(project, monkeypatch)
    pds.routes["login"].respond(401, json={"error": "AuthenticationRequired",
                                           "message": "Invalid identifier or password"})
    report = send(config)
    assert report.error is not None and "\n" not in report.error
    assert f"login refused for {HANDLE}: check the app password" in report.error
    assert SECRET not in report.error
    assert pds.routes["create"].call_count == 0
    [row] = rows(config)
    assert row.status == Status.PENDING and SECRET not in (row.last_error or "")


def test_timeout_after_sending_is_retried_with_the_same_rkey_and_sent_once(project, monkeypatch, pds):
    config = bsky_config(project, monkeypatch)
    pds.routes["create"].side_effect = script(httpx.ReadTimeout("timed out"))
    report = send(config)
    assert (report.sent, report.unknown, report.failed) == (1, 0, 0)
    first, second = bodies(pds)
    assert first["rkey"] == second["rkey"] and first["record"]["text"] == second["record"]["text"]
    [row] = rows(config)
    assert row.status == Status.SENT and row.remote_id.endswith(f"/{first['rkey']} {_cid(first['rkey'])}")


def test_record_already_there_after_a_timeout_is_a_success(project, monkeypatch, pds):
    """The first request created the post but its answer was lost; the retry, on the same rkey,
    is refused (the PDS answers a 500 today); the channel reads the record back."""
    config = bsky_config(project, monkeypatch)
    pds.routes["create"].side_effect = script(
        httpx.ReadTimeout("timed out"),
        httpx.Response(500, json={"error": "InternalServerError", "message": "Internal Server Error"}))
    rkey = record_key(f"{NAME}:{SEED_SLUG}:bluesky", datetime(2020, 9, 1, 4, tzinfo=UTC), 0)
    uri = f"at://{DID}/app.bsky.feed.post/{rkey}"
    pds.routes["get"].respond(200, json={"uri": uri, "cid": "bafyreiexisting", "value": {
        "$type": "app.bsky.feed.post", "text": SEED_TEXT, "createdAt": "2024-01-01T00:00:00.000Z"}})
    report = send(config)
    assert (report.sent, report.failed, report.unknown) == (1, 0, 0)
    assert pds.routes["create"].call_count == 2
    [row] = rows(config)
    assert row.status == Status.SENT and row.remote_id == f"{uri} bafyreiexisting"
    assert row.remote_url == f"https://bsky.app/profile/{HANDLE}/post/{rkey}"


def test_explicit_already_exists_error_is_a_success_too(project, monkeypatch, pds):
    config = bsky_config(project, monkeypatch)
    pds.routes["create"].side_effect = script(
        httpx.Response(400, json={"error": "RecordAlreadyExists", "message": "Record already exists"}))
    pds.routes["get"].respond(200, json={"uri": "at://x/app.bsky.feed.post/k", "cid": "bafyreiexisting",
                                         "value": {"$type": "app.bsky.feed.post", "text": SEED_TEXT,
                                                   "createdAt": "2024-01-01T00:00:00.000Z"}})
    assert send(config).sent == 1
    assert pds.routes["create"].call_count == 1


def test_a_different_record_at_the_key_is_unknown_not_success(project, monkeypatch, pds):
    config = bsky_config(project, monkeypatch)
    pds.routes["create"].side_effect = script(
        httpx.Response(500, json={"error": "InternalServerError", "message": "Internal Server Error"}))
    pds.routes["get"].respond(200, json={"uri": "at://x/app.bsky.feed.post/k", "cid": "bafyreiother",
                                         "value": {"$type": "app.bsky.feed.post", "text": "something else",
                                                   "createdAt": "2024-01-01T00:00:00.000Z"}})
    report = send(config)
    assert (report.sent, report.unknown) == (0, 1)
    [row] = rows(config)
    assert row.status == Status.UNKNOWN and "a different post already exists" in row.last_error


BREATHING = """
---
title: "Breathing Between Sessions"
date: 2024-06-01T08:00:00Z
summary: "Slow breathing is a small habit with a large effect. Between infusion sessions, five minutes of paced breathing in the morning and the evening can steady the days. Start by sitting upright with both feet on the floor. Breathe in through the nose for a count of four, hold for a moment, and breathe out through the mouth for a count of six. Repeat ten times. If a count feels too long, shorten both counts and keep the out-breath longer than the in-breath. Write down how you felt before and after in your mood journal. Over two weeks, most patients notice that the evening session helps them fall asleep sooner. Bring the journal to your next visit so that we can look at it together."
tags: [breathing]
social:
  thread: true
---

Body.
"""  # noqa: E501


def test_thread_parts_reply_to_the_first_and_the_previous_part(project, monkeypatch, pds, write_post):
    write_post(f"{THREAD}.md", BREATHING)
    config = bsky_config(project, monkeypatch, language="en-US")
    report = send(config, THREAD)
    assert (report.sent, report.failed) == (3, 0)
    assert pds.routes["login"].call_count == 1
    first, second, third = (b["record"] for b in bodies(pds))
    rkeys = [b["rkey"] for b in bodies(pds)]
    assert rkeys == sorted(rkeys) and len(set(rkeys)) == 3 and all(TID_RE.match(k) for k in rkeys)
    uris = [f"at://{DID}/app.bsky.feed.post/{k}" for k in rkeys]

    def ref(n: int) -> dict[str, str]:
        return {"$type": "com.atproto.repo.strongRef", "uri": uris[n], "cid": _cid(rkeys[n])}

    assert first["text"].endswith("(1/3)") and third["text"].endswith("(3/3)")
    assert "reply" not in first and first["langs"] == ["en-US"]
    url = (f"https://www.rtrwellnesscenter.com/{THREAD}/?utm_source=bluesky&utm_medium=social"
           f"&utm_campaign={THREAD}")
    assert first["embed"] == {"$type": "app.bsky.embed.external", "external": {
        "$type": "app.bsky.embed.external#external", "uri": url, "title": "Breathing Between Sessions",
        "description": BREATHING.split('summary: "')[1].split('"')[0]}}
    assert "facets" not in first and "embed" not in second and "embed" not in third
    assert second["reply"] == {"$type": "app.bsky.feed.post#replyRef", "root": ref(0), "parent": ref(0)}
    assert third["reply"] == {"$type": "app.bsky.feed.post#replyRef", "root": ref(0), "parent": ref(1)}
    [link] = third["facets"]
    start, end = link["index"]["byteStart"], link["index"]["byteEnd"]
    assert third["text"].encode()[start:end] == b"rtrwellnesscenter.com/2024-06-01-b..."
    assert link["features"][0]["uri"] == url
    assert [r.remote_id for r in sorted(rows(config), key=lambda r: r.part)] == \
        [f"{uris[n]} {_cid(rkeys[n])}" for n in range(3)]


IMAGE_URL = "https://www.rtrwellnesscenter.com/images/infusion-room.jpg"
ALT = "A quiet treatment room with a reclining chair, a blanket and soft window light"


def photo(size: tuple[int, int] = (600, 400), quality: int = 90) -> bytes:
    out = io.BytesIO()
    PIL.Image.new("RGB", size, "teal").save(out, "JPEG", quality=quality)
    return out.getvalue()


def noisy_photo(size: tuple[int, int]) -> bytes:
    """A photo that compresses badly: over the 1 MB blob limit."""
    bands = [PIL.Image.effect_noise(size, 90).convert("L") for _ in range(3)]
    out = io.BytesIO()
    PIL.Image.merge("RGB", bands).save(out, "JPEG", quality=95)
    return out.getvalue()


JPEG = photo()
BLOB = {"$type": "blob", "ref": {"$link": "bafkreibcqb2wxy3gyz7jv6xw6wjduzd2pbsw3ivhqcuqggpeb4ez6vc5ey"},
        "mimeType": "image/jpeg", "size": len(JPEG)}
# atproto 0.0.73 hands the blob to httpx as `data=` bytes, which httpx 0.28 deprecates.
ASPECT = "app.bsky.embed.defs#aspectRatio"      # atproto's model adds the $type
UPLOAD_WARNING = "ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning"


def serve_image(pds: respx.MockRouter, data: bytes = JPEG) -> tuple[respx.Route, respx.Route]:
    image = pds.get(IMAGE_URL, name="image").respond(200, content=data,
                                                     headers={"Content-Type": "image/jpeg"})
    upload = pds.post(f"{XRPC}/com.atproto.repo.uploadBlob", name="upload").respond(200, json={"blob": BLOB})
    return image, upload


@pytest.mark.filterwarnings(UPLOAD_WARNING)
def test_attach_embeds_the_uploaded_image_with_its_alt_and_keeps_the_link_facet(project, monkeypatch, pds):
    config = bsky_config(project, monkeypatch)
    image, upload = serve_image(pds)
    assert send(config, INFUSION).sent == 1
    assert image.call_count == 1
    [call] = upload.calls
    assert call.request.content == JPEG                  # within the limits: sent as it is
    assert call.request.headers["Content-Type"] == "image/jpeg"
    assert call.request.headers["Authorization"] == f"Bearer {ACCESS_JWT}"
    [body] = bodies(pds)
    assert body["record"]["embed"] == {"$type": "app.bsky.embed.images",
                                       "images": [{"$type": "app.bsky.embed.images#image",
                                                   "image": BLOB, "alt": ALT,
                                                   "aspectRatio": {"$type": ASPECT, "width": 600,
                                                                   "height": 400}}]}
    links = [f for f in body["record"]["facets"] if f["features"][0]["$type"].endswith("#link")]
    assert len(links) == 1 and "utm_source=bluesky" in links[0]["features"][0]["uri"]


@pytest.mark.filterwarnings(UPLOAD_WARNING)
def test_an_image_over_the_blob_limit_is_fitted_under_it(project, monkeypatch, pds):
    config = bsky_config(project, monkeypatch)
    big = noisy_photo((1500, 1000))
    assert len(big) > 1_000_000
    _, upload = serve_image(pds, big)
    assert send(config, INFUSION).sent == 1
    [call] = upload.calls
    assert len(call.request.content) <= 1_000_000
    with PIL.Image.open(io.BytesIO(call.request.content)) as im:
        assert im.format == "JPEG" and im.width / im.height == pytest.approx(1.5, abs=0.01)
    [body] = bodies(pds)
    assert body["record"]["embed"]["images"][0]["aspectRatio"] == {"$type": ASPECT, "width": 1500,
                                                                   "height": 1000}


@pytest.mark.filterwarnings(UPLOAD_WARNING)
def test_card_thumbnail_is_the_uploaded_post_image(project, monkeypatch, pds):
    config = bsky_config(project, monkeypatch, image="card")
    image, upload = serve_image(pds)
    assert send(config, INFUSION).sent == 1
    assert image.call_count == 1 and upload.call_count == 1
    [body] = bodies(pds)
    assert body["record"]["embed"]["$type"] == "app.bsky.embed.external"
    external = body["record"]["embed"]["external"]
    assert external["thumb"] == BLOB
    assert external["title"] == "Your First Infusion: What to Expect, Step by Step"
    assert external["description"].startswith("A first ketamine infusion is calmer")


def test_none_posts_the_card_without_a_thumbnail_and_fetches_nothing(project, monkeypatch, pds):
    config = bsky_config(project, monkeypatch, image="none")
    image, upload = serve_image(pds)
    assert send(config, INFUSION).sent == 1
    assert image.call_count == 0 and upload.call_count == 0
    [body] = bodies(pds)
    assert body["record"]["embed"]["$type"] == "app.bsky.embed.external"
    assert "thumb" not in body["record"]["embed"]["external"]


def test_image_that_cannot_be_fetched_falls_back_to_the_card_with_a_warning(project, monkeypatch, pds,
                                                                            caplog):
    config = bsky_config(project, monkeypatch)
    pds.get(IMAGE_URL, name="image").respond(404, text="not found")
    upload = pds.post(f"{XRPC}/com.atproto.repo.uploadBlob", name="upload").respond(200, json={"blob": BLOB})
    with caplog.at_level(logging.WARNING):
        assert send(config, INFUSION).sent == 1
    assert upload.call_count == 0
    [body] = bodies(pds)
    assert body["record"]["embed"]["$type"] == "app.bsky.embed.external"
    assert "thumb" not in body["record"]["embed"]["external"]
    assert f"the image {IMAGE_URL} cannot be fetched (HTTP 404); posting without it" in caplog.text


@pytest.mark.filterwarnings(UPLOAD_WARNING)
def test_a_failed_upload_falls_back_to_the_card_with_a_warning(project, monkeypatch, pds, caplog):
    config = bsky_config(project, monkeypatch)
    pds.get(IMAGE_URL, name="image").respond(200, content=JPEG, headers={"Content-Type": "image/jpeg"})
    pds.post(f"{XRPC}/com.atproto.repo.uploadBlob", name="upload").respond(
        400, json={"error": "BlobTooLarge", "message": "too big"})
    with caplog.at_level(logging.WARNING):
        assert send(config, INFUSION).sent == 1
    [body] = bodies(pds)
    assert body["record"]["embed"]["$type"] == "app.bsky.embed.external"
    assert "uploading the image" in caplog.text and "BlobTooLarge" in caplog.text
