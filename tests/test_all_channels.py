"""Issue 17's "done when": one `publish` sends a post with an image to one channel of every
registered type, once each, with the image and its alt text where the network allows it; a second
`publish` sends nothing anywhere.

The third-party APIs are intercepted at the HTTP layer (respx for the httpx clients, `responses`
for tweepy and Mastodon.py), the SMTP server is a real aiosmtpd sink and the outbox writes real
files. Each channel is configured and answered by its own test module's helpers; the channels
carry those modules' names, so the helpers read and render for the same channel."""

from __future__ import annotations

import json
import logging
import mailbox
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import responses
import respx

from pipeline.channels.registry import CHANNELS
from pipeline.config import load_config
from pipeline.publish import publish
from tests import test_facebook as facebook
from tests import test_linkedin as linkedin
from tests import test_telegram as telegram
from tests import test_threads as threads
from tests.channels import test_bluesky as bsky
from tests.channels import test_devto as devto
from tests.channels import test_mastodon as mastodon
from tests.channels import test_smtp as smtp
from tests.channels import test_webhook as webhook
from tests.channels import test_x as x
from tests.channels.test_bluesky import pds  # noqa: F401  (the fixture: a PDS, and no unmocked httpx request)
from tests.conftest import ledger_rows
from tests.smtp_sink import Sink

POST = "2024-03-12-your-first-infusion"          # its front matter has `image:` and `image_alt:`
ALT = bsky.ALT
READERS = ("ada@example.com", "bob@example.org")
Setup = Callable[[Path, pytest.MonkeyPatch, Sink], object]
Answer = Callable[[respx.MockRouter, responses.RequestsMock], object]


@dataclass(frozen=True, kw_only=True)
class ChannelType:
    """One channel type: its channel's name, how it is added to config.yaml, how its API answers,
    and the requests other than GETs that one post costs it: (method, URL without query) -> count."""

    name: str
    configure: Setup
    answer: Answer = lambda router, rsps: None
    writes: dict[tuple[str, str], int] = field(default_factory=dict)


