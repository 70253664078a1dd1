"""The Telegram channel: the exact Bot API requests (intercepted with respx), the HTML and its
escaping, photos with a caption cut to 1,024, the errors, and the bot token kept out of every
log line, error message and ledger row."""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from functools import partial
from pathlib import Path

import httpx
import pytest
import respx

from pipeline.config import Config
from pipeline.intake.sources import load_all
from pipeline.networks.telegram import Telegram as TelegramCounter
from pipeline.render.social import snippet
from tests.conftest import SEED_SLUG, add_channel, jpeg, ledger_rows, send_through
from tests.test_threads import enable_network

NAME = "tg"
BASE = "https://api.telegram.test"
TOKEN = "123456789:AAH-very_secret-Token0"
MESSAGE, PHOTO = f"{BASE}/bot{TOKEN}/sendMessage", f"{BASE}/bot{TOKEN}/sendPhoto"
INFUSION = "2024-03-12-your-first-infusion"
IMAGE_URL = "https://www.rtrwellnesscenter.com/images/infusion-room.jpg"


def telegram_config(project: Path, monkeypatch: pytest.MonkeyPatch, **extra: object) -> Config:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    enable_network(project, "telegram")
    settings = {"base_url": BASE, "bot_token": "${TELEGRAM_BOT_TOKEN}", "chat_id": "@rtrwellness",
                "retries": 2, "retry_wait": 0.01, "max_wait": 5, "timeout": 5, **extra}
    return add_channel(project, NAME, "telegram", settings)


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:     # the image cache: cleared by conftest
        yield router


def sent(message_id: int = 42, *, username: str | None = "rtrwellness",
         photo: bool = False) -> httpx.Response:
    chat = {"id": -1001234567890, "type": "channel", "title": "RTR Wellness"}
    if username:
        chat["username"] = username
    result = {"message_id": message_id, "chat": chat, "date": 1700000000}
    if photo:
        result["photo"] = [{"file_id": "AgAD", "width": 800, "height": 600}]
    return httpx.Response(200, json={"ok": True, "result": result})


def failed(code: int, description: str, **parameters: object) -> httpx.Response:
    body: dict[str, object] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return httpx.Response(code, json=body)


def multipart(request: httpx.Request) -> dict[str, object]:
    """The form fields of a multipart request: text as str, the file as bytes (with its type)."""
    head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.content)
    out: dict[str, object] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        content = part.get_content()
        filename = part.get_filename()
        out[name] = (filename, part.get_content_type(), content) if filename else content
    return out


def the_snippet(config: Config, slug: str):  # type: ignore[no-untyped-def]
    post = next(p for p in load_all(config).posts if p.slug == slug)
    return snippet(post, "telegram", config, channel=NAME)


