"""A post's image for the channels that attach it: fetched once per process per URL, checked by
decoding it (never by trusting the Content-Type), and fitted to each network's limits.

`fetch_image` reads at most MAX_BYTES (streamed: it stops reading past the cap), within a total
deadline, and keeps the result (or the reason it failed) in a small cache bounded in bytes, so
that the channels of one publish, and the deliveries a long-lived worker sends later, share one
download. A failure is remembered for a shorter time than a success, so a fixed image is picked up.
The post then goes out without its image: a warning names the post and the URL, once per post.

`fit` resizes down (keeping the aspect ratio) and re-encodes (JPEG quality steps, then smaller
sizes) only when the network needs it. A re-encoded image has its EXIF orientation applied and its
metadata (EXIF with its GPS position, XMP, comments) stripped; an image that already fits and
carries no such metadata is passed through byte for byte, which keeps an animated GIF animated.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

import httpx
import PIL.Image
from PIL import ImageOps, UnidentifiedImageError

from pipeline.models import Post

log = logging.getLogger(__name__)

ImageMode = Literal["card", "attach", "none"]

MAX_BYTES = 10 * 1024 * 1024    # the largest image fetched; no network takes more
TIMEOUT = 10.0                  # seconds per connect/read when fetch_image makes its own client
DEADLINE = 30.0                 # seconds for the whole download, so a slow drip cannot hang a send
CACHE_BYTES = 64 * 1024 * 1024  # the cache's bounds: a worker is long-lived
CACHE_ENTRIES = 256             # (failures hold no bytes, but count)
SUCCESS_TTL = 3600.0            # seconds a fetched image is reused
FAILURE_TTL = 300.0             # seconds a failure is remembered (a fixed image is picked up later)
# Pillow format -> the MIME type the networks know; anything else is refused.
FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}
JPEG_QUALITIES = (90, 82, 74, 66, 58, 50)
MIN_SIDE = 64                   # below this no network limit can be meant; fit gives up
# Metadata that a re-encode drops (and whose presence alone makes fit re-encode): EXIF carries
# the camera and often the GPS position. ICC profiles are kept (they are colour, not metadata).
_METADATA_KEYS = ("exif", "xmp", "XML:com.adobe.xmp", "comment", "Raw profile type exif")
_HEADERS = {"User-Agent": "pipeline (newsletter publisher; fetching a post's image)", "Accept": "image/*"}


@dataclass(frozen=True, kw_only=True)
class Image:
    """An image as fetched (or fitted): its bytes and what decoding them showed."""

    url: str            # where it was fetched from (the post's `image`)
    data: bytes = field(repr=False)
    mime: str           # image/jpeg | image/png | image/gif | image/webp
    width: int
    height: int
    alt: str | None     # the post's image_alt


@dataclass(frozen=True, kw_only=True)
class _Fetched:
    """A cache entry: the decoded facts of a URL's image, or why there is none."""

    data: bytes = b""
    mime: str = ""
    width: int = 0
    height: int = 0
    problem: str | None = None
    expires: float = 0.0


class _Cache:
    """URL -> _Fetched, least recently used first out, bounded by the bytes it holds. One lock per
    URL being fetched, so channels sending the same post at once download it once."""

    def __init__(self, max_bytes: int, max_entries: int) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.entries: OrderedDict[str, _Fetched] = OrderedDict()
        self.warned: dict[str, set[str]] = {}      # URL -> posts already warned about
        self.size = 0
        self.lock = threading.Lock()
        self.fetching: dict[str, threading.Lock] = {}

    def get(self, url: str) -> _Fetched | None:
        with self.lock:
            entry = self.entries.get(url)
            if entry is None:
                return None
            if entry.expires <= time.monotonic():
                self._drop(url)
                return None
            self.entries.move_to_end(url)
            return entry

    def put(self, url: str, entry: _Fetched) -> None:
        with self.lock:
            if url in self.entries:
                self._drop(url)
            if len(entry.data) > self.max_bytes:
                return
            self.entries[url] = entry
            self.size += len(entry.data)
            while self.size > self.max_bytes or len(self.entries) > self.max_entries:
                self._drop(next(iter(self.entries)))

    def url_lock(self, url: str) -> threading.Lock:
        with self.lock:
            return self.fetching.setdefault(url, threading.Lock())

    def fetched(self, url: str) -> None:
        """Forget `url`'s lock once its result is cached (at worst, a thread that took the lock
        before finds the result in the cache; one that comes after an eviction fetches again)."""
        with self.lock:
            self.fetching.pop(url, None)

    def first_warning(self, url: str, post: str) -> bool:
        """Whether `post` has not been warned about `url`'s problem yet (and note that it has)."""
        with self.lock:
            seen = self.warned.setdefault(url, set())
            if post in seen:
                return False
            seen.add(post)
            return True

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()
            self.warned.clear()
            self.fetching.clear()
            self.size = 0

    def _drop(self, url: str) -> None:
        entry = self.entries.pop(url)
        self.size -= len(entry.data)
        self.warned.pop(url, None)