TYPES: dict[str, ChannelType] = {
    "outbox": ChannelType(name="outbox", configure=lambda project, mp, sink: None),   # shipped config.yaml
    "smtp": ChannelType(name="newsletter", configure=lambda project, mp, sink: smtp.smtp_config(project,
                                                                                                sink.port)),
    "x": ChannelType(
        name=x.NAME, configure=lambda project, mp, sink: x.x_config(project, mp, image="attach"),
        answer=lambda router, rsps: rsps.post(x.URL, **x.created("1001")),
        writes={("POST", x.URL): 1}),
    "mastodon": ChannelType(
        name=mastodon.NAME, configure=lambda project, mp, sink: mastodon.mastodon_config(project, mp),
        answer=lambda router, rsps: (
            mastodon.media_instance(rsps, image_size_limit=16777216, image_matrix_limit=33177600,
                                    supported_mime_types=["image/jpeg", "image/png"]),
            rsps.post(mastodon.MEDIA, **mastodon.uploaded("901")),
            rsps.post(mastodon.STATUSES, **mastodon.created("1101"))),
        writes={("POST", mastodon.MEDIA): 1, ("POST", mastodon.STATUSES): 1}),
    "bluesky": ChannelType(     # the `pds` fixture answers the login and createRecord; serve_image the upload
        name=bsky.NAME, configure=lambda project, mp, sink: bsky.bsky_config(project, mp),
        writes={("POST", f"{bsky.XRPC}/com.atproto.server.createSession"): 1,
                ("POST", f"{bsky.XRPC}/com.atproto.repo.uploadBlob"): 1,
                ("POST", f"{bsky.XRPC}/com.atproto.repo.createRecord"): 1}),
    "webhook": ChannelType(
        name=webhook.NAME, configure=lambda project, mp, sink: webhook.webhook_config(project, mp),
        answer=lambda router, rsps: router.post(webhook.URL).respond(202, headers={"X-Request-Id": "r1"}),
        writes={("POST", webhook.URL): 1}),
    "devto": ChannelType(
        name=devto.NAME, configure=lambda project, mp, sink: devto.devto_config(project, mp),
        answer=lambda router, rsps: router.post(devto.URL).mock(return_value=devto.created(5)),
        writes={("POST", devto.URL): 1}),
    "linkedin": ChannelType(
        name=linkedin.NAME,
        configure=lambda project, mp, sink: linkedin.linkedin_config(project, mp, image="attach"),
        answer=lambda router, rsps: (
            router.post(linkedin.IMAGES).mock(return_value=linkedin.initialized()),
            router.put(linkedin.UPLOAD).respond(201),
            router.post(linkedin.POSTS).mock(return_value=linkedin.created())),
        writes={("POST", f"{linkedin.BASE}/rest/images"): 1, ("PUT", linkedin.UPLOAD): 1,
                ("POST", linkedin.POSTS): 1}),
    "threads": ChannelType(
        name=threads.NAME, configure=lambda project, mp, sink: threads.threads_config(project, mp),
        answer=lambda router, rsps: threads.routes(router),
        writes={("POST", threads.CREATE): 1, ("POST", threads.PUBLISH): 1}),
    "telegram": ChannelType(
        name=telegram.NAME, configure=lambda project, mp, sink: telegram.telegram_config(project, mp),
        answer=lambda router, rsps: router.post(telegram.PHOTO).mock(
            return_value=telegram.sent(43, photo=True)),
        writes={("POST", telegram.PHOTO): 1}),
    "facebook": ChannelType(
        name=facebook.NAME, configure=lambda project, mp, sink: facebook.facebook_config(project, mp),
        answer=lambda router, rsps: router.post(facebook.FEED).mock(return_value=facebook.created()),
        writes={("POST", facebook.FEED): 1}),
}


