"""Screenshots of the preview page for README: `make screenshots` writes docs/preview-*.png.

The page is served for a temporary copy of the shipped project (fresh state, so nothing is marked
sent) and shot in Debian's Chromium through Playwright, as the browser tests do.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.web.preview_page import create_preview_app  # noqa: E402
from tests.browser.conftest import launch_options  # noqa: E402
from tests.servers import AppServers  # noqa: E402

SEED = "2020-09-01-ketamine-neurological-damage"
SHOTS = {  # file -> (query, element to scroll to, clip height)
    "preview-desktop.png": ("", "#email", 1500),
    "preview-mobile.png": ("?width=mobile", "#email", 1500),
    "preview-social.png": ("", "#social", 900),
}


def shoot(page: Page, base: str, out: Path) -> None:
    for name, (query, anchor, height) in SHOTS.items():
        page.goto(f"{base}/posts/{SEED}{query}")
        page.frame_locator("#email-frame").locator("body").wait_for()
        page.wait_for_timeout(300)                   # the frame is sized once it has loaded
        top = page.eval_on_selector(anchor, "e => e.getBoundingClientRect().top + window.scrollY")
        top = 0 if anchor == "#email" else max(0, top - 16)
        page.screenshot(path=str(out / name), full_page=True,
                        clip={"x": 0, "y": top, "width": 1280, "height": height})
        print(f"wrote {out / name}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        shutil.copy(ROOT / "config.yaml", project / "config.yaml")
        for folder in ("posts", "templates"):
            shutil.copytree(ROOT / folder, project / folder)
        servers = AppServers()
        base = servers.start(create_preview_app(project / "config.yaml"))
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(**launch_options())  # type: ignore[arg-type]
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                # Images on the site are not reachable from here: they show their alt text.
                context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(base)
                              else r.abort())
                shoot(context.new_page(), base, ROOT / "docs")
                browser.close()
        finally:
            servers.stop()


if __name__ == "__main__":
    main()
