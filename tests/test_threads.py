"""The Threads channel: the exact requests of its two steps (intercepted with respx), the image
variants, and the rule that a container is published at most once, through a timeout, a process
killed between the steps, `pipeline retry --unknown` and a second publish."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest
import respx

from pipeline.config import Config
from pipeline.publish import publish, retry
from tests.conftest import ROOT, SEED_SLUG, add_channel, ledger_rows, send_through
from tests.test_workers import _postgresql, jobs, workers_mode  # noqa: F401  (_postgresql: skips without one)

NAME = "threads"
BASE = "https://graph.threads.test"
API = f"{BASE}/v1.0"
USER = "1234"
TOKEN = "THREADS-very-secret-token-5f1c"
CREATE, PUBLISH = f"{API}/{USER}/threads", f"{API}/{USER}/threads_publish"
PERMALINK = "https://www.threads.net/@rtrwellness/post/C8abc"
INFUSION = "2024-03-12-your-first-infusion"
IMAGE_URL = "https://www.rtrwellnesscenter.com/images/infusion-room.jpg"
IMAGE_ALT = "A quiet treatment room with a reclining chair, a blanket and soft window light"


def threads_config(project: Path, monkeypatch: pytest.MonkeyPatch, **extra: object) -> Config:
    monkeypatch.setenv("THREADS_TOKEN", TOKEN)
    enable_network(project, "threads")
    settings = {"base_url": BASE, "user_id": USER, "access_token": "${THREADS_TOKEN}", "retries": 2,
                "retry_wait": 0.01, "max_wait": 5, "timeout": 5, "poll_interval": 0, "poll_for": 5,
                **extra}
    return add_channel(project, NAME, "threads", settings)


def enable_network(project: Path, network: str, settings: str = "{}") -> None:
    """`networks.<network>: settings` in the project's config.yaml (whether or not it is there)."""
    path = project / "config.yaml"
    lines = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
             if not line.startswith(f"  {network}: ")]
    at = lines.index("  bluesky: {}\n") + 1
    path.write_text("".join([*lines[:at], f"  {network}: {settings}\n", *lines[at:]]), encoding="utf-8")


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def ok(**body: object) -> httpx.Response:
    return httpx.Response(200, json=body)


def graph_error(status: int, code: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": message, "type": "OAuthException",
                                                  "code": code, "fbtrace_id": "AbC"}})


def routes(mock: respx.MockRouter, *, status: str | list[str] = "FINISHED", container: str = "c1",
           media: str = "m1") -> dict[str, respx.Route]:
    """The four endpoints, answering a happy publish."""
    statuses = [status] if isinstance(status, str) else status
    return {
        "create": mock.post(CREATE).mock(return_value=ok(id=container)),
        "status": mock.get(f"{API}/{container}").mock(
            side_effect=[ok(status=s, id=container) for s in statuses]
            + [ok(status=statuses[-1], id=container)] * 10),
        "publish": mock.post(PUBLISH).mock(return_value=ok(id=media)),
        "permalink": mock.get(f"{API}/{media}").mock(return_value=ok(permalink=PERMALINK, id=media)),
    }


def form(request: httpx.Request) -> dict[str, str]:
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    return dict(parse_qsl(request.content.decode(), keep_blank_values=True))


def snippet_text(config: Config, slug: str) -> str:
    from pipeline.intake.sources import load_all
    from pipeline.render.social import snippet

    post = next(p for p in load_all(config).posts if p.slug == slug)
    return snippet(post, "threads", config, channel=NAME).text


send = partial(send_through, name=NAME)
rows = partial(ledger_rows, channel=NAME)