@pytest.fixture
def apis(pds: respx.MockRouter) -> Iterator[tuple[respx.MockRouter, responses.RequestsMock]]:  # noqa: F811
    """Every third-party API: httpx's on the PDS's router, requests' on `responses`; neither lets
    an unanswered request through."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield pds, rsps


def requests_made(router: respx.MockRouter, rsps: responses.RequestsMock) -> Counter[tuple[str, str]]:
    """(method, URL without query) of every intercepted request, counted."""
    urls = [(str(c.request.method), str(c.request.url)) for c in router.calls]
    urls += [(str(c.request.method), str(c.request.url)) for c in rsps.calls]
    return Counter((method, urlsplit(url)._replace(query="").geturl()) for method, url in urls)


def outbox_files(project: Path) -> dict[str, bytes]:
    folder = project / "out" / "outbox"
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.filterwarnings(bsky.UPLOAD_WARNING)
def test_one_publish_reaches_every_channel_type_once_and_a_second_sends_nothing(project, monkeypatch, sink,
                                                                                apis, caplog):
    router, rsps = apis
    missing = sorted(set(CHANNELS) - set(TYPES))
    assert not missing, f"add the channel type(s) {missing} to TYPES"
    for kind in CHANNELS:
        TYPES[kind].configure(project, monkeypatch, sink)
        TYPES[kind].answer(router, rsps)
    config = load_config(project / "config.yaml")
    assert {c["type"]: name for name, c in config.channels.items()} == {k: TYPES[k].name for k in CHANNELS}
    smtp.add(config, *READERS)
    image, _ = bsky.serve_image(router)             # the post's image, and Bluesky's uploadBlob

    with caplog.at_level(logging.WARNING):
        reports = {r.channel: r for r in publish(config, slugs=[POST])}

    networks = sorted(config.networks)
    sent = {name: 1 for name in reports} | {"newsletter": len(READERS),
                                            "outbox": len(READERS) + len(networks) + 1}   # + the article
    assert {n: (r.sent, r.failed, r.unknown, r.deferred, r.error) for n, r in reports.items()} == \
        {n: (count, 0, 0, 0, None) for n, count in sent.items()}
    rows = ledger_rows(config)
    assert Counter(r.channel for r in rows) == Counter(sent)
    assert {r.status for r in rows} == {"sent"}

    # Exactly the expected requests, each once; and the image fetched once for all channels.
    writes = Counter({k: v for k, v in requests_made(router, rsps).items() if k[0] != "GET"})
    assert writes == sum((Counter(t.writes) for t in TYPES.values()), Counter())
    assert image.call_count == 1

    # The image, with its alt text where the network has one.
    [upload] = [c for c in rsps.calls if c.request.url == mastodon.MEDIA]
    [status] = [c for c in rsps.calls if c.request.url == mastodon.STATUSES]
    assert mastodon.parts(upload)["description"] == ("text/plain", ALT.encode())
    assert mastodon.parts(upload)["file"] == ("image/jpeg", bsky.JPEG)
    assert mastodon.form(status)["media_ids[]"] == "901"
    [record] = bsky.bodies(router)
    assert record["record"]["embed"]["$type"] == "app.bsky.embed.images"
    assert [(i["image"], i["alt"]) for i in record["record"]["embed"]["images"]] == [(bsky.BLOB, ALT)]
    [put] = [c for c in router.calls if c.request.method == "PUT"]
    assert put.request.content == bsky.JPEG
    [li_post] = [c for c in router.calls if str(c.request.url) == linkedin.POSTS]
    assert json.loads(li_post.request.content)["content"] == {"media": {"id": linkedin.IMAGE_URN,
                                                                        "altText": ALT}}
    [container] = [c for c in router.calls if str(c.request.url) == threads.CREATE]
    assert {k: v for k, v in threads.form(container.request).items() if k != "text"} == {
        "media_type": "IMAGE", "image_url": threads.IMAGE_URL, "alt_text": ALT}
    [photo] = [c for c in router.calls if str(c.request.url) == telegram.PHOTO]
    assert telegram.multipart(photo.request)["photo"] == ("image.jpg", "image/jpeg", bsky.JPEG)
    [article] = [c for c in router.calls if str(c.request.url) == devto.URL]
    assert json.loads(article.request.content)["article"]["main_image"] == bsky.IMAGE_URL
    [feed] = [c for c in router.calls if str(c.request.url) == facebook.FEED]     # Facebook: the link card
    assert json.loads(feed.request.content)["link"].startswith(f"https://www.rtrwellnesscenter.com/{POST}/")
    [tweet] = [c for c in rsps.calls if c.request.url == x.URL]
    assert set(x.body(tweet)) == {"text"}             # X: no media upload with tweepy 4.17
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("pipeline")]
    assert len(warnings) == 1 and f"the image {bsky.IMAGE_URL} is not attached" in warnings[0], warnings

    # Email: one message per subscriber through SMTP, and the outbox's files.
    assert sink.recipients() == dict.fromkeys(READERS, 1)
    assert len(mailbox.Maildir(project / "out" / "outbox" / "mail", create=False)) == len(READERS)
    lines = (project / "out" / "outbox" / "social.jsonl").read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(line)["network"] for line in lines) == networks
    assert (project / "out" / "outbox" / "articles" / f"{POST}.md").is_file()

    # The second publish: nothing new anywhere.
    before = (requests_made(router, rsps), len(sink.received), outbox_files(project))
    again = publish(config, slugs=[POST])
    assert {r.channel: (r.sent, r.already_sent, r.error) for r in again} == \
        {n: (0, count, None) for n, count in sent.items()}
    assert (requests_made(router, rsps), len(sink.received), outbox_files(project)) == before
    assert Counter(r.channel for r in ledger_rows(config)) == Counter(sent)
