"""One-click unsubscribe (RFC 8058) over real HTTP: uvicorn in a thread, and `pipeline serve`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from pipeline.config import Config, load_config
from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from pipeline.web.unsubscribe import create_app
from tests.servers import AppServers, wait_healthy
from tests.smtp_sink import free_port

ONE_CLICK = "List-Unsubscribe=One-Click"
FORM_TYPE = {"Content-Type": "application/x-www-form-urlencoded"}
ADA, BOB = "ada@example.com", "bob@example.com"


@pytest.fixture
def serve() -> Iterator[Callable[[Config], str]]:
    """serve(config) -> base URL of a real uvicorn server running create_app(config) in a thread."""
    servers = AppServers()
    yield lambda config: servers.start(create_app(config))
    servers.stop()


@pytest.fixture
def engine(config):
    return engine_for(config)


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

def test_pipeline_serve_one_click(project, engine, tokens, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(project / "config.yaml"),
                                 "serve", "--port", str(port)],
                                cwd=Path(__file__).resolve().parent.parent,
                                stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_healthy(base, lambda: proc.poll() is None)
        with httpx.Client(base_url=base, follow_redirects=False, timeout=10) as c:
            response = _post_one_click(c, tokens[ADA])
        assert response.status_code == 200
        assert "location" not in response.headers
        assert _statuses(engine) == {ADA: "unsubscribed", BOB: "active"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    output = log.read_text(encoding="utf-8", errors="replace")
    assert f"127.0.0.1:{port}" in output
    assert "Traceback" not in output
    assert ADA not in output          # the log names the uid, never the address
