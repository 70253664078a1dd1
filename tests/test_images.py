"""pipeline.channels.images: fetching a post's image from a real HTTP server on 127.0.0.1 (real
image bytes made with Pillow) and fitting it to a network's limits."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import PIL.Image
import pytest
from PIL.PngImagePlugin import PngInfo

from pipeline.channels import images
from pipeline.channels.images import Image, fetch_image, fit
from pipeline.intake.posts import load_posts
from pipeline.models import Post, Severity
from pipeline.render.email import render_edition
from pipeline.render.lint import image_alt, lint

ORIENTATION = 0x0112
GPS_INFO = 0x8825


def png(size: tuple[int, int] = (300, 200), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    PIL.Image.new(mode, size, "red" if mode != "1" else 0).save(out, "PNG")
    return out.getvalue()


def noisy(size: tuple[int, int]) -> PIL.Image.Image:
    """An image that compresses badly, so byte limits bite."""
    return PIL.Image.merge("RGB", [PIL.Image.effect_noise(size, 90).convert("L") for _ in range(3)])


def jpeg(im: PIL.Image.Image, *, orientation: int | None = None, quality: int = 95) -> bytes:
    exif = PIL.Image.Exif()
    if orientation is not None:
        exif[ORIENTATION] = orientation
        exif[0x010F] = "Camera maker"
        exif[GPS_INFO] = {2: (48.0, 51.0, 29.0)}     # latitude: what stripping is for
    out = io.BytesIO()
    im.save(out, "JPEG", exif=exif, quality=quality)
    return out.getvalue()


def gif_animated() -> bytes:
    frames = [PIL.Image.new("P", (40, 30), color) for color in (1, 2, 3)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


PNG = png()
# Stored 300 wide x 200 high, shown rotated by 90 degrees (orientation 6): 200 x 300.
ROTATED = jpeg(PIL.Image.new("RGB", (300, 200), "blue"), orientation=6)
BOMB = png((14000, 14000), "1")            # 196 Mpx: more than twice Pillow's MAX_IMAGE_PIXELS
JUST_TOO_BIG = png((10000, 9000), "1")     # 90 Mpx: over the limit, where Pillow only warns
OVER_CAP = images.MAX_BYTES + 1
SLOW = 2.0                                  # seconds the slow route waits; the client waits 0.3


class _Handler(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, str, bytes]]] = {}
    hits: ClassVar[Counter[str]] = Counter()

    def do_GET(self) -> None:
        type(self).hits[self.path] += 1
        if self.path == "/slow.png":
            time.sleep(SLOW)
        if self.path == "/endless.jpg":
            # No Content-Length: only counting the bytes read can stop it.
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            chunk = b"\xff" * 65536
            with contextlib.suppress(OSError):      # the client stopped reading: the point
                for _ in range(OVER_CAP // len(chunk) + 2):
                    self.wfile.write(chunk)
            return
        status, mime, body = self.routes.get(self.path, (404, "text/plain", b"not found"))
        self.send_response(status)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):      # the client may have stopped reading
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    _Handler.routes = {
        "/photo.png": (200, "image/png", PNG),
        "/rotated.jpg": (200, "image/jpeg", ROTATED),
        "/bomb.png": (200, "image/png", BOMB),
        "/just-too-big.png": (200, "image/png", JUST_TOO_BIG),
        "/fake.jpg": (200, "image/jpeg", b"<html><body>Not an image</body></html>"),
        "/no-type": (200, "application/octet-stream", PNG),
        "/huge.jpg": (200, "image/jpeg", b"\xff" * OVER_CAP),
        "/anim.gif": (200, "image/gif", gif_animated()),
        "/slow.png": (200, "image/png", PNG),
    }
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    images.cache_clear()
    _Handler.hits.clear()
    yield
    images.cache_clear()


def post(url: str | None, *, alt: str | None = "A quiet infusion room", slug: str = "ketamine") -> Post:
    return Post(path=f"posts/2020-09-01-{slug}.md", slug=slug, title="Ketamine",
                date=datetime(2020, 9, 1, tzinfo=UTC), canonical_url=f"https://example.com/{slug}",
                body_markdown="", body_html="", image=url, image_alt=alt)


def test_png_is_fetched_decoded_and_kept_with_its_alt(server):
    image = fetch_image(post(f"{server}/photo.png"))
    assert image == Image(url=f"{server}/photo.png", data=PNG, mime="image/png", width=300, height=200,
                          alt="A quiet infusion room")


def test_fetched_once_per_url_across_posts_and_calls(server):
    first = fetch_image(post(f"{server}/photo.png"))
    second = fetch_image(post(f"{server}/photo.png", slug="other", alt="Another alt"))
    assert _Handler.hits["/photo.png"] == 1
    assert first is not None and second is not None
    assert second.data == first.data and second.alt == "Another alt"


def test_concurrent_channels_download_it_once(server):
    found: list[Image | None] = []
    threads = [threading.Thread(target=lambda: found.append(fetch_image(post(f"{server}/photo.png"))))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _Handler.hits["/photo.png"] == 1
    assert len(found) == 6 and all(image is not None and image.data == PNG for image in found)


def test_the_header_is_not_trusted_either_way(server):
    # An image served as application/octet-stream is still an image...
    image = fetch_image(post(f"{server}/no-type"))
    assert image is not None and image.mime == "image/png"


def test_a_page_served_as_image_jpeg_is_refused_with_a_warning_naming_post_and_url(server, caplog):
    with caplog.at_level(logging.WARNING):
        assert fetch_image(post(f"{server}/fake.jpg")) is None
    assert caplog.messages == [f"posts/2020-09-01-ketamine.md: the image {server}/fake.jpg is not an "
                               "image (Pillow cannot decode it, whatever its Content-Type); posting "
                               "without it"]


def test_a_failure_is_remembered_and_warned_once_per_post(server, caplog):
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert fetch_image(post(f"{server}/fake.jpg")) is None
        assert fetch_image(post(f"{server}/fake.jpg", slug="other")) is None
    assert _Handler.hits["/fake.jpg"] == 1
    assert len(caplog.messages) == 2
    assert "posts/2020-09-01-other.md" in caplog.messages[1]


def test_decompression_bomb_is_refused(server, caplog):
    with caplog.at_level(logging.WARNING):
        assert fetch_image(post(f"{server}/bomb.png")) is None
    assert "is too large to decode" in caplog.text and f"{server}/bomb.png" in caplog.text


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")   # Pillow's; refused here
def test_image_over_max_image_pixels_is_refused_where_pillow_only_warns(server, caplog):
    with caplog.at_level(logging.WARNING):
        assert fetch_image(post(f"{server}/just-too-big.png")) is None
    assert "is too large to decode (10000x9000 pixels" in caplog.text


def test_body_over_the_cap_is_refused_by_its_content_length(server, caplog):
    with caplog.at_level(logging.WARNING):
        assert fetch_image(post(f"{server}/huge.jpg")) is None
    assert f"the image {server}/huge.jpg is larger than 10 MB" in caplog.text


def test_body_over_the_cap_without_a_length_stops_being_read(server, caplog):
    with caplog.at_level(logging.WARNING):
        assert fetch_image(post(f"{server}/endless.jpg")) is None
    assert "is larger than 10 MB" in caplog.text


def test_timeout_leaves_the_image_out(server, caplog):
    with httpx.Client(timeout=0.3) as http, caplog.at_level(logging.WARNING):
        assert fetch_image(post(f"{server}/slow.png"), http) is None
    assert f"the image {server}/slow.png cannot be fetched (ReadTimeout)" in caplog.text


def test_missing_image_and_no_image(server, caplog):
    assert fetch_image(post(None)) is None
    with caplog.at_level(logging.WARNING):
        assert fetch_image(post(f"{server}/gone.png")) is None
    assert "cannot be fetched (HTTP 404)" in caplog.text


def test_exif_rotation_gives_the_displayed_size_and_fit_applies_and_strips_it(server):
    image = fetch_image(post(f"{server}/rotated.jpg"))
    assert image is not None and (image.width, image.height) == (200, 300)
    fitted = fit(image, max_bytes=1_000_000)
    assert fitted is not image          # within limits, but it carries EXIF (a GPS position)
    with PIL.Image.open(io.BytesIO(fitted.data)) as im:
        assert im.size == (200, 300) and (fitted.width, fitted.height) == (200, 300)
        assert not im.getexif() and "exif" not in im.info
        assert im.getpixel((100, 150))[2] > 200       # still blue: the pixels, not a blank
    assert fitted.alt == image.alt and fitted.url == image.url


def _image(data: bytes, mime: str, size: tuple[int, int]) -> Image:
    return Image(url="https://example.com/i", data=data, mime=mime, width=size[0], height=size[1],
                 alt="alt")


def test_fit_passes_an_image_that_fits_through_unchanged():
    image = _image(PNG, "image/png", (300, 200))
    assert fit(image, max_bytes=len(PNG)) is image


def test_fit_keeps_an_animated_gif_when_it_is_allowed_and_fits():
    data = gif_animated()
    image = _image(data, "image/gif", (40, 30))
    assert fit(image, max_bytes=1_000_000, mimes=frozenset({"image/gif", "image/jpeg"})) is image
    flat = fit(image, max_bytes=1_000_000)          # GIF not allowed: its first frame, re-encoded
    assert flat.mime in ("image/jpeg", "image/png")
    with PIL.Image.open(io.BytesIO(flat.data)) as im:
        assert not getattr(im, "is_animated", False) and im.size == (40, 30)


def test_fit_resizes_a_large_photo_down_under_the_byte_and_side_limits():
    big = jpeg(noisy((3000, 2000)))
    assert len(big) > 1_000_000
    fitted = fit(_image(big, "image/jpeg", (3000, 2000)), max_bytes=1_000_000, max_side=2000)
    assert fitted.mime == "image/jpeg" and len(fitted.data) <= 1_000_000
    assert max(fitted.width, fitted.height) <= 2000
    assert fitted.width / fitted.height == pytest.approx(1.5, abs=0.01)
    with PIL.Image.open(io.BytesIO(fitted.data)) as im:
        assert im.size == (fitted.width, fitted.height) and im.format == "JPEG"


def test_fit_shrinks_until_under_a_tight_byte_limit():
    big = jpeg(noisy((1200, 800)))
    fitted = fit(_image(big, "image/jpeg", (1200, 800)), max_bytes=60_000)
    assert len(fitted.data) <= 60_000 and fitted.width < 1200
    assert fitted.width / fitted.height == pytest.approx(1.5, abs=0.02)


def test_fit_converts_a_format_the_network_does_not_take():
    out = io.BytesIO()
    PIL.Image.new("RGB", (50, 40), "green").save(out, "WEBP")
    fitted = fit(_image(out.getvalue(), "image/webp", (50, 40)), max_bytes=1_000_000)
    assert fitted.mime == "image/jpeg" and (fitted.width, fitted.height) == (50, 40)


def test_fit_keeps_transparency_as_png_when_png_is_allowed():
    data = png((80, 60), "RGBA")
    with_text = io.BytesIO()
    info = PngInfo()
    info.add_text("Author", "someone")
    PIL.Image.open(io.BytesIO(data)).save(with_text, "PNG", pnginfo=info)
    fitted = fit(_image(with_text.getvalue(), "image/png", (80, 60)), max_bytes=1_000_000)
    assert fitted.mime == "image/png"
    with PIL.Image.open(io.BytesIO(fitted.data)) as im:
        assert im.mode == "RGBA" and not getattr(im, "text", {})


def test_fit_with_no_usable_encoding_says_so():
    with pytest.raises(ValueError, match="no encoding among"):
        fit(_image(jpeg(noisy((100, 100))), "image/jpeg", (100, 100)), max_bytes=10,
            mimes=frozenset({"image/gif"}))


# The alt text lint (pipeline.render.lint)

INFUSION = "2024-03-12-your-first-infusion"


def _infusion(config, **changes: object) -> Post:
    found = next(p for p in load_posts(config).posts if p.slug == INFUSION)
    return dataclasses.replace(found, **changes)


def test_an_image_without_alt_text_is_one_warning_naming_the_file_and_the_fix(config):
    post_ = _infusion(config, image_alt=None)
    edition = render_edition(post_, config)
    problems = [p for p in lint(edition.html, where=post_.path, post=post_) if "alt" in p.message]
    assert [(p.where, p.severity) for p in problems] == [(post_.path, Severity.WARNING)]
    assert problems[0].message == (
        f"front matter: 'image' ({post_.image}) has no 'image_alt'; add image_alt: \"what the image "
        "shows\" (posted with the image as its description, and read out by screen readers)")
    # Without the post, the email's <img> is what is reported, as before.
    assert any(p.message.startswith(f"image without alt text: {post_.image}")
               for p in lint(edition.html, where=post_.path))


def test_blank_alt_is_missing_and_a_post_with_alt_or_without_image_is_clean(config):
    assert len(list(image_alt(_infusion(config, image_alt="  ")))) == 1
    assert list(image_alt(_infusion(config))) == []
    assert list(image_alt(_infusion(config, image=None, image_alt=None))) == []
    post_ = _infusion(config)
    assert not [p for p in lint(render_edition(post_, config).html, where=post_.path, post=post_)
                if "alt" in p.message]
