"""One-click unsubscribe (RFC 8058) over real HTTP: uvicorn in a thread, and `pipeline serve`."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from pipeline.config import load_config
from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from pipeline.web.server import build_server
from tests.servers import AppServers, wait_healthy
from tests.smtp_sink import free_port

ONE_CLICK = "List-Unsubscribe=One-Click"
FORM_TYPE = {"Content-Type": "application/x-www-form-urlencoded"}
ADA, BOB = "ada@example.com", "bob@example.com"


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """serve(config, **options) -> base URL of the server `pipeline serve` runs (build_server),
    in a thread on a free loopback port."""
    servers = AppServers()
    yield lambda config, **options: servers.run(build_server(config, port=free_port(), **options))
    servers.stop()


@pytest.fixture
def people(engine) -> dict[str, store.Subscriber]:
    assert store.upsert(engine, ADA, "Ada", ("news",)) == "added"
    assert store.upsert(engine, BOB, "Bob") == "added"
    return {s.email: s for s in store.iter_subscribers(engine)}


@pytest.fixture
def secret(engine) -> str:
    return store.state_secret(engine)


@pytest.fixture
def tokens(people, secret) -> dict[str, str]:
    return {email: store.token(s.uid, s.email, secret) for email, s in people.items()}


@pytest.fixture
def client(serve, config, people, secret) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve(config), follow_redirects=False, timeout=10) as c:
        yield c


def _statuses(engine) -> dict[str, str]:
    return {s.email: s.status for s in store.iter_subscribers(engine)}


class _Forms(HTMLParser):
    """The forms of a page: [{"attrs": {...}, "inputs": [{...}, ...]}]."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "form":
            self.forms.append({"attrs": dict(attrs), "inputs": []})
        elif tag == "input" and self.forms:
            self.forms[-1]["inputs"].append(dict(attrs))


def _forms(html: str) -> list[dict]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


def _forge(token: str) -> str:
    last = token[-1]
    return token[:-1] + ("0" if last != "0" else "1")


def _post_one_click(c: httpx.Client, token: str) -> httpx.Response:
    return c.post(f"/unsubscribe/{token}", content=ONE_CLICK, headers=FORM_TYPE)


# -- GET: a confirmation page, no side effect ---------------------------------------------------

