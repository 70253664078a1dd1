"""Sign-up end to end in Chromium: the hosted form, the confirmation email read from a real SMTP
server, the link opened and the button clicked, and the address `active` in the SQLite file."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, Request, expect

from pipeline.config import Config, load_config
from pipeline.web.server import build_server
from tests.servers import AppServers
from tests.smtp_sink import Received, Sink, free_port

pytestmark = pytest.mark.browser

ADA = "ada@example.com"


@pytest.fixture
def served(project: Path, sink: Sink) -> Iterator[tuple[Config, str]]:
    """(config, base URL) of `pipeline serve`'s server for the project, confirmations going
    through an smtp channel to `sink`."""
    port = free_port()
    path = project / "config.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "\n".join([
        "", "  newsletter:", "    type: smtp", "    host: 127.0.0.1", f"    port: {sink.port}",
        "    security: none", "    processes: false", "    retries: 0",
        f"unsubscribe: {{base_url: 'http://127.0.0.1:{port}'}}",
        "subscribe: {channel: newsletter, topics: [wellness, research]}", ""]), encoding="utf-8")
    config = load_config(path)
    servers = AppServers()
    try:
        yield config, servers.run(build_server(config, port=port))
    finally:
        servers.stop()


def _mail_to(sink: Sink, address: str) -> Received:
    deadline = time.monotonic() + 20
    while True:
        found = [r for r in sink.received if r.rcpt_tos == [address]]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no confirmation for {address} arrived"
        time.sleep(0.05)


def _row(config: Config, address: str) -> tuple[str, str | None, str | None, str]:
    """(status, consent_source, consent_ip, tags), read from the SQLite file itself."""
    with sqlite3.connect(config.path(config.state)) as db:
        return db.execute("SELECT status, consent_source, consent_ip, tags FROM subscribers "
                          "WHERE email_key = ?", (address,)).fetchone()


def test_sign_up_confirm_in_chromium(page: Page, served: tuple[Config, str], sink: Sink) -> None:
    config, base = served
    posts: list[Request] = []
    page.on("request", lambda r: posts.append(r) if r.method == "POST" else None)

    page.goto(f"{base}/subscribe")
    expect(page.get_by_role("heading", name="Subscribe")).to_be_visible()
    honeypot = page.locator("input[name=website]")
    box = honeypot.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 0         # off screen: people never see it
    page.get_by_label("Email").fill(ADA)
    page.get_by_label("Name").fill("Ada Lovelace")
    page.get_by_label("research").check()
    page.get_by_role("button", name="Subscribe").click()
    expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()
    assert _row(config, ADA)[0] == "pending"
    headers = posts[0].all_headers()
    assert headers.get("origin") == base, headers

    message = _mail_to(sink, ADA).message
    assert message["Subject"] == "Confirm your subscription to RTR Wellness Center"
    (link,) = re.findall(r'href="(http://127\.0\.0\.1:\d+/confirm/[^"]+)"',
                         message.get_body(("html",)).get_content())[:1]
    page.goto(link)
    expect(page.get_by_text(f"Subscribe {ADA} to the RTR Wellness Center newsletter?")).to_be_visible()
    assert _row(config, ADA)[0] == "pending"          # opening the link alone confirms nothing
    page.get_by_role("button", name="Confirm my subscription").click()
    expect(page.get_by_role("heading", name="You're subscribed")).to_be_visible()

    status, source, ip, tags = _row(config, ADA)
    assert (status, source, tags) == ("active", "form", "research")
    assert ip and "127.0.0.1" not in ip

    page.get_by_role("link", name="your subscription page").click()
    expect(page.locator("#status")).to_have_text("Status: subscribed.")
    expect(page.get_by_label("Name")).to_have_value("Ada Lovelace")
    expect(page.get_by_label("research")).to_be_checked()
