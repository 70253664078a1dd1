"""Playwright driving Debian's Chromium (/usr/bin/chromium), installed with apt-get when missing.

Chromium runs headless with background networking off (this machine's network is closed, and a
test must never reach a real service); every request that is not to the loopback test server is
aborted by the page's router.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from tests.conftest import ROOT

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def launch_options() -> dict[str, object]:
    """How the tests (and docs/screenshots.py) start Chromium."""
    if not Path(CHROMIUM).exists():
        subprocess.run([str(ROOT / ".ci" / "install-chromium")], check=True)
    return {"executable_path": CHROMIUM, "args": ARGS}


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(**launch_options())  # type: ignore[arg-type]
        yield chromium
        chromium.close()


def _loopback_only(route: Route) -> None:
    url = route.request.url
    if url.startswith(("http://127.0.0.1", "http://localhost", "about:", "data:")):
        route.continue_()
    else:
        route.abort()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route("**/*", _loopback_only)
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    yield tab
    context.close()