def test_get_shows_a_one_click_form_and_changes_nothing(client, engine, tokens):
    response = client.get(f"/unsubscribe/{tokens[ADA]}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert ADA in response.text
    assert BOB not in response.text
    (form,) = _forms(response.text)
    assert form["attrs"]["method"].lower() == "post"
    assert form["attrs"].get("action") in (None, "", f"/unsubscribe/{tokens[ADA]}")
    hidden = [i for i in form["inputs"] if i.get("type") == "hidden"]
    assert [(i.get("name"), i.get("value")) for i in hidden] == [("List-Unsubscribe", "One-Click")]
    assert _statuses(engine) == {ADA: "active", BOB: "active"}


# -- POST: RFC 8058 one-click -------------------------------------------------------------------

def test_one_click_post_unsubscribes_only_that_subscriber(client, engine, tokens):
    response = _post_one_click(client, tokens[ADA])
    assert response.status_code == 200
    assert "location" not in response.headers
    assert "set-cookie" not in response.headers
    assert ADA in response.text
    assert _statuses(engine) == {ADA: "unsubscribed", BOB: "active"}

    again = _post_one_click(client, tokens[ADA])
    assert again.status_code == 200
    assert "location" not in again.headers
    assert _statuses(engine) == {ADA: "unsubscribed", BOB: "active"}

    page = client.get(f"/unsubscribe/{tokens[ADA]}")
    assert page.status_code == 200
    assert _forms(page.text) == []        # already unsubscribed: no button any more
    assert ADA in page.text


def test_one_click_post_as_multipart_form_data(client, engine, tokens):
    boundary = "x-boundary-8058"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\n"
            f"One-Click\r\n--{boundary}--\r\n")
    response = client.post(f"/unsubscribe/{tokens[BOB]}", content=body,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 200
    assert _statuses(engine) == {ADA: "active", BOB: "unsubscribed"}


# -- bad links ----------------------------------------------------------------------------------

def test_forged_token_is_404_and_changes_nothing(client, engine, tokens):
    forged = _forge(tokens[ADA])
    assert forged != tokens[ADA]
    assert client.get(f"/unsubscribe/{forged}").status_code == 404
    response = _post_one_click(client, forged)
    assert response.status_code == 404
    assert ADA not in response.text
    assert _statuses(engine) == {ADA: "active", BOB: "active"}


def test_malformed_token_is_400(client, engine):
    assert client.get("/unsubscribe/abc").status_code == 400
    assert _post_one_click(client, "abc").status_code == 400
    assert _statuses(engine) == {ADA: "active", BOB: "active"}


def test_unknown_uid_is_404(client, engine, secret):
    unknown = store.token("f" * 32, ADA, secret)
    assert client.get(f"/unsubscribe/{unknown}").status_code == 404
    assert _post_one_click(client, unknown).status_code == 404
    assert _statuses(engine) == {ADA: "active", BOB: "active"}


@pytest.mark.parametrize("body, headers", [
    (b"", {}),
    (b"", FORM_TYPE),
    (b"List-Unsubscribe=Yes", FORM_TYPE),
    (b"Unsubscribe=One-Click", FORM_TYPE),
    (b'{"List-Unsubscribe": "One-Click"}', {"Content-Type": "application/json"}),
], ids=["no-body", "empty-form", "wrong-value", "wrong-field", "json"])
def test_post_without_one_click_body_is_400_and_changes_nothing(client, engine, tokens, body, headers):
    response = client.post(f"/unsubscribe/{tokens[ADA]}", content=body, headers=headers)
    assert response.status_code == 400
    assert "List-Unsubscribe=One-Click" in response.text
    assert _statuses(engine) == {ADA: "active", BOB: "active"}


def test_non_ascii_token_is_404(client, engine, people):
    token = f"{people[ADA].uid}.{'é' * 40}"
    assert client.get(f"/unsubscribe/{token}").status_code == 404


# -- the secret ---------------------------------------------------------------------------------

def test_configured_secret_from_environment_is_used(project, monkeypatch, serve, engine, people, tokens,
                                                     secret):
    env_secret = "env-secret-for-tests-0123456789"
    monkeypatch.setenv("UNSUB_SECRET", env_secret)
    cfg = project / "config.yaml"
    cfg.write_text(cfg.read_text(encoding="utf-8") + "\nunsubscribe:\n  secret: ${UNSUB_SECRET}\n",
                   encoding="utf-8")
    configured = load_config(cfg)
    assert configured.unsubscribe.secret.get_secret_value() == env_secret
    assert engine_for(configured) is engine

    with httpx.Client(base_url=serve(configured), follow_redirects=False, timeout=10) as c:
        assert c.get(f"/unsubscribe/{tokens[ADA]}").status_code == 404
        assert _post_one_click(c, tokens[ADA]).status_code == 404
        assert _statuses(engine) == {ADA: "active", BOB: "active"}

        good = store.token(people[ADA].uid, ADA, env_secret)
        page = c.get(f"/unsubscribe/{good}")
        assert page.status_code == 200
        done = _post_one_click(c, good)
        assert done.status_code == 200
        assert _statuses(engine) == {ADA: "unsubscribed", BOB: "active"}
        for response in (page, done):
            assert env_secret not in response.text
            assert secret not in response.text


def test_pages_never_contain_the_secret(client, tokens, secret):
    forged = _forge(tokens[ADA])
    responses = [
        client.get(f"/unsubscribe/{tokens[ADA]}"),
        client.get(f"/unsubscribe/{forged}"),
        client.get("/unsubscribe/abc"),
        client.post(f"/unsubscribe/{tokens[ADA]}", content=b"", headers=FORM_TYPE),
        _post_one_click(client, forged),
        _post_one_click(client, tokens[ADA]),
        client.get(f"/unsubscribe/{tokens[ADA]}"),
    ]
    assert [r.status_code for r in responses] == [200, 404, 400, 400, 404, 200, 200]
    for response in responses:
        assert secret not in response.text
        assert all(secret not in value for value in response.headers.values())


# -- `pipeline serve` ---------------------------------------------------------------------------

@contextlib.contextmanager
def _pipeline_serve(project: Path, log: Path) -> Iterator[httpx.Client]:
    """`pipeline serve` in a subprocess on a free port, its stdout and stderr in `log`; a client
    for it while it runs, then the process is stopped."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(project / "config.yaml"),
                                 "serve", "--port", str(port)],
                                cwd=Path(__file__).resolve().parent.parent,
                                stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_healthy(base, lambda: proc.poll() is None)
        with httpx.Client(base_url=base, follow_redirects=False, timeout=10) as c:
            yield c
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_pipeline_serve_one_click(project, engine, tokens, tmp_path):
    log = tmp_path / "serve.log"
    with _pipeline_serve(project, log) as c:
        response = _post_one_click(c, tokens[ADA])
        base = str(c.base_url).rstrip("/")
    assert response.status_code == 200
    assert "location" not in response.headers
    assert _statuses(engine) == {ADA: "unsubscribed", BOB: "active"}
    output = log.read_text(encoding="utf-8", errors="replace")
    assert base.removeprefix("http://") in output
    assert "Traceback" not in output
    assert ADA not in output          # the log names the uid, never the address


# -- hardening: headers, logs, slow clients (#12) ----------------------------------------------

SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
CSP = {"default-src 'none'", "style-src 'unsafe-inline'", "img-src https: http: data:", "form-action 'self'",
       "frame-ancestors 'none'", "base-uri 'none'"}


def _csp(response: httpx.Response) -> set[str]:
    return {d.strip() for d in response.headers.get("content-security-policy", "").split(";") if d.strip()}


def test_every_response_forbids_framing_sniffing_and_referrers(client, engine, tokens):
    """The page names the address and its URL holds the token: no frames (clickjacking the button),
    no Referer, no sniffing, no content but its own inline style and a form posting to itself;
    on error pages too."""
    responses = {
        "page": client.get(f"/unsubscribe/{tokens[ADA]}"),
        "malformed": client.get("/unsubscribe/abc"),
        "forged": client.get(f"/unsubscribe/{_forge(tokens[ADA])}"),
        "no route": client.get(f"/unsubscribe/{tokens[ADA]}/more"),
        "wrong method": client.put(f"/unsubscribe/{tokens[ADA]}"),
        "bad body": client.post(f"/unsubscribe/{tokens[ADA]}", content=b"", headers=FORM_TYPE),
        "one-click": _post_one_click(client, tokens[ADA]),
    }
    assert {name: r.status_code for name, r in responses.items()} == {
        "page": 200, "malformed": 400, "forged": 404, "no route": 404, "wrong method": 405,
        "bad body": 400, "one-click": 200}
    for name, response in responses.items():
        for header, value in SECURITY_HEADERS.items():
            assert response.headers.get_list(header) == [value], (name, header)
        assert _csp(response) == CSP, name
    assert _statuses(engine) == {ADA: "unsubscribed", BOB: "active"}


def test_pipeline_serve_logs_requests_without_tokens(project, engine, people, tokens, tmp_path):
    """The token in a path unsubscribes its holder: the log shows the subscriber's uid (a valid
    token) or a placeholder instead, never the token."""
    log = tmp_path / "serve.log"
    forged = _forge(tokens[BOB])
    with _pipeline_serve(project, log) as c:
        assert c.get(f"/unsubscribe/{tokens[ADA]}").status_code == 200
        assert _post_one_click(c, tokens[ADA]).status_code == 200
        assert c.get(f"/unsubscribe/{forged}").status_code == 404
        assert c.get(f"/unsubscribe/{tokens[BOB]}/more").status_code == 404
        assert c.get(f"/unsubscribe/{tokens[BOB]}%0Afake%20line").status_code == 404
        assert c.get("/elsewhere%0Afake%20line").status_code == 404
        assert c.get(f"/unsubscribe/{tokens[BOB][:50]}%2F{tokens[BOB][50:]}").status_code == 404
        assert c.get(f"/x/{tokens[BOB]}").status_code == 404
    assert _statuses(engine) == {ADA: "unsubscribed", BOB: "active"}
    output = log.read_text(encoding="utf-8", errors="replace")
    for token in (tokens[ADA], tokens[BOB], forged):
        mac = token.split(".")[1]
        for part in (mac[:12], mac[12:24], mac[-12:]):        # no piece of a MAC either
            assert part not in output, part
    lines = output.splitlines()
    uid = people[ADA].uid
    assert any(f'"GET /unsubscribe/<token of {uid}> HTTP/1.1" 200' in line for line in lines), output
    assert any(f'"POST /unsubscribe/<token of {uid}> HTTP/1.1" 200' in line for line in lines), output
    assert sum('"GET /unsubscribe/<token> HTTP/1.1" 404' in line for line in lines) == 4, output
    assert any('"GET /x/<token> HTTP/1.1" 404' in line for line in lines), output
    assert not any(line.startswith("fake line") for line in lines)
    assert any('"GET /elsewhere\\nfake line HTTP/1.1" 404' in line for line in lines), output
    assert ADA not in output and BOB not in output


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> float:
    """Seconds until the server closes `sock` (sending `trickle` a byte every 0.2 s meanwhile);
    fails if it is still open after `seconds`."""
    start = time.monotonic()
    drip = itertools.cycle(trickle)
    while time.monotonic() - start < seconds:
        try:
            if trickle:
                sock.sendall(bytes([next(drip)]))
            sock.settimeout(0.2)
            if sock.recv(1024) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start
    pytest.fail(f"the server kept a connection without a complete request open for {seconds}s")


@pytest.mark.parametrize("sent, trickle", [
    (b"", b""),
    (b"GET /unsubscribe/TOKEN HTTP/1.1\r\nHost: 127.0.0.1\r\n", b""),
    (b"POST /unsubscribe/TOKEN HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n"
     b"Content-Type: application/x-www-form-urlencoded\r\n\r\nList-Unsub", b""),
    (b"GET /unsubscribe/TOKEN HTTP/1.1\r\n", b"X-Slow: abcdef\r\n"),
], ids=["nothing", "half-headers", "half-body", "one-byte-at-a-time"])
def test_connections_without_a_complete_request_are_closed(serve, config, engine, tokens, caplog, sent,
                                                          trickle):
    """Slowloris: a request (line, headers and body) must arrive within the deadline of the
    connection opening; more bytes do not extend it."""
    caplog.set_level(logging.INFO, logger="pipeline.web.server")
    base = serve(config, request_timeout=1)
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(sent.replace(b"TOKEN", tokens[ADA].encode()))
        elapsed = _closed_within(sock, 10, trickle)
    assert 0.5 < elapsed < 10
    assert httpx.get(f"{base}/healthz").text == "ok"        # the server itself is fine
    assert _statuses(engine) == {ADA: "active", BOB: "active"}
    assert "no whole request within 1s" in caplog.text


def test_the_deadline_leaves_prompt_keep_alive_requests_alone(serve, config, tokens):
    """Each request on a kept-alive connection has its own deadline, from the previous answer:
    four requests 0.4 s apart on one connection (1.6 s in all, deadline 1 s) are all answered."""
    base = serve(config, request_timeout=1)
    conn = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=10)
    try:
        sockets = []
        for _ in range(4):
            conn.request("GET", f"/unsubscribe/{tokens[ADA]}")
            response = conn.getresponse()
            assert response.status == 200 and ADA in response.read().decode()
            sockets.append(conn.sock)
            time.sleep(0.4)
        assert sockets[0] is not None and sockets == [sockets[0]] * 4     # one connection throughout
    finally:
        conn.close()