def test_text_post_creates_then_publishes_the_container(project, monkeypatch, mock):
    config = threads_config(project, monkeypatch)
    r = routes(mock)
    seen_before_publish = []

    def publish_step(request: httpx.Request) -> httpx.Response:
        # The container's id is on the row, committed, before the publish request goes out.
        [row] = rows(config)
        seen_before_publish.append((row.status, row.remote_id))
        return ok(id="m1")

    r["publish"].mock(side_effect=publish_step)
    report = send(config)
    assert (report.sent, report.failed, report.unknown, report.error) == (1, 0, 0, None)
    assert seen_before_publish == [("sending", "c1")]

    [create] = r["create"].calls
    assert create.request.method == "POST" and str(create.request.url) == CREATE
    assert create.request.headers["Authorization"] == f"Bearer {TOKEN}"
    text = snippet_text(config, SEED_SLUG)
    assert form(create.request) == {"media_type": "TEXT", "text": text,
                                    "link_attachment": "https://www.rtrwellnesscenter.com/?utm_source=threads"
                                    "&utm_medium=social&utm_campaign=2020-09-01-ketamine-neurological-damage"}
    assert form(create.request)["link_attachment"] in text
    [status] = r["status"].calls
    assert status.request.url.params["fields"] == "status,error_message"
    [pub] = r["publish"].calls
    assert pub.request.url.path == f"/v1.0/{USER}/threads_publish"
    assert dict(pub.request.url.params) == {"creation_id": "c1"}
    assert pub.request.headers["Authorization"] == f"Bearer {TOKEN}"
    [link] = r["permalink"].calls
    assert link.request.url.params["fields"] == "permalink"
    [row] = rows(config)
    assert (row.status, row.remote_id, row.remote_url) == ("sent", "m1", PERMALINK)
    for route in r.values():
        for call in route.calls:
            assert TOKEN not in str(call.request.url)       # the token only ever in a header


@pytest.mark.parametrize(("mode", "expected"), [
    (None, {"media_type": "IMAGE", "image_url": IMAGE_URL, "alt_text": IMAGE_ALT}),
    ("attach", {"media_type": "IMAGE", "image_url": IMAGE_URL, "alt_text": IMAGE_ALT}),
    ("card", {"media_type": "TEXT", "link_attachment": "LINK"}),
    ("none", {"media_type": "TEXT"}),
])
def test_image_variants(project, monkeypatch, mock, mode, expected):
    config = threads_config(project, monkeypatch, **({"image": mode} if mode else {}))
    r = routes(mock)
    report = send(config, INFUSION)
    assert (report.sent, report.error) == (1, None)
    body = form(r["create"].calls[0].request)
    text = body.pop("text")
    assert text == snippet_text(config, INFUSION)
    if expected.get("link_attachment"):
        expected = {**expected, "link_attachment": next(w for w in text.split() if w.startswith("https://"))}
    assert body == expected
    assert not any(call.request.url.host == "www.rtrwellnesscenter.com" for call in mock.calls)  # no fetch


def test_waits_for_the_container_to_be_ready(project, monkeypatch, mock):
    config = threads_config(project, monkeypatch)
    r = routes(mock, status=["IN_PROGRESS", "IN_PROGRESS", "FINISHED"])
    report = send(config, INFUSION)
    assert report.sent == 1
    assert r["status"].call_count == 3 and r["publish"].call_count == 1


def test_a_container_not_ready_in_time_is_published_later_not_made_again(project, monkeypatch, mock):
    config = threads_config(project, monkeypatch, poll_for=0)
    r = routes(mock, status=["IN_PROGRESS", "FINISHED"])
    first = send(config, INFUSION)
    assert (first.sent, first.deferred) == (0, 1)
    [row] = rows(config)
    assert (row.status, row.remote_id) == ("pending", "c1")
    assert r["publish"].call_count == 0
    [later] = publish(config, slugs=[INFUSION], channels=[NAME],
                      now=row.next_attempt_at + timedelta(seconds=1))
    assert later.sent == 1
    assert r["create"].call_count == 1          # the same container, published once
    assert dict(r["publish"].calls[0].request.url.params) == {"creation_id": "c1"}


@pytest.mark.parametrize(("status", "publishes"), [("FINISHED", 1), ("PUBLISHED", 0)])
def test_no_answer_to_publish_is_unknown_and_retry_asks_the_container(project, monkeypatch, mock,
                                                                      status, publishes):
    config = threads_config(project, monkeypatch)
    r = routes(mock, status=["FINISHED", status])
    r["publish"].mock(side_effect=httpx.ReadTimeout("no answer"))
    report = send(config)
    assert (report.sent, report.unknown) == (0, 1)
    [row] = rows(config)
    assert (row.status, row.remote_id) == ("unknown", "c1")
    assert "it may have been posted" in row.last_error
    assert r["publish"].call_count == 1                  # never retried blindly

    r["publish"].mock(side_effect=None, return_value=ok(id="m1"))
    [again] = retry(config, unknown=True, channels=[NAME])
    assert (again.sent, again.unknown, again.failed) == (1, 0, 0)
    assert r["create"].call_count == 1                   # never a second container
    assert r["publish"].call_count == 1 + publishes
    [row] = rows(config)
    assert row.status == "sent"
    # PUBLISHED: the API does not say which media it became; the container's id stands for it.
    assert row.remote_id == ("m1" if publishes else "c1")