_cache = _Cache(CACHE_BYTES, CACHE_ENTRIES)


def fetch_image(post: Post, http: httpx.Client | None = None) -> Image | None:
    """The post's image, fetched once per process per URL (size cap 10 MB, timeout, content-type
    checked with Pillow, not trusted from the header); None (warning logged) when it has none or it
    cannot be fetched: the post then goes out without it."""
    url = post.image
    if not url:
        return None
    entry = _cache.get(url)
    if entry is None:
        with _cache.url_lock(url):
            entry = _cache.get(url)      # another thread may have fetched it meanwhile
            if entry is None:
                entry = _fetch(url, http)
                _cache.put(url, entry)
        _cache.fetched(url)
    if entry.problem is not None:
        if _cache.first_warning(url, post.slug):
            log.warning("%s: the image %s %s; posting without it", post.path, url, entry.problem)
        return None
    return Image(url=url, data=entry.data, mime=entry.mime, width=entry.width, height=entry.height,
                 alt=(post.image_alt or "").strip() or None)


def cache_clear() -> None:
    """Forget every fetched image and failure (tests; a worker never needs it)."""
    _cache.clear()


def _fetch(url: str, http: httpx.Client | None) -> _Fetched:
    """Download and decode `url`; a _Fetched with the facts or with the problem."""
    now = time.monotonic()
    try:
        if http is None:
            with httpx.Client(timeout=TIMEOUT, headers=_HEADERS) as own:
                data = _download(own, url)
        else:
            data = _download(http, url)
    except _TooLarge:
        return _Fetched(problem=f"is larger than {MAX_BYTES // (1024 * 1024)} MB",
                        expires=now + FAILURE_TTL)
    except httpx.HTTPStatusError as exc:
        return _Fetched(problem=f"cannot be fetched (HTTP {exc.response.status_code})",
                        expires=now + FAILURE_TTL)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return _Fetched(problem=f"cannot be fetched ({type(exc).__name__})", expires=now + FAILURE_TTL)
    try:
        mime, width, height = _inspect(data)
    except _NotAnImage as exc:
        return _Fetched(problem=str(exc), expires=now + FAILURE_TTL)
    return _Fetched(data=data, mime=mime, width=width, height=height, expires=now + SUCCESS_TTL)


class _TooLarge(Exception):
    pass


class _NotAnImage(Exception):
    pass


def _download(http: httpx.Client, url: str) -> bytes:
    """The body of GET `url`, read in chunks and abandoned as soon as it passes MAX_BYTES (or
    DEADLINE passes: per-read timeouts alone let a slow drip go on for ever)."""
    deadline = time.monotonic() + DEADLINE
    with http.stream("GET", url, follow_redirects=True) as response:
        response.raise_for_status()
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BYTES:
            raise _TooLarge
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_BYTES:
                raise _TooLarge
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout(f"the download took more than {DEADLINE:.0f} s")
    return bytes(body)


