"""Sign-up with double opt-in over real HTTP (`pipeline serve`'s server in a thread), with the
confirmations sent through a real SMTP channel to a real SMTP server (aiosmtpd) and the state in
a real SQLite file."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from pipeline.config import Config, load_config
from pipeline.errors import ConfigError, PipelineError
from pipeline.models import Status
from pipeline.store import optin
from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from pipeline.store.ledger import Ledger
from pipeline.store.schema import deliveries, subscribers
from pipeline.web.confirmation import confirmation_channel, confirmation_key, send_confirmation
from pipeline.web.guards import SlidingWindow, client_key
from pipeline.web.server import build_server, create_app
from pipeline.web.subscribe_form import form_action, subscribe_form
from tests.servers import AppServers
from tests.smtp_sink import Received, Sink, free_port

SITE = "https://www.rtrwellnesscenter.com"          # site.url of the shipped config
ADA, BOB = "ada@example.com", "bob@example.com"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TOPICS = ["wellness", "research", "events"]


# -- the server ---------------------------------------------------------------------------------

class Site:
    """The server of one test: its config, base URL, a client, and the SMTP sink it mails."""

    def __init__(self, config: Config, base: str, sink: Sink) -> None:
        self.config, self.base, self.sink = config, base, sink
        self.engine = engine_for(config)
        self.secret = store.state_secret(self.engine)
        self.client = httpx.Client(base_url=base, follow_redirects=False, timeout=10)
        self._sentinels = count()

    def sign_up(self, email: str, **fields: Any) -> httpx.Response:
        headers = fields.pop("headers", {})
        return self.client.post("/subscribe", data={"email": email, **fields}, headers=headers)

    def mails(self, count: int) -> list[Received]:
        """Wait until the sink has `count` messages (fail after 20 s) and return them."""
        deadline = time.monotonic() + 20
        while len(self.sink.received) < count:
            assert time.monotonic() < deadline, f"{len(self.sink.received)} message(s), expected {count}"
            time.sleep(0.02)
        return list(self.sink.received)

    def settle(self) -> list[Received]:
        """Every confirmation asked for so far, sent: confirmations go out in order, so once a
        fresh address's has arrived, all earlier ones are done. Returns the messages before it."""
        before = len(self.sink.received)
        sentinel = f"sentinel{next(self._sentinels)}@example.net"
        assert self.sign_up(sentinel).status_code == 200
        deadline = time.monotonic() + 20
        while not any(r.rcpt_tos == [sentinel] for r in self.sink.received):
            assert time.monotonic() < deadline, "the sentinel's confirmation never arrived"
            time.sleep(0.02)
        received = [r for r in self.sink.received if r.rcpt_tos != [sentinel]]
        assert len(self.sink.received) == len(received) + 1 >= before + 1
        return [r for r in received if not r.rcpt_tos[0].startswith("sentinel")]

    def row(self, email: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(select(subscribers).where(subscribers.c.email_key == email.lower())).first()

    def status(self, email: str) -> str | None:
        row = self.row(email)
        return row.status if row is not None else None


def _append(project: Path, text: str) -> None:
    path = project / "config.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "\n" + text + "\n", encoding="utf-8")


@pytest.fixture
def make_site(project: Path, sink: Sink) -> Iterator[Callable[..., Site]]:
    """make_site(**subscribe settings, smtp_port=..., extra=YAML) -> a running Site whose
    confirmations go through the smtp channel `newsletter` to `sink`."""
    servers = AppServers()
    made: list[Site] = []

    def make(*, smtp_port: int | None = None, extra: str = "", **settings: object) -> Site:
        port = free_port()
        _append(project, "\n".join([
            "  newsletter:", "    type: smtp", "    host: 127.0.0.1", f"    port: {smtp_port or sink.port}",
            "    security: none", "    processes: false", "    retries: 0", "    timeout: 5"]))
        subscribe = {"channel": "newsletter", "topics": TOPICS, "rate_per_ip": 1000,
                     "rate_per_address": 1000, **settings}
        _append(project, f"unsubscribe: {{base_url: 'http://127.0.0.1:{port}'}}\n"
                         f"subscribe: {json.dumps(subscribe)}\n{extra}")
        config = load_config(project / "config.yaml")
        base = servers.run(build_server(config, port=port))
        site = Site(config, base, sink)
        made.append(site)
        return site

    yield make
    for site in made:
        site.client.close()
    servers.stop()


@pytest.fixture
def site(make_site: Callable[..., Site]) -> Site:
    return make_site()


# -- reading pages and messages ----------------------------------------------------------------

class _Forms(HTMLParser):
    """The forms of a page: [{"attrs": {...}, "inputs": [{...}], "buttons": [{...}]}], and the
    attributes of the element each input sits in (for the honeypot's wrapper)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self.stack: list[dict[str, str | None]] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"attrs": a, "inputs": [], "buttons": []})
        elif tag == "input" and self.forms:
            self.forms[-1]["inputs"].append({**a, "_parents": list(self.stack)})
        elif tag == "button" and self.forms:
            self.forms[-1]["buttons"].append(a)
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        if tag not in ("input", "br", "meta", "link"):
            self.stack.append(a)

    def handle_endtag(self, tag: str) -> None:
        if self.stack and tag not in ("input", "br", "meta", "link"):
            self.stack.pop()


def parse(html: str) -> _Forms:
    parser = _Forms()
    parser.feed(html)
    return parser


def confirm_link(message: Received) -> str:
    text = message.message.get_body(("plain",)).get_content()
    (link,) = re.findall(r"http://127\.0\.0\.1:\d+/confirm/\S+", text)
    return link


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def _forge(token: str) -> str:
    return token[:-1] + ("0" if token[-1] != "0" else "1")


# -- the page -----------------------------------------------------------------------------------

def test_signup_page_has_the_form_topics_honeypot_and_consent(site):
    page = site.client.get("/subscribe")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    (form,) = parse(page.text).forms
    assert form["attrs"]["method"] == "post" and form["attrs"]["action"] == "/subscribe"
    by_name: dict[str, list[dict[str, Any]]] = {}
    for field in form["inputs"]:
        by_name.setdefault(field["name"], []).append(field)
    assert set(by_name) == {"email", "name", "tags", "website"}
    assert by_name["email"][0]["type"] == "email" and "required" in by_name["email"][0]
    assert [(f["type"], f["value"]) for f in by_name["tags"]] == [("checkbox", t) for t in TOPICS]
    (honeypot,) = by_name["website"]
    assert honeypot["tabindex"] == "-1" and honeypot["autocomplete"] == "off"
    assert any(p.get("class") == "hp" and p.get("aria-hidden") == "true" for p in honeypot["_parents"])
    assert re.search(r"\.hp \{ position: absolute; left: -10000px;", page.text)
    assert "By subscribing you agree to receive the RTR Wellness Center newsletter" in page.text


# -- sign-up, confirmation, confirm -------------------------------------------------------------

def test_signup_confirmation_and_confirm(site):
    response = site.sign_up(ADA, name="Ada", tags=["research", "not-a-topic", "wellness"])
    assert response.status_code == 200
    assert "Check your inbox" in response.text
    row = site.row(ADA)
    assert (row.status, row.name, row.tags) == ("pending", "Ada", "wellness,research")
    assert row.consent_at is None and row.consent_source is None
    assert row.consent_ip == optin.ip_hash("127.0.0.1", site.secret) and "127.0.0.1" not in row.consent_ip

    (received,) = site.mails(1)
    message = received.message
    assert received.rcpt_tos == [ADA] and received.mail_from == "news@example.com"
    assert message["To"] == ADA and message["From"] == "RTR Wellness Center <news@example.com>"
    assert message["Subject"] == "Confirm your subscription to RTR Wellness Center"
    assert message["List-Unsubscribe"] is None and message["List-Unsubscribe-Post"] is None
    assert message["Auto-Submitted"] == "auto-generated"
    link = confirm_link(received)
    html = message.get_body(("html",)).get_content()
    assert f'href="{link}"' in html
    text = message.get_body(("plain",)).get_content()
    assert text.startswith("Hi Ada,")
    assert "entered in the sign-up form of RTR Wellness Center" in text       # why it came
    assert "If you did not ask for this, ignore this email" in text            # ignoring is fine
    assert "works for 7 days" in text

    # The ledger holds the send, under the sign-up's deterministic key.
    key = confirmation_key("newsletter", row.uid, row.confirm_sent_at)
    (sent,) = _settled_confirmations(site, key)
    assert sent is not None and (sent.status, sent.kind, sent.edition) == (Status.SENT, "email", "confirm")
    assert sent.remote_id == message["Message-ID"]

    # GET shows a button and changes nothing (link scanners follow GETs).
    page = site.client.get(path_of(link))
    assert page.status_code == 200 and ADA in page.text
    (form,) = parse(page.text).forms
    assert form["attrs"]["method"] == "post" and "action" not in form["attrs"]
    assert site.status(ADA) == "pending"

    done = site.client.post(path_of(link))
    assert done.status_code == 200 and "You&#39;re subscribed" in done.text
    row = site.row(ADA)
    assert row.status == "active" and row.consent_source == "form" and row.consent_at is not None
    assert row.consent_ip == optin.ip_hash("127.0.0.1", site.secret)
    (manage,) = [href for href in parse(done.text).links if href.startswith("/manage/")]
    assert manage == f"/manage/{store.token(row.uid, ADA, site.secret)}"
    assert "Status: subscribed." in site.client.get(manage).text

    # Again: still active, the page says so; the link opened later shows no button.
    assert site.client.post(path_of(link)).status_code == 200
    again = site.client.get(path_of(link))
    assert "already subscribed" in again.text and parse(again.text).forms == []
    assert site.row(ADA).consent_at == row.consent_at


def test_the_answer_is_the_same_whoever_is_on_the_list(site):
    store.upsert(site.engine, BOB, "Bob")                      # active
    store.upsert(site.engine, "cy@example.com")
    store.unsubscribe(site.engine, "cy@example.com")           # unsubscribed: may join again
    store.suppress(site.engine, "dee@example.com", reason="asked by phone")

    def answer(address: str, **headers: str) -> tuple[int, str, dict[str, str]]:
        response = site.sign_up(address, headers=headers)
        kept = {k: v for k, v in response.headers.items() if k not in ("date", "content-length")}
        return response.status_code, response.text, kept

    html = [answer(a) for a in (ADA, BOB, "cy@example.com", "dee@example.com", ADA)]
    assert all(a == html[0] for a in html) and html[0][0] == 200
    as_json = [answer(a, Accept="application/json") for a in ("eve@example.com", BOB, "dee@example.com")]
    assert all(a == as_json[0] for a in as_json) and as_json[0][0] == 202

    # New and unsubscribed addresses get one confirmation each; active and suppressed ones none.
    received = site.settle()
    assert sorted(r.rcpt_tos[0] for r in received) == [ADA, "cy@example.com", "eve@example.com"]
    assert {a: site.status(a) for a in (ADA, BOB, "cy@example.com", "dee@example.com")} == {
        ADA: "pending", BOB: "active", "cy@example.com": "unsubscribed", "dee@example.com": "suppressed"}
    assert site.row(BOB).name == "Bob"              # a stranger cannot rename an active reader


def test_a_pending_address_gets_at_most_one_confirmation_per_hour(site):
    assert site.sign_up(ADA).status_code == 200
    (first,) = site.mails(1)
    sent_at = site.row(ADA).confirm_sent_at
    assert site.sign_up(ADA).status_code == 200
    assert site.sign_up(ADA.upper(), name="Ada").status_code == 200
    assert [r.rcpt_tos for r in site.settle()] == [[ADA]]
    assert site.row(ADA).confirm_sent_at == sent_at and site.row(ADA).name == "Ada"

    # An hour later (the last confirmation moved back in the database), one more is sent.
    with site.engine.begin() as conn:
        conn.execute(update(subscribers).where(subscribers.c.email_key == ADA)
                     .values(confirm_sent_at=sent_at - timedelta(minutes=61)))
    assert site.sign_up(ADA).status_code == 200
    received = site.settle()
    assert [r.rcpt_tos for r in received] == [[ADA], [ADA]]
    second = received[1]
    assert second.message["Message-ID"] != first.message["Message-ID"]     # a new message, not a resend
    uid = site.row(ADA).uid
    rows = _settled_confirmations(site, uid)
    assert len(rows) == 2 and all(r.status == Status.SENT for r in rows)
    assert site.client.post(path_of(confirm_link(second))).status_code == 200
    assert site.status(ADA) == "active"


def _settled_confirmations(site: Any, part: str) -> list[Any]:
    """The ledger's confirmation rows whose key holds `part`, once none is pending or sending.

    The sending thread records a result after the server's 250 (with its next claim), so the
    sink can hold a message whose row is still `sending`: wait for it, a while at most.
    """
    deadline = time.monotonic() + 20
    while True:
        ledger = Ledger(site.engine)
        try:
            rows = [r for r in ledger.rows(channel="newsletter")
                    if r.key.startswith("newsletter:confirm:") and part in r.key]
        finally:
            ledger.close()
        if rows and all(r.status not in (Status.PENDING, Status.SENDING) for r in rows):
            return rows
        assert time.monotonic() < deadline, [(r.key, r.status) for r in rows]
        time.sleep(0.05)


def test_forged_malformed_and_expired_tokens_change_nothing(site):
    assert site.sign_up(ADA).status_code == 200
    assert site.sign_up(BOB).status_code == 200
    site.mails(2)
    ada, bob = site.row(ADA), site.row(BOB)
    good = path_of(confirm_link(next(r for r in site.sink.received if r.rcpt_tos == [ADA])))
    expired = optin.confirm_token(ada.uid, ADA, site.secret, expires=datetime.now(UTC) - timedelta(days=1))
    other = optin.confirm_token(ada.uid, BOB, site.secret, expires=datetime.now(UTC) + timedelta(days=1))
    cases = {
        "forged": (_forge(good), 404),
        "another address": (f"/confirm/{other}", 404),
        "unknown uid": (f"/confirm/{'f' * 32}.{good.split('.')[1]}.{good.rsplit('.', 1)[1]}", 404),
        "malformed": ("/confirm/abc", 400),
        "unsubscribe token": (f"/confirm/{store.token(ada.uid, ADA, site.secret)}", 400),
        "expired": (f"/confirm/{expired}", 410),
    }
    for name, (path, status) in cases.items():
        assert site.client.get(path).status_code == status, name
        response = site.client.post(path)
        assert response.status_code == status, name
        assert ADA not in response.text, name
        assert (site.status(ADA), site.status(BOB)) == ("pending", "pending"), name
    page = site.client.get(f"/confirm/{expired}")
    assert "This confirmation link has expired" in page.text
    (form,) = parse(page.text).forms                  # the sign-up form, offered again
    assert form["attrs"]["action"] == "/subscribe"
    assert (site.row(ADA).consent_at, site.row(BOB).consent_at) == (ada.consent_at, bob.consent_at)
    assert site.client.post(good).status_code == 200
    assert (site.status(ADA), site.status(BOB)) == ("active", "pending")


def test_the_request_log_names_the_uid_not_the_confirmation_token(site, caplog):
    site.sign_up(ADA)
    link = path_of(confirm_link(site.mails(1)[0]))
    token = link.rsplit("/", 1)[1]
    with caplog.at_level("INFO", logger="pipeline"):
        assert site.client.get(link).status_code == 200
        manage = f"/manage/{store.token(site.row(ADA).uid, ADA, site.secret)}"
        assert site.client.get(manage).status_code == 200
        deadline = time.monotonic() + 5
        while "/manage/<token" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
    uid = site.row(ADA).uid
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("pipeline"))
    assert f"/confirm/<token of {uid}>" in ours and f"/manage/<token of {uid}>" in ours
    assert token not in ours and ADA not in ours


# -- abuse controls ---------------------------------------------------------------------------

def test_honeypot_is_answered_like_a_sign_up_and_does_nothing(site):
    real = site.sign_up(ADA)
    robot = site.sign_up(BOB, website="http://spam.example/")
    assert (robot.status_code, robot.text) == (real.status_code, real.text)
    robot_json = site.client.post("/subscribe", json={"email": BOB, "website": "x"})
    assert robot_json.status_code == 202 and robot_json.json()["ok"] is True
    assert site.row(BOB) is None
    assert [r.rcpt_tos for r in site.settle()] == [[ADA]]


def test_rate_limit_per_ip(make_site):
    site = make_site(rate_per_ip=3)
    for i in range(3):
        assert site.sign_up(f"r{i}@example.com").status_code == 200
    refused = site.sign_up("r3@example.com")
    assert refused.status_code == 429
    assert 0 < int(refused.headers["retry-after"]) <= 3600
    assert "Too many sign-ups from your network" in refused.text
    as_json = site.client.post("/subscribe", json={"email": "r3@example.com"})
    assert as_json.status_code == 429 and as_json.json() == {
        "ok": False, "error": "Too many sign-ups from your network. Please try again later."}
    assert site.row("r3@example.com") is None

    # Another client (as the reverse proxy on loopback says: X-Forwarded-For) has its own count;
    # an IPv6 client is counted by its /64.
    other = {"X-Forwarded-For": "198.51.100.7"}
    assert site.sign_up("r3@example.com", headers=other).status_code == 200
    assert site.row("r3@example.com").consent_ip == optin.ip_hash("198.51.100.7", site.secret)
    for i in range(3):
        v6 = {"X-Forwarded-For": f"2001:db8:1:2::{i + 1}"}
        assert site.sign_up(f"v{i}@example.com", headers=v6).status_code == 200
    same_64, next_64 = {"X-Forwarded-For": "2001:db8:1:2:ffff::9"}, {"X-Forwarded-For": "2001:db8:1:3::1"}
    assert site.sign_up("v3@example.com", headers=same_64).status_code == 429
    assert site.sign_up("v3@example.com", headers=next_64).status_code == 200


def test_rate_limit_per_address(make_site):
    site = make_site(rate_per_address=2)
    for i in range(2):
        assert site.sign_up(ADA, headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code == 200
    refused = site.sign_up(ADA.upper(), headers={"X-Forwarded-For": "198.51.100.9"})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert "Too many sign-ups for this address" in refused.text
    assert site.sign_up(BOB).status_code == 200


def test_sliding_window_forgets_hits_older_than_its_period():
    now = [1000.0]
    window = SlidingWindow(2, 60, clock=lambda: now[0])
    assert window.hit("a") is None and window.hit("a") is None
    assert window.hit("a") == 60
    now[0] += 45
    assert window.hit("a") == 15 and window.hit("b") is None
    now[0] += 15
    assert window.hit("a") is None and window.hit("a") is None and window.hit("a") == 60
    small = SlidingWindow(1, 60, max_keys=2, clock=lambda: now[0])
    assert [small.hit(k) for k in "xyz"] == [None, None, None]
    assert small.hit("x") is None            # forgotten: only the two latest keys are kept
    assert small.hit("z") == 60


def test_ip_keys():
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert client_key("2001:db8:0:1::1") != client_key("2001:db8::1")
    assert client_key("::ffff:198.51.100.7") == client_key("198.51.100.7") == "198.51.100.7"


def test_body_larger_than_max_body_is_413(make_site):
    site = make_site(max_body=1024)
    big = {"email": ADA, "name": "x" * 2000}
    declared = site.client.post("/subscribe", data=big)
    assert declared.status_code == 413
    assert "larger than 1024 bytes" in declared.text

    def chunks() -> Iterator[bytes]:      # no Content-Length: chunked, counted as it arrives
        yield b"email=ada%40example.com&name="
        for _ in range(4):
            yield b"y" * 500

    streamed = site.client.post("/subscribe", content=chunks(), headers=FORM)
    assert streamed.status_code == 413
    assert site.row(ADA) is None

    # A Content-Length beyond the limit is answered at once, without waiting for the body.
    host, port = site.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(b"POST /subscribe HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
                    b"\r\nContent-Length: 100000\r\n\r\nemail=a")
        assert raw.recv(100).startswith(b"HTTP/1.1 413 ")
    assert site.sign_up(ADA).status_code == 200            # a normal sign-up still fits


# -- CORS -----------------------------------------------------------------------------------------

def test_cors_preflight_and_posts_from_allowed_and_other_origins(site):
    preflight = site.client.options("/subscribe", headers={
        "Origin": SITE, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == SITE
    assert preflight.headers["access-control-allow-methods"] == "POST"
    assert preflight.headers["access-control-allow-headers"] == "content-type"
    assert preflight.headers["vary"] == "Origin"
    for origin, method in (("https://evil.example", "POST"), (SITE, "DELETE")):
        denied = site.client.options("/subscribe", headers={"Origin": origin,
                                                             "Access-Control-Request-Method": method})
        assert denied.status_code == 403 and "access-control-allow-origin" not in denied.headers

    allowed = site.client.post("/subscribe", json={"email": ADA, "tags": ["events"]},
                               headers={"Origin": SITE})
    assert allowed.status_code == 202
    assert allowed.headers["access-control-allow-origin"] == SITE and allowed.headers["vary"] == "Origin"
    assert site.row(ADA).tags == "events"

    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"},
                    {"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin"},
                    {"Sec-Fetch-Site": "cross-site"}):
        denied = site.sign_up(BOB, headers=headers)
        assert denied.status_code == 403, headers
        assert "access-control-allow-origin" not in denied.headers
    assert site.row(BOB) is None
    # This server's own page: its Origin, or `null` from a page with `Referrer-Policy: no-referrer`.
    assert site.sign_up(BOB, headers={"Origin": site.base}).status_code == 200
    assert site.sign_up("cy@example.com", headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"}
                        ).status_code == 200
    assert [r.rcpt_tos[0] for r in site.settle()] == [ADA, BOB, "cy@example.com"]


def test_allowed_origins_replace_the_site(make_site):
    site = make_site(allowed_origins=["https://blog.example.org/", "https://www.example.net:8443"])
    assert site.sign_up(ADA, headers={"Origin": "https://blog.example.org"}).status_code == 200
    assert site.sign_up(BOB, headers={"Origin": "https://www.example.net:8443"}).status_code == 200
    assert site.sign_up("cy@example.com", headers={"Origin": SITE}).status_code == 403
    assert site.sign_up("cy@example.com", headers={"Origin": "https://www.example.net"}).status_code == 403


def test_redirect_after_a_form_post_from_the_blog(make_site):
    site = make_site(redirect="https://www.rtrwellnesscenter.com/thanks/")
    response = site.sign_up(ADA, headers={"Origin": SITE})
    assert response.status_code == 303
    assert response.headers["location"] == "https://www.rtrwellnesscenter.com/thanks/"
    # From this server's own page the answer is the page: its CSP would block the redirect.
    own = site.sign_up(BOB, headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 200 and "Check your inbox" in own.text
    own = site.sign_up("dee@example.com", headers={"Origin": site.base})
    assert own.status_code == 200 and "Check your inbox" in own.text
    assert site.client.post("/subscribe", json={"email": "cy@example.com"}).status_code == 202


# -- bodies ---------------------------------------------------------------------------------------

def test_json_sign_up_and_bad_bodies(site):
    response = site.client.post("/subscribe", json={"email": ADA, "name": "Ada", "tags": ["events", "x"]})
    assert response.status_code == 202
    assert response.json()["ok"] is True and "Check your inbox" in response.json()["message"]
    assert (site.row(ADA).name, site.row(ADA).tags) == ("Ada", "events")

    bad = {
        b"{not json": (400, "The body is not valid JSON."),
        b'["a@example.com"]': (400, 'Send a JSON object: {"email": "...", "name": "...", "tags": [...]}.'),
        b'{"email": 12}': (400, "`email` must be text."),
        b'{"email": "bob@"}': (400, "That is not a valid email address: There must be something after "
                                    "the @-sign."),
        b'{"name": "Bob"}': (400, "Please enter your email address."),
    }
    for body, (status, error) in bad.items():
        answer = site.client.post("/subscribe", content=body, headers={"Content-Type": "application/json"})
        assert (answer.status_code, answer.json()) == (status, {"ok": False, "error": error}), body
    text = site.client.post("/subscribe", content=b"email=bob@example.com",
                            headers={"Content-Type": "text/plain"})
    assert text.status_code == 415
    multipart = site.client.post("/subscribe", files={"email": ("a.txt", b"bob@example.com")})
    assert multipart.status_code == 400
    assert site.row(BOB) is None


def test_comma_separated_and_multipart_forms_are_accepted(site):
    response = site.client.post("/subscribe", data={"email": BOB, "tags": "research,events"})
    assert response.status_code == 200
    boundary = "b0undary"
    fields = (("email", ADA), ("tags", "wellness"), ("tags", "events"))
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                   for k, v in fields) + f"--{boundary}--\r\n"
    response = site.client.post("/subscribe", content=body.encode(),
                                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 200
    assert site.row(ADA).tags == "wellness,events" and site.row(BOB).tags == "research,events"


def test_invalid_address_is_400_with_the_form_filled_in(site):
    response = site.sign_up("ada@@example.com", name="Ada <b>", tags=["events"])
    assert response.status_code == 400
    assert "That is not a valid email address" in response.text
    assert 'value="ada@@example.com"' in response.text and 'value="Ada &lt;b&gt;"' in response.text
    (form,) = parse(response.text).forms
    checked = [i["value"] for i in form["inputs"] if i["name"] == "tags" and "checked" in i]
    assert checked == ["events"]
    assert store.count(site.engine) == 0


# -- manage -------------------------------------------------------------------------------------

def _manage(site: Site, email: str, **form: Any) -> httpx.Response:
    uid = site.row(email).uid
    path = f"/manage/{store.token(uid, email, site.secret)}"
    return site.client.post(path, data=form) if form else site.client.get(path)


def _buttons(response: httpx.Response) -> list[str]:
    return [b.get("value") or "" for form in parse(response.text).forms for b in form["buttons"]]


def test_manage_page_save_unsubscribe_resubscribe(site):
    store.upsert(site.engine, ADA, "Ada", ("research", "vip"))          # vip: the operator's own tag
    page = _manage(site, ADA)
    assert page.status_code == 200 and ADA in page.text and "Status: subscribed." in page.text
    assert _buttons(page) == ["save", "unsubscribe"]
    (save_form, _) = parse(page.text).forms
    checked = [i["value"] for i in save_form["inputs"] if i.get("name") == "tags" and "checked" in i]
    assert checked == ["research"]

    saved = _manage(site, ADA, action="save", name="Ada L.", tags=["events", "wellness", "bogus"])
    assert saved.status_code == 200 and "Your preferences are saved." in saved.text
    assert (site.row(ADA).name, site.row(ADA).tags) == ("Ada L.", "vip,wellness,events")

    gone = _manage(site, ADA, action="unsubscribe")
    assert gone.status_code == 200 and "You are unsubscribed" in gone.text
    assert (site.row(ADA).status, site.row(ADA).status_reason) == ("unsubscribed", "manage page")
    assert _buttons(gone) == ["save", "resubscribe"]
    refused = _manage(site, ADA, action="unsubscribe")
    assert refused.status_code == 409 and site.status(ADA) == "unsubscribed"

    back = _manage(site, ADA, action="resubscribe")
    assert back.status_code == 200 and "You are subscribed again." in back.text
    assert site.status(ADA) == "active" and site.row(ADA).consent_source == "manage"
    assert _manage(site, ADA, action="resubscribe").status_code == 409
    assert _manage(site, ADA, action="delete-everything").status_code == 400
    assert site.status(ADA) == "active"


@pytest.mark.parametrize("status, text, buttons", [
    ("bounced", "came back undelivered", ["save"]),
    ("complained", "reported as spam", ["save"]),
    ("suppressed", "asked never to email this address", []),
])
def test_manage_page_of_an_address_that_is_not_mailed(site, status, text, buttons):
    store.upsert(site.engine, ADA, "Ada")
    store.set_status(site.engine, ADA, store.SubscriberStatus(status), reason="test")
    page = _manage(site, ADA)
    assert page.status_code == 200 and text in page.text
    assert _buttons(page) == buttons
    assert ('href="/subscribe"' in page.text) == (status != "suppressed")
    for action in ("resubscribe", "unsubscribe"):
        assert _manage(site, ADA, action=action).status_code == 409
    assert site.status(ADA) == status


def test_manage_links_that_are_not_valid(site):
    store.upsert(site.engine, ADA)
    token = store.token(site.row(ADA).uid, ADA, site.secret)
    assert site.client.get(f"/manage/{_forge(token)}").status_code == 404
    assert site.client.post(f"/manage/{_forge(token)}", data={"action": "unsubscribe"}).status_code == 404
    assert site.client.get("/manage/abc").status_code == 400
    assert site.status(ADA) == "active"


# -- the confirmation and the ledger -------------------------------------------------------------

def test_the_same_confirmation_is_sent_once(project, sink):
    """The key is the sign-up's: a second send of the same confirmation (a second worker, or a
    resend after a crash) finds it sent; one left planned by a crash is sent, the same message."""
    config = _smtp_config(project, sink)
    engine = engine_for(config)
    secret = store.state_secret(engine)
    at = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    uid = optin.sign_up(engine, ADA, now=at).subscriber.uid
    first = send_confirmation(config, engine, secret, uid, channel="newsletter")
    again = send_confirmation(config, engine, secret, uid, channel="newsletter")
    assert (first.outcome, again.outcome) == ("sent", "already")
    assert first.key == again.key == f"newsletter:confirm:{uid}:20260302T093000.000000"
    assert sink.recipients() == {ADA: 1}

    # A crash after planning: the row is pending; the next send sends it, the same message.
    optin.sign_up(engine, BOB, now=at)
    bob = store.find(engine, address=BOB).uid
    ledger = Ledger(engine)
    try:
        assert ledger.plan(key=confirmation_key("newsletter", bob, at), channel="newsletter",
                           edition="confirm", kind="email")
    finally:
        ledger.close()
    assert send_confirmation(config, engine, secret, bob, channel="newsletter").outcome == "sent"
    assert send_confirmation(config, engine, secret, bob, channel="newsletter").outcome == "already"
    assert sink.recipients() == {ADA: 1, BOB: 1}

    # Nothing for an address that needs no confirmation any more.
    optin.confirm(engine, uid)
    assert send_confirmation(config, engine, secret, uid, channel="newsletter").outcome == "skipped"
    assert send_confirmation(config, engine, secret, "0" * 32, channel="newsletter").outcome == "skipped"


def test_the_confirmation_message_is_deterministic(project, sink):
    config = _smtp_config(project, sink)
    engine = engine_for(config)
    secret = store.state_secret(engine)
    at = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    uid = optin.sign_up(engine, ADA, now=at).subscriber.uid
    send_confirmation(config, engine, secret, uid, channel="newsletter")
    with engine.begin() as conn:          # as if the first send's result had been lost
        conn.execute(update(deliveries).values(status=Status.PENDING))
    send_confirmation(config, engine, secret, uid, channel="newsletter")
    first, second = (r.message for r in sink.received)
    assert first["Message-ID"] == second["Message-ID"] and first["Date"] == second["Date"]
    assert first.get_body(("plain",)).get_content() == second.get_body(("plain",)).get_content()
    stamp = confirm_link(sink.received[0]).rsplit("/", 1)[1].split(".")[1]
    assert int(stamp, 36) == int((at + timedelta(days=7)).timestamp())      # the sign-up's + confirm_days


def test_a_refused_confirmation_marks_the_address_bounced(site):
    site.sink.behaviour.permanent.add(BOB)
    assert site.sign_up(BOB).status_code == 200
    deadline = time.monotonic() + 20
    while site.status(BOB) != "bounced":
        assert time.monotonic() < deadline, "the refusal was never recorded"
        time.sleep(0.02)
    (row,) = _settled_confirmations(site, site.row(BOB).uid)
    assert row.status == Status.FAILED and "5.1.1" in (row.last_error or "")


def test_an_unreachable_mail_server_changes_nothing_in_the_answer(make_site, sink):
    site = make_site(smtp_port=free_port())          # nothing listens there
    response = site.sign_up(ADA)
    assert response.status_code == 200 and "Check your inbox" in response.text
    rows = _settled_confirmations(site, site.row(ADA).uid)
    assert rows[0].status == Status.FAILED
    assert rows[0].last_error and "127.0.0.1" in rows[0].last_error
    assert sink.received == []


# -- the snippet ----------------------------------------------------------------------------------

def test_subscribe_form_snippet_posts_to_the_server(site):
    snippet = subscribe_form(site.config)
    assert "<script" not in snippet.lower()
    parsed = parse(snippet)
    (form,) = parsed.forms
    assert form["attrs"]["method"] == "post"
    assert form["attrs"]["action"] == f"{site.base}/subscribe"
    fields = {(i["name"], i.get("type")) for i in form["inputs"]}
    assert fields == {("email", "email"), ("name", "text"), ("tags", "checkbox"), ("website", "text")}
    assert [i["value"] for i in form["inputs"] if i["name"] == "tags"] == TOPICS
    (honeypot,) = [i for i in form["inputs"] if i["name"] == "website"]
    assert any("left:-10000px" in (p.get("style") or "") for p in honeypot["_parents"])
    assert "RTR Wellness Center" in snippet

    # Filled in as a reader would, and posted from the blog (an allowed origin).
    data = {"email": ADA, "name": "Ada", "tags": ["research"], "website": ""}
    response = httpx.post(form["attrs"]["action"], data=data, headers={"Origin": SITE}, timeout=10)
    assert response.status_code == 200
    assert (site.status(ADA), site.row(ADA).tags) == ("pending", "research")
    assert site.mails(1)[0].rcpt_tos == [ADA]


def test_subscribe_form_action(config):
    assert form_action(config) == "http://127.0.0.1:8080/subscribe"
    assert form_action(config, "https://news.example.com/subscribe") == "https://news.example.com/subscribe"
    with pytest.raises(PipelineError, match="must be an http"):
        form_action(config, "ftp://news.example.com/subscribe")


def test_pipeline_subscribe_form(project, run_cli):
    _append(project, "subscribe: {topics: [wellness]}")
    result = run_cli("--config", project / "config.yaml", "subscribe-form")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("<!-- RTR Wellness Center newsletter sign-up")
    assert 'action="http://127.0.0.1:8080/subscribe"' in result.stdout
    assert 'value="wellness"' in result.stdout
    assert result.stderr.startswith("warning: the form posts to http://127.0.0.1:8080/subscribe, which "
                                    "only this machine can reach")
    public = run_cli("--config", project / "config.yaml", "subscribe-form",
                     "--action-url", "https://news.example.com/subscribe")
    assert public.returncode == 0 and public.stderr == ""
    assert 'action="https://news.example.com/subscribe"' in public.stdout
    bad = run_cli("--config", project / "config.yaml", "subscribe-form", "--action-url", "news.example.com")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "error: --action-url 'news.example.com': must be an http(s) URL such as https://news.example.com/subscribe"]


def test_the_channel_confirmations_go_through(project, sink):
    config = _smtp_config(project, sink)
    assert confirmation_channel(config) == "newsletter"       # a real email channel, not the outbox
    _append(project, "subscribe: {channel: outbox}")
    assert confirmation_channel(load_config(project / "config.yaml")) == "outbox"


@pytest.mark.parametrize("settings, error", [
    ("subscribe: {channel: newsleter}",
     "config.yaml:LINE: subscribe.channel: no channel named 'newsleter' (configured: outbox, toots)"),
    ("subscribe: {channel: toots}",
     "config.yaml:LINE: subscribe.channel: channel 'toots' sends no email; name an smtp or outbox channel "
     "for confirmation emails"),
])
def test_a_subscribe_channel_that_cannot_send_confirmations_stops_serve(project, settings, error):
    _append(project, "  toots: {type: mastodon, base_url: 'https://mastodon.example', "
                     "access_token: '${TOKEN}'}\n" + settings)
    config = load_config(project / "config.yaml")
    with pytest.raises(ConfigError) as raised:
        create_app(config)
    assert re.sub(r"^.*config\.yaml:\d+", "config.yaml:LINE", str(raised.value)) == error


def test_without_an_email_channel_sign_ups_cannot_be_confirmed(project):
    path = project / "config.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace(
        "  outbox: {type: outbox, path: out/outbox}", "  outbox: {type: mastodon, base_url: "
        "'https://mastodon.example', access_token: x}"), encoding="utf-8")
    with pytest.raises(ConfigError, match="no channel sends email; add an smtp or outbox channel for "
                                          "confirmation emails"):
        create_app(load_config(path))


def _smtp_config(project: Path, sink: Sink) -> Config:
    _append(project, "\n".join(["  newsletter:", "    type: smtp", "    host: 127.0.0.1",
                                f"    port: {sink.port}", "    security: none", "    processes: false",
                                "    retries: 0"]))
    return load_config(project / "config.yaml")