CRASH = """
import os, sys
import httpx, respx
from pipeline.config import load_config
from pipeline.publish import publish

api, user, config, slug = sys.argv[1:]
with respx.mock(assert_all_called=False) as mock:
    mock.post(f"{api}/{user}/threads").mock(return_value=httpx.Response(200, json={"id": "c1"}))
    mock.get(f"{api}/c1").mock(return_value=httpx.Response(200, json={"status": "FINISHED", "id": "c1"}))
    # The process dies the moment the publish request would leave.
    mock.post(f"{api}/{user}/threads_publish").mock(side_effect=lambda request: os._exit(9))
    publish(load_config(config), slugs=[slug], channels=["threads"])
sys.exit(0)
"""


def _killed(config: Config, project: Path, script: str, *, left: str) -> None:
    """Run `script` (a publish that dies with exit 9 at a given request) in its own process; the
    row is left `sending` with `left` as its remote id."""
    args = [sys.executable, "-c", script, API, USER, str(project / "config.yaml"), SEED_SLUG]
    killed = subprocess.run(args, cwd=ROOT, env={**os.environ, "THREADS_TOKEN": TOKEN}, capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == 9, killed.stderr
    [row] = rows(config)
    assert (row.status, row.remote_id) == ("sending", left)


def _resumed(config: Config) -> None:
    """Publish again after the kill: the crash rule makes the row `unknown`, nothing is sent."""
    [resumed] = publish(config, slugs=[SEED_SLUG], channels=[NAME])
    assert (resumed.resent, resumed.sent) == (1, 0)


def test_a_process_killed_between_the_steps_publishes_once(project, monkeypatch, mock):
    config = threads_config(project, monkeypatch)
    _killed(config, project, CRASH, left="c1")

    r = routes(mock)
    _resumed(config)
    [row] = rows(config)
    assert (row.status, row.remote_id) == ("unknown", "c1")
    assert not mock.calls

    [again] = retry(config, unknown=True, channels=[NAME])
    assert again.sent == 1
    assert r["create"].call_count == 0                  # the killed run's container is the one
    assert [dict(c.request.url.params) for c in r["publish"].calls] == [{"creation_id": "c1"}]
    [row] = rows(config)
    assert (row.status, row.remote_id, row.remote_url) == ("sent", "m1", PERMALINK)


CRASH_AFTER_PUBLISH = """
import os, sys
import httpx, respx
from pipeline.config import load_config
from pipeline.publish import publish

api, user, config, slug = sys.argv[1:]
with respx.mock(assert_all_called=False) as mock:
    mock.post(f"{api}/{user}/threads").mock(return_value=httpx.Response(200, json={"id": "c1"}))
    mock.get(f"{api}/c1").mock(return_value=httpx.Response(200, json={"status": "FINISHED", "id": "c1"}))
    mock.post(f"{api}/{user}/threads_publish").mock(return_value=httpx.Response(200, json={"id": "m1"}))
    # Threads confirmed the publish; the process dies asking for the permalink.
    mock.get(f"{api}/m1").mock(side_effect=lambda request: os._exit(9))
    publish(load_config(config), slugs=[slug], channels=["threads"])
sys.exit(0)
"""


def test_a_process_killed_after_a_confirmed_publish_records_the_media_not_the_container(project, monkeypatch,
                                                                                        mock):
    config = threads_config(project, monkeypatch)
    _killed(config, project, CRASH_AFTER_PUBLISH, left="media:m1")

    r = routes(mock)
    _resumed(config)
    [again] = retry(config, unknown=True, channels=[NAME])
    assert again.sent == 1
    # Neither the container's status nor a second publish: the media id Threads gave is recorded.
    assert (r["create"].call_count, r["status"].call_count, r["publish"].call_count) == (0, 0, 0)
    [row] = rows(config)
    assert (row.status, row.remote_id, row.remote_url) == ("sent", "m1", PERMALINK)


@pytest.mark.parametrize("dead", ["EXPIRED", "ERROR"])
def test_a_dead_container_is_replaced(project, monkeypatch, mock, dead):
    config = threads_config(project, monkeypatch)
    r = routes(mock, container="c2")
    mock.get(f"{API}/c1").mock(side_effect=[ok(status="FINISHED", id="c1"),
                                            ok(status=dead, id="c1", error_message="UNKNOWN")])
    r["publish"].mock(side_effect=httpx.ReadTimeout("no answer"))
    r["create"].mock(return_value=ok(id="c1"))
    send(config)
    [row] = rows(config)
    assert (row.status, row.remote_id) == ("unknown", "c1")
    r["create"].mock(return_value=ok(id="c2"))
    r["publish"].mock(side_effect=None, return_value=ok(id="m1"))
    [again] = retry(config, unknown=True, channels=[NAME])
    assert again.sent == 1
    assert r["create"].call_count == 2
    assert [dict(c.request.url.params) for c in r["publish"].calls][-1] == {"creation_id": "c2"}


def test_a_container_that_fails_fails_the_delivery(project, monkeypatch, mock):
    config = threads_config(project, monkeypatch)
    r = routes(mock)
    r["status"].mock(side_effect=None, return_value=ok(status="ERROR", id="c1",
                                                       error_message="FAILED_DOWNLOADING_IMAGE"))
    report = send(config, INFUSION)
    assert (report.sent, report.failed) == (0, 1)
    [row] = rows(config)
    assert row.status == "failed" and row.remote_id == "c1"
    assert "FAILED_DOWNLOADING_IMAGE" in row.last_error and "retry --failed" in row.last_error
    assert r["publish"].call_count == 0


def test_publishing_twice_sends_once(project, monkeypatch, mock):
    config = threads_config(project, monkeypatch)
    r = routes(mock)
    assert send(config).sent == 1
    second = send(config)
    assert (second.sent, second.already_sent) == (0, 1)
    assert r["create"].call_count == 1 and r["publish"].call_count == 1


@pytest.mark.parametrize(("reply", "outcome", "words"), [
    (graph_error(400, 190, "Error validating access token"), "error", "invalid or expired"),
    (graph_error(403, 10, "Application does not have permission"), "error", "threads_content_publish"),
    (graph_error(400, 4, "Application request limit reached"), "deferred", "250 posts a day"),
    (graph_error(400, 100, "Invalid parameter"), "failed", "Invalid parameter"),
    (graph_error(500, 2, "Service temporarily unavailable"), "failed", "temporary error"),
])
def test_graph_errors(project, monkeypatch, mock, reply, outcome, words):
    config = threads_config(project, monkeypatch)
    r = routes(mock)
    r["create"].mock(return_value=reply)
    report = send(config)
    [row] = rows(config)
    if outcome == "error":          # the channel stops: nothing else can go out with this token
        assert words in report.error and row.status == "pending"
    elif outcome == "deferred":
        assert report.deferred == 1 and row.status == "pending" and row.next_attempt_at is not None
        assert words in row.last_error
    else:
        assert report.failed == 1 and row.status == "failed" and words in row.last_error
    if reply.status_code == 500:
        assert r["create"].call_count == 3          # retried (retries: 2) before failing
    assert r["publish"].call_count == 0
    assert TOKEN not in (report.error or "") + (row.last_error or "")


def test_a_temporary_error_while_publishing_asks_before_publishing_again(project, monkeypatch, mock):
    config = threads_config(project, monkeypatch)
    r = routes(mock, status=["FINISHED", "PUBLISHED"])
    r["publish"].mock(return_value=graph_error(500, 2, "Service temporarily unavailable"))
    report = send(config)
    # The retry found the container published (the 500 came after the fact): no second publish.
    assert report.sent == 1 and r["publish"].call_count == 1
    [row] = rows(config)
    assert (row.status, row.remote_id) == ("sent", "c1")


def test_the_token_is_never_logged(project, monkeypatch, mock, caplog):
    config = threads_config(project, monkeypatch)
    routes(mock)
    caplog.set_level(logging.DEBUG)
    send(config)
    assert caplog.records
    assert TOKEN not in caplog.text
    assert all(TOKEN not in (r.last_error or "") + (r.remote_url or "") for r in rows(config))


def test_the_network_must_be_enabled(project, monkeypatch, mock):
    monkeypatch.setenv("THREADS_TOKEN", TOKEN)
    enable_network(project, "threads", "{enabled: false}")
    config = add_channel(project, NAME, "threads", {"user_id": 1234, "access_token": "${THREADS_TOKEN}"})
    report = send(config)
    assert "add `threads: {}` there" in report.error
    assert not mock.calls


def test_a_bad_user_id_names_the_key(project, monkeypatch):
    from pipeline.channels.registry import build_channel
    from pipeline.errors import ConfigError

    monkeypatch.setenv("THREADS_TOKEN", TOKEN)
    enable_network(project, "threads")
    config = add_channel(project, NAME, "threads", {"user_id": "@rtr", "access_token": "${THREADS_TOKEN}"})
    with pytest.raises(ConfigError, match=r"channels\.threads\.user_id") as err:
        build_channel(config, NAME)
    assert TOKEN not in str(err.value)


def test_sending_outside_a_publish_is_refused(project, monkeypatch, mock):
    from pipeline.channels.registry import build_channel
    from pipeline.errors import ChannelError
    from pipeline.intake.sources import load_all
    from pipeline.models import Delivery
    from pipeline.preview import render_post

    config = threads_config(project, monkeypatch)
    routes(mock)
    channel = build_channel(config, NAME)
    rendered = render_post(next(p for p in load_all(config).posts if p.slug == SEED_SLUG), config)
    delivery = Delivery(key="k", channel=NAME, edition=SEED_SLUG, kind="social", network="threads",
                        snippet=rendered.snippets["threads"], rendered=rendered)
    with pytest.raises(ChannelError, match="outside a publish"):
        channel.send(delivery)
    channel.close()
    assert not mock.calls



@pytest.mark.parametrize("state_backend", ["postgresql"], indirect=True)
def test_workers_keep_the_container_on_the_row_too(project, monkeypatch, mock):
    from pipeline.workers.tasks import Deliverer

    threads_config(project, monkeypatch)
    config = workers_mode(project)
    r = routes(mock)
    r["publish"].mock(side_effect=httpx.ReadTimeout("no answer"))
    [planned] = publish(config, slugs=[SEED_SLUG], channels=[NAME])
    assert planned.jobs == 1 and not mock.calls
    [job] = jobs(config)
    deliverer = Deliverer(config, threading.Event())
    try:
        report = deliverer.deliver(NAME, SEED_SLUG, job["keys"])
    finally:
        deliverer.close()
    # Through the worker's channel (wrapped to share its rate limits) the hook is the same.
    assert report.unknown == 1
    [row] = rows(config)
    assert (row.status, row.remote_id) == ("unknown", "c1")


def test_a_threads_parts_reply_to_the_part_before(project, monkeypatch, mock, write_post):
    from tests.conftest import thread_post

    write_post("2024-06-03-story.md", thread_post(40))
    config = threads_config(project, monkeypatch)
    containers, media = iter(range(1, 100)), iter(range(1, 100))
    create = mock.post(CREATE).mock(side_effect=lambda request: ok(id=f"c{next(containers)}"))
    mock.get(url__regex=rf"^{API}/c\d+").mock(side_effect=lambda request: ok(status="FINISHED"))
    mock.post(PUBLISH).mock(side_effect=lambda request: ok(id=f"m{next(media)}"))
    mock.get(url__regex=rf"^{API}/m\d+").mock(return_value=ok())
    report = send(config, "2024-06-03-story")
    assert report.sent == create.call_count >= 2
    bodies = [form(call.request) for call in create.calls]
    assert "reply_to_id" not in bodies[0]
    assert [b["reply_to_id"] for b in bodies[1:]] == [f"m{i}" for i in range(1, len(bodies))]
    assert "link_attachment" not in bodies[0] and "link_attachment" in bodies[-1]   # the link ends it