def _inspect(data: bytes) -> tuple[str, int, int]:
    """(mime, width, height as displayed) of an image, decoded in full with Pillow: a body that
    is not an image, a format no network takes, a truncated file or a decompression bomb (more
    than Pillow's MAX_IMAGE_PIXELS) raise _NotAnImage."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as im:
            mime = FORMATS.get(im.format or "")
            if mime is None:
                raise _NotAnImage(f"is a {im.format} image; only JPEG, PNG, GIF and WebP are posted")
            limit = PIL.Image.MAX_IMAGE_PIXELS
            if limit is not None and im.width * im.height > limit:
                # Pillow only warns between 1x and 2x its limit; here it is refused either way.
                raise _NotAnImage(f"is too large to decode ({im.width}x{im.height} pixels; "
                                  f"at most {limit} pixels)")
            im.load()
            width, height = im.size
            if _orientation(im) in (5, 6, 7, 8):     # stored rotated by 90 degrees
                width, height = height, width
    except PIL.Image.DecompressionBombError as exc:
        raise _NotAnImage(f"is too large to decode ({exc})") from None
    except UnidentifiedImageError:
        raise _NotAnImage("is not an image (Pillow cannot decode it, whatever its Content-Type)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise _NotAnImage(f"is not a readable image ({exc})") from None
    return mime, width, height


def _orientation(im: PIL.Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1))     # the EXIF Orientation tag
    except (ValueError, TypeError):
        return 1


def fit(image: Image, *, max_bytes: int, max_side: int | None = None,
        mimes: frozenset[str] = frozenset({"image/jpeg", "image/png"})) -> Image:
    """The image as a network accepts it: re-encoded / resized down (Pillow) only when needed."""
    with PIL.Image.open(io.BytesIO(image.data)) as im:
        if (image.mime in mimes and len(image.data) <= max_bytes
                and (max_side is None or max(image.width, image.height) <= max_side)
                and not _has_metadata(im)):
            return image
        icc = im.info.get("icc_profile")
        if getattr(im, "is_animated", False):
            log.info("the image %s is an animated GIF that does not fit; posting its first frame",
                     image.url)
        im.seek(0)
        frame = ImageOps.exif_transpose(im)    # applies the orientation; a copy without EXIF
    alpha = frame.mode in ("RGBA", "LA", "PA") or "transparency" in frame.info
    if max_side is not None and max(frame.size) > max_side:
        frame.thumbnail((max_side, max_side), PIL.Image.Resampling.LANCZOS)
    encoders = _encoders(mimes, alpha=alpha)
    while True:
        smallest = b""
        for mime, encode in encoders:
            for data in encode(frame, icc):
                if len(data) <= max_bytes:
                    return replace(image, data=data, mime=mime, width=frame.width, height=frame.height)
                if not smallest or len(data) < len(smallest):
                    smallest = data
        if min(frame.size) <= MIN_SIDE:
            raise ValueError(f"the image {image.url} cannot be made smaller than {max_bytes} bytes")
        # Bytes grow roughly with the pixel count: shrink by the square root of the excess.
        scale = min(0.9, (max_bytes / len(smallest)) ** 0.5 * 0.95)
        size = (max(1, round(frame.width * scale)), max(1, round(frame.height * scale)))
        frame = frame.resize(size, PIL.Image.Resampling.LANCZOS)


def _has_metadata(im: PIL.Image.Image) -> bool:
    """Whether the image carries metadata worth stripping (EXIF, XMP, comments, PNG text)."""
    return (any(key in im.info for key in _METADATA_KEYS) or bool(getattr(im, "text", None))
            or bool(im.getexif()))


def _encoders(mimes: frozenset[str], *, alpha: bool) -> list[tuple[str, _Encode]]:
    """The encodings to try, best first: PNG first for a transparent image (JPEG has no alpha),
    JPEG first otherwise; WebP when it is all the network takes."""
    order = ["image/png", "image/jpeg", "image/webp"] if alpha else ["image/jpeg", "image/webp",
                                                                      "image/png"]
    chosen = [(mime, _ENCODE[mime]) for mime in order if mime in mimes]
    if not chosen:
        raise ValueError(f"fit: no encoding among {sorted(mimes)}; give image/jpeg, image/png "
                         "or image/webp")
    return chosen


def _jpeg(frame: PIL.Image.Image, icc: bytes | None) -> Iterator[bytes]:
    """JPEG at falling qualities (a transparent image flattened on white)."""
    if frame.mode in ("RGBA", "LA", "PA", "P") or "transparency" in frame.info:
        rgba = frame.convert("RGBA")
        flat = PIL.Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        frame = flat
    elif frame.mode != "RGB":
        frame = frame.convert("RGB")
    for quality in JPEG_QUALITIES:
        yield _save(frame, "JPEG", icc, quality=quality, optimize=True, progressive=True)


def _png(frame: PIL.Image.Image, icc: bytes | None) -> Iterator[bytes]:
    if frame.mode == "CMYK":     # PNG has no CMYK
        frame = frame.convert("RGB")
    yield _save(frame, "PNG", icc, optimize=True)


def _webp(frame: PIL.Image.Image, icc: bytes | None) -> Iterator[bytes]:
    for quality in JPEG_QUALITIES:
        yield _save(frame, "WEBP", icc, quality=quality)


def _save(frame: PIL.Image.Image, fmt: str, icc: bytes | None, **options: object) -> bytes:
    out = io.BytesIO()
    if icc:
        options["icc_profile"] = icc
    frame.save(out, fmt, **options)      # no exif=: the metadata stays behind
    return out.getvalue()


_Encode = Callable[[PIL.Image.Image, bytes | None], Iterator[bytes]]
_ENCODE: dict[str, _Encode] = {"image/jpeg": _jpeg, "image/png": _png, "image/webp": _webp}