def shown(markup: str) -> str:
    """What Telegram shows of HTML text: the tags parsed away, the entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


send = partial(send_through, name=NAME)
rows = partial(ledger_rows, channel=NAME)


def test_sends_an_html_message_with_the_link_previewed(project, monkeypatch, mock):
    config = telegram_config(project, monkeypatch)
    route = mock.post(MESSAGE).mock(return_value=sent(42))
    report = send(config)
    assert (report.sent, report.failed, report.error) == (1, 0, None)
    [call] = route.calls
    assert call.request.method == "POST" and str(call.request.url) == MESSAGE
    assert call.request.headers["Content-Type"] == "application/json"
    body = json.loads(call.request.content)
    expected = the_snippet(config, SEED_SLUG)
    link = expected.link.uri
    assert body == {
        "chat_id": "@rtrwellness", "parse_mode": "HTML",
        "text": html.escape(expected.text[:expected.link.start], quote=False)
                + f'<a href="{html.escape(link)}">{html.escape(link, quote=False)}</a>'
                + html.escape(expected.text[expected.link.end:], quote=False),
        "link_preview_options": {"is_disabled": False, "url": link},
    }
    assert shown(body["text"]) == expected.text
    [row] = rows(config)
    assert (row.status, row.remote_id, row.remote_url) == ("sent", "42", "https://t.me/rtrwellness/42")


def test_the_text_is_escaped(project, monkeypatch, mock, write_post):
    write_post("2024-06-01-fish.md", """
        ---
        title: "Fish & chips <3 \\"quoted\\""
        date: 2024-06-01
        summary: "Less than < greater than > and an ampersand & in <b>bold</b> — 🙂 ok."
        ---
        Body.
        """)
    config = telegram_config(project, monkeypatch, image="none")
    route = mock.post(MESSAGE).mock(return_value=sent(7))
    assert send(config, "2024-06-01-fish").sent == 1
    body = json.loads(route.calls[0].request.content)
    text = body["text"]
    assert "Fish &amp; chips &lt;3" in text and "&lt;b&gt;bold&lt;/b&gt;" in text
    assert re.sub(r'<a href="[^"]*">[^<]*</a>', "", text).count("<") == 0   # the one tag is the link
    assert shown(text) == the_snippet(config, "2024-06-01-fish").text
    assert body["link_preview_options"] == {"is_disabled": True}          # image: none


def test_sends_the_image_as_a_photo_with_a_caption(project, monkeypatch, mock):
    config = telegram_config(project, monkeypatch)
    image = jpeg()
    mock.get(IMAGE_URL).mock(return_value=httpx.Response(200, content=image,
                                                         headers={"Content-Type": "image/jpeg"}))
    route = mock.post(PHOTO).mock(return_value=sent(43, photo=True))
    message = mock.post(MESSAGE).mock(return_value=sent(44))
    report = send(config, INFUSION)
    assert report.sent == 1 and message.call_count == 0
    [call] = route.calls
    assert str(call.request.url) == PHOTO
    fields = multipart(call.request)
    expected = the_snippet(config, INFUSION)
    assert set(fields) == {"chat_id", "parse_mode", "caption", "photo"}
    assert (fields["chat_id"], fields["parse_mode"]) == ("@rtrwellness", "HTML")
    assert shown(fields["caption"]) == expected.text                  # short enough as it is
    assert f'<a href="{html.escape(expected.link.uri)}">' in fields["caption"]
    assert fields["photo"] == ("image.jpg", "image/jpeg", image)      # passed through as fetched
    # Telegram has no alt text: the image_alt goes nowhere.
    assert b"A quiet treatment room" not in call.request.content
    [row] = rows(config)
    assert (row.remote_id, row.remote_url) == ("43", "https://t.me/rtrwellness/43")


def test_a_long_snippet_is_cut_again_for_the_caption(project, monkeypatch, mock, write_post):
    sentences = " ".join(f"Sentence {i} of a long summary that says a little more each time."
                         for i in range(60))
    write_post("2024-06-02-long.md", f"""
        ---
        title: A long one
        date: 2024-06-02
        image: /images/long.jpg
        summary: "{sentences}"
        ---
        Body.
        """)
    config = telegram_config(project, monkeypatch)
    mock.get("https://www.rtrwellnesscenter.com/images/long.jpg").mock(
        return_value=httpx.Response(200, content=jpeg()))
    route = mock.post(PHOTO).mock(return_value=sent(45, photo=True))
    assert send(config, "2024-06-02-long").sent == 1
    caption = shown(multipart(route.calls[0].request)["caption"])
    full = the_snippet(config, "2024-06-02-long")
    assert full.length > 1024                      # as a message it would not fit a caption
    assert TelegramCounter().count(caption) <= 1024 < full.length
    assert caption.startswith("A long one") and caption.endswith(full.link.uri)
    assert caption.split("\n\n")[1].startswith("Sentence 0 of a long summary")


def test_an_image_that_cannot_be_fetched_sends_a_message(project, monkeypatch, mock, caplog):
    config = telegram_config(project, monkeypatch)
    mock.get(IMAGE_URL).mock(return_value=httpx.Response(404))
    photo = mock.post(PHOTO).mock(return_value=sent(46, photo=True))
    message = mock.post(MESSAGE).mock(return_value=sent(47))
    assert send(config, INFUSION).sent == 1
    assert (photo.call_count, message.call_count) == (0, 1)
    assert "posting without it" in caplog.text


@pytest.mark.parametrize("mode", ["card", "none"])
def test_card_and_none_send_no_photo(project, monkeypatch, mock, mode):
    config = telegram_config(project, monkeypatch, image=mode)
    message = mock.post(MESSAGE).mock(return_value=sent(48))
    assert send(config, INFUSION).sent == 1
    preview = json.loads(message.calls[0].request.content)["link_preview_options"]
    assert preview["is_disabled"] is (mode == "none")
    assert not any(c.request.url.host == "www.rtrwellnesscenter.com" for c in mock.calls)   # no fetch


def test_a_private_chat_has_no_link(project, monkeypatch, mock):
    config = telegram_config(project, monkeypatch, chat_id=-1001234567890, image="none")
    route = mock.post(MESSAGE).mock(return_value=sent(49, username=None))
    assert send(config).sent == 1
    assert json.loads(route.calls[0].request.content)["chat_id"] == "-1001234567890"
    [row] = rows(config)
    assert (row.remote_id, row.remote_url) == ("49", None)


@pytest.mark.parametrize(("reply", "outcome", "words"), [
    (failed(400, "Bad Request: chat not found"), "error", "finds no chat @rtrwellness"),
    (failed(403, "Forbidden: bot is not a member of the channel chat"), "error", "as an administrator"),
    (failed(401, "Unauthorized"), "error", "@BotFather"),
    (failed(404, "Not Found"), "error", "@BotFather"),
    (failed(400, "Bad Request: group chat was upgraded to a supergroup chat", migrate_to_chat_id=-100777),
     "error", "set chat_id to -100777"),
    (failed(429, "Too Many Requests: retry after 120", retry_after=120), "deferred", "retry after 120 s"),
    (failed(400, "Bad Request: can't parse entities"), "failed", "can't parse entities"),
    (failed(502, "Bad Gateway"), "failed", "server error"),
])
def test_errors(project, monkeypatch, mock, reply, outcome, words):
    config = telegram_config(project, monkeypatch, image="none")
    route = mock.post(MESSAGE).mock(return_value=reply)
    report = send(config)
    [row] = rows(config)
    if outcome == "error":          # fatal: the channel stops, the delivery waits for the fix
        assert words in report.error and row.status == "pending"
    elif outcome == "deferred":
        assert report.deferred == 1 and row.status == "pending" and row.next_attempt_at is not None
        assert words in row.last_error
    else:
        assert report.failed == 1 and row.status == "failed" and words in row.last_error
    assert route.call_count == (3 if reply.status_code == 502 else 1)    # only 5xx is retried
    assert TOKEN not in (report.error or "") + (row.last_error or "")


def test_no_answer_is_unknown_and_never_resent(project, monkeypatch, mock):
    config = telegram_config(project, monkeypatch, image="none")
    route = mock.post(MESSAGE).mock(side_effect=httpx.ReadTimeout("no answer"))
    report = send(config)
    assert report.unknown == 1 and route.call_count == 1
    [row] = rows(config)
    assert row.status == "unknown" and "it may have been posted" in row.last_error
    assert send(config).sent == 0 and route.call_count == 1


def test_a_connection_refused_names_no_token(project, monkeypatch, mock):
    config = telegram_config(project, monkeypatch, image="none", retries=0)
    mock.post(MESSAGE).mock(side_effect=httpx.ConnectError("refused"))
    report = send(config)
    [row] = rows(config)
    assert row.status == "failed" and f"cannot connect to {BASE}" in row.last_error
    assert TOKEN not in row.last_error and TOKEN not in str(report)


def test_publishing_twice_sends_once(project, monkeypatch, mock):
    config = telegram_config(project, monkeypatch, image="none")
    route = mock.post(MESSAGE).mock(return_value=sent(50))
    assert send(config).sent == 1
    again = send(config)
    assert (again.sent, again.already_sent, route.call_count) == (0, 1, 1)


def test_the_token_never_reaches_the_logs(project, monkeypatch, mock, caplog):
    config = telegram_config(project, monkeypatch)
    mock.get(IMAGE_URL).mock(return_value=httpx.Response(200, content=jpeg()))
    mock.post(PHOTO).mock(return_value=failed(400, f"Bad Request: token {TOKEN} echoed"))
    caplog.set_level(logging.DEBUG)
    # Its own level too: the CLI quiets httpx to WARNING, and an earlier test may have run the CLI here.
    caplog.set_level(logging.DEBUG, logger="httpx")
    report = send(config, INFUSION)
    # httpx logs every request's URL at INFO: it is there, redacted.
    assert f"{BASE}/bot<token>/sendPhoto" in caplog.text
    assert TOKEN not in caplog.text
    [row] = rows(config)
    assert "token <token> echoed" in row.last_error
    assert TOKEN not in (row.last_error or "") + str(report)
    # Closed, the channel no longer touches httpx's records.
    assert not any(type(f).__name__ == "_RedactToken" for f in logging.getLogger("httpx").filters)


def test_a_bad_token_or_chat_names_the_key_not_the_value(project, monkeypatch):
    from pipeline.channels.registry import build_channel
    from pipeline.errors import ConfigError

    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "not a token")
    enable_network(project, "telegram")
    config = add_channel(project, NAME, "telegram", {"bot_token": "${TELEGRAM_BOT_TOKEN}",
                                                     "chat_id": "rtrwellness"})
    with pytest.raises(ConfigError) as err:
        build_channel(config, NAME)
    message = str(err.value)
    assert "channels.tg.bot_token" in message and "@BotFather" in message
    assert "channels.tg.chat_id" in message
    assert "not a token" not in message


def test_a_threads_parts_reply_to_the_part_before(project, monkeypatch, mock, write_post):
    from tests.conftest import thread_post

    write_post("2024-06-03-story.md", thread_post(200))
    config = telegram_config(project, monkeypatch, image="none")
    ids = iter(range(100, 200))
    route = mock.post(MESSAGE).mock(side_effect=lambda request: sent(next(ids)))
    report = send(config, "2024-06-03-story")
    assert report.sent == route.call_count >= 2
    bodies = [json.loads(call.request.content) for call in route.calls]
    assert "reply_parameters" not in bodies[0]
    replied = [b["reply_parameters"]["message_id"] for b in bodies[1:]]
    assert replied == list(range(100, 100 + len(bodies) - 1))


def test_a_threads_first_part_longer_than_a_caption_goes_as_a_message_not_recut(project, monkeypatch, mock,
                                                                              write_post, caplog):
    # Cutting the first part again as a whole post's snippet would repeat the title and the link
    # and lose the text the second part goes on from: the part goes as it is, without the photo.
    story = " ".join(f"Sentence number {i} tells a little more of the story." for i in range(200))
    write_post("2024-06-04-pictured.md", "---\ntitle: A pictured story\ndate: 2024-01-01\n"
               "image: /images/pictured.jpg\nimage_alt: A picture\nsocial: {thread: true}\n---\n" + story)
    config = telegram_config(project, monkeypatch)
    picture = mock.get("https://www.rtrwellnesscenter.com/images/pictured.jpg").mock(
        return_value=httpx.Response(200, content=jpeg(), headers={"Content-Type": "image/jpeg"}))
    photo = mock.post(PHOTO).mock(return_value=sent(60, photo=True))
    ids = iter(range(300, 400))
    message = mock.post(MESSAGE).mock(side_effect=lambda request: sent(next(ids)))
    with caplog.at_level(logging.WARNING):
        report = send(config, "2024-06-04-pictured")
    assert report.sent == message.call_count >= 2 and photo.call_count == 0
    texts = [shown(json.loads(call.request.content)["text"]) for call in message.calls]
    assert texts[0].endswith(f"(1/{len(texts)})") and texts[1].endswith(f"(2/{len(texts)})")
    whole = " ".join(texts)
    assert whole.count("A pictured story") == 1 and whole.count("Sentence number 77 tells") == 1
    assert all(TelegramCounter().count(t) <= 4096 for t in texts)
    assert picture.call_count == 0                 # not downloaded for a photo that cannot go
    assert "longer than a photo's caption" in caplog.text
