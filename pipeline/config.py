"""config.yaml -> Config: validated with pydantic; `${NAME}` filled from the environment.

Errors name the file, the line, the key path and the expected form. Paths are relative to the
config file's folder. References inside `channels:` are resolved only when that channel is built,
so an unused channel without credentials never stops the outbox (or `--dry-run`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import date
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from babel import Locale, UnknownLocaleError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from pipeline.errors import ConfigError
from pipeline.fields import email_address, http_url
from pipeline.intake.feed_settings import FeedOutSettings, FeedSource, PostsSource, Source, check_sources
from pipeline.intake.textfile import NotUtf8, YamlTooLarge, load_yaml, read_utf8
from pipeline.networks.registry import NETWORKS
from pipeline.timetable.entries import Entry

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _matches(pattern: str) -> AfterValidator:
    """For `Annotated[str, _matches(...)]`: `Field(pattern=...)`, the same engine and message, with
    the regex compiled on the first value instead of when the model is defined: a Unicode `\\w`
    takes pydantic's regex engine some 18 ms to compile, paid by every command for keys that
    few configs set."""
    def check(value: str) -> str:
        try:
            return _pattern_adapter(pattern).validate_python(value)
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"]) from None

    return AfterValidator(check)


@cache
def _pattern_adapter(pattern: str) -> TypeAdapter[str]:
    return TypeAdapter(Annotated[str, Field(pattern=pattern)])


class Site(_Model):
    name: str
    url: Annotated[str, http_url("https://example.com")]
    locale: str = "en_US"
    permalink: str = "/{slug}/"      # with `generator: none`; a generator has its own rules
    # The blog's site generator, whose config (under `root`) gives each post's URL as the live
    # site has it; `none`: site.url + permalink; `auto`: found from root's files.
    generator: Literal["auto", "hugo", "jekyll", "pelican", "eleventy", "astro", "none"] = "none"
    root: str = "."                  # the blog's repository, relative to config.yaml's folder
    generator_config: str | None = None   # the generator's config file, if not its usual name
    # The sender's postal address, shown in every email's footer (CAN-SPAM); `check` requires it
    # once a real email channel is configured.
    address: str | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must be the postal address readers can write to, e.g. "
                             "\"RTR Wellness Center, 12 Main St, Springfield, IL 62701, USA\"")
        return " ".join(v.split()) if v else v

    @field_validator("locale")
    @classmethod
    def _locale(cls, v: str) -> str:
        try:
            Locale.parse(v)
        except (ValueError, UnknownLocaleError):
            raise ValueError("must be a locale such as en_US, fr_FR, de") from None
        return v

    @field_validator("permalink")
    @classmethod
    def _permalink(cls, v: str) -> str:
        if "{slug}" not in v:
            raise ValueError("must contain {slug}, e.g. /{year}/{month}/{slug}/")
        return v

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc


class FooterSettings(_Model):
    text: str = "Originally published at {site} on {date}."
    date_format: str = "long"      # a Babel format name (short/medium/long/full) or a pattern

    @field_validator("text")
    @classmethod
    def _fields(cls, v: str) -> str:
        if "{site}" not in v:
            raise ValueError("must contain {site} (the link to the canonical URL)")
        return v


class UtmSettings(_Model):
    enabled: bool = True
    source_by_channel: dict[str, str] = {}
    medium_by_channel: dict[str, str] = {}
    campaign: str = "{slug}"
    scope: Literal["site", "all"] = "site"   # tag links to the site only, or every link


class NetworkSettings(_Model):
    limit: int | None = Field(default=None, gt=0)
    hashtags: int = Field(default=3, ge=0)    # at most this many hashtags from `tags`
    enabled: bool = True


class EmailSettings(_Model):
    template: str = "email/article.mjml.j2"
    from_: Annotated[str, email_address(named=True)] | None = Field(default=None, alias="from")
    reply_to: Annotated[str, email_address(named=True)] | None = None
    name_fallback: str = "there"
    clip_bytes: int = Field(default=102_000, gt=0)   # Gmail clips messages larger than this
    # The list's name in `List-Id: "<site.name>" <LIST.<site host>>` and in `Feedback-ID`.
    list_name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,40}$")] = "newsletter"


class UnsubscribeSettings(_Model):
    base_url: Annotated[str, http_url("https://news.example.com")] = "http://127.0.0.1:8080"  # `serve`
    secret: SecretStr | None = None             # default: a random secret kept in the state database
    mailto: Annotated[str, email_address()] | None = None   # optional second List-Unsubscribe target


class SubscribeSettings(_Model):
    """`subscribe:`: the sign-up form of `pipeline serve` (double opt-in)."""

    topics: list[Annotated[str, _matches(r"^[\w][\w .&-]{0,40}$")]] = []   # tags a reader may pick
    allowed_origins: list[Annotated[str, http_url("https://blog.example.com")]] = []   # default site.url
    confirm_days: int = Field(default=7, ge=1, le=90)     # a confirmation link works this long
    resend_minutes: int = Field(default=60, ge=1)         # a pending address gets at most one mail per this
    rate_per_ip: int = Field(default=10, ge=1)            # sign-ups per IP address per hour
    rate_per_address: int = Field(default=5, ge=1)        # sign-ups per address per hour
    max_body: int = Field(default=8192, ge=512, le=1_000_000)   # bytes of a POST body
    channel: str | None = None        # the email channel confirmations go through (default: the first)
    redirect: Annotated[str, http_url("https://blog.example.com/thanks/", base=False)] | None = None


class ImapSettings(_Model):
    """`bounces.imap:`: the bounce mailbox on an IMAP server."""

    host: str
    port: int = Field(default=993, gt=0, lt=65536)
    security: Literal["tls", "starttls", "none"] = "tls"
    username: str
    password: SecretStr
    folder: str = "INBOX"
    tls_verify: bool = True
    ca_file: str | None = None
    timeout: float = Field(default=30, gt=0)


class SesWebhook(_Model):
    # The SNS topics accepted. Required: anyone can make an SNS topic, subscribe this URL to it and
    # send correctly signed notifications; only the topic tells ours from theirs.
    topic_arns: Annotated[list[Annotated[str, _matches(r"^arn:aws[\w-]*:sns:[\w-]+:\d{12}:[\w-]+$")]],
                          Field(min_length=1)]


class PostmarkWebhook(_Model):
    username: str                     # the basic-auth credentials set on the webhook's URL
    password: SecretStr


class MailgunWebhook(_Model):
    signing_key: SecretStr            # "HTTP webhook signing key" in Mailgun's settings


class SendgridWebhook(_Model):
    public_key: SecretStr             # the signed event webhook's verification key (base64 DER)


class WebhookSettings(_Model):
    ses: SesWebhook | None = None
    postmark: PostmarkWebhook | None = None
    mailgun: MailgunWebhook | None = None
    sendgrid: SendgridWebhook | None = None


class BounceSettings(_Model):
    """`bounces:`: where bounces and complaints come back, and when an address counts as bounced."""

    # The envelope sender of every newsletter; with `verp`, `LOCAL+<token>@DOMAIN`, so that a
    # bounce names the subscriber and the edition.
    address: Annotated[str, email_address()] | None = None
    verp: bool = True
    soft_limit: int = Field(default=3, ge=1)          # soft bounces within `soft_days` -> bounced
    soft_days: int = Field(default=30, ge=1)
    imap: ImapSettings | None = None
    maildir: str | None = None
    delete: bool = False              # delete read messages (default: mark them read / move to cur/)
    webhooks: WebhookSettings = WebhookSettings()


class PreviewSettings(_Model):
    """`preview:`: where `pipeline preview` writes, whom the preview is personalized for, and
    where "Send test" goes (`test_channel`: an email channel; default the first one)."""

    out: str = "out/preview"
    recipient_name: str = "Alex"
    recipient_email: Annotated[str, email_address()] = "reader@example.com"
    test_recipients: list[Annotated[str, email_address()]] = []
    test_channel: str | None = None
    port: int = Field(default=8001, ge=1, le=65535)     # `pipeline preview --serve`


class DigestSettings(_Model):
    """A digest edition: several new articles in one email."""

    subject: str = "{site}: new articles, {start} – {end}"   # also {count}; dates in site.locale
    template: str = "email/digest.mjml.j2"
    empty: Literal["skip", "note"] = "skip"     # no new articles: send nothing, or a short note
    excerpt_words: int = Field(default=60, gt=0)   # for a post without a summary

    @field_validator("subject")
    @classmethod
    def _single_line(cls, v: str) -> str:
        if "".join(v.splitlines()) != v:   # \n, \r and every other line break
            raise ValueError("must be a single line (it becomes the Subject header)")
        return v


class WorkerSettings(_Model):
    """`workers:` (with `execution: workers`): how delivery work is cut into procrastinate jobs
    and how the `pipeline worker` processes take them."""

    batch: int = Field(default=500, ge=1, le=10_000)          # ledger keys per delivery job
    concurrency: int = Field(default=1, ge=1, le=64)          # jobs one `pipeline worker` runs at once
    stalled_after: float = Field(default=30, ge=2, le=3600)   # seconds without a heartbeat: jobs go to others


class Config(_Model):
    """The whole configuration. `root` is the folder paths are relative to."""

    site: Site
    timezone: str = "UTC"
    posts: str = "posts/"
    templates: str = "templates/"
    state: str = "state/pipeline.sqlite3"
    # `inline`: the command that plans deliveries sends them; `workers`: it defers them as jobs
    # for `pipeline worker` processes (needs a PostgreSQL state).
    execution: Literal["inline", "workers"] = "inline"
    workers: WorkerSettings = WorkerSettings()
    utm: UtmSettings = UtmSettings()
    footer: FooterSettings = FooterSettings()
    email: EmailSettings = EmailSettings()
    networks: dict[str, NetworkSettings] = {n: NetworkSettings() for n in NETWORKS}
    channels: dict[str, dict[str, Any]] = {"outbox": {"type": "outbox", "path": "out/outbox"}}
    preview: PreviewSettings = PreviewSettings()
    unsubscribe: UnsubscribeSettings = UnsubscribeSettings()
    subscribe: SubscribeSettings = SubscribeSettings()
    bounces: BounceSettings = BounceSettings()
    digest: DigestSettings = DigestSettings()
    default_channels: list[str] = []              # where a post's `publish_at` sends it by default
    schedule: list[Entry] = []
    sources: list[Source] = [PostsSource(type="posts")]   # the posts folder and RSS/Atom feeds
    feed: FeedOutSettings = FeedOutSettings()     # the Atom feed of the posts (`build-feed`)
    root: Path = Path(".")
    source: str = "config.yaml"
    key_lines: dict[tuple[str | int, ...], int] = {}   # key path -> its line in the file

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone such as America/New_York or UTC") from None
        return v

    @field_validator("networks")
    @classmethod
    def _known_networks(cls, v: dict[str, NetworkSettings]) -> dict[str, NetworkSettings]:
        unknown = sorted(set(v) - set(NETWORKS))
        if unknown:
            raise ValueError(f"unknown network {unknown[0]!r}; known: {', '.join(NETWORKS)}")
        return v

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: list[PostsSource | FeedSource]) -> list[PostsSource | FeedSource]:
        check_sources(v)
        return v

    @property
    def feeds(self) -> list[FeedSource]:
        """The feed sources, in config order."""
        return [s for s in self.sources if isinstance(s, FeedSource)]

    @field_validator("channels")
    @classmethod
    def _channel_types(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, entry in v.items():
            if not isinstance(entry, Mapping) or "type" not in entry:
                raise ValueError(f"channel {name!r} needs a `type:`")
        return v

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def where(self, *key: str | int) -> str:
        """`config.yaml:LINE: a.b.c`, as errors name a key (the line of its nearest parent)."""
        return _where(Path(self.source), self.key_lines, key)

    def path(self, value: str) -> Path:
        """A path from config, relative to the config file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.root / p

    def network_limit(self, network: str) -> int:
        """The configured limit of `network`, else the network's own default."""
        settings = self.networks.get(network)
        return settings.limit if settings and settings.limit else NETWORKS[network].default_limit

    @property
    def cors_origins(self) -> list[str]:
        """Origins whose pages may post the sign-up form (`subscribe.allowed_origins`, else the
        site's own)."""
        origins = self.subscribe.allowed_origins or [self.site.url]
        return [f"{urlsplit(o).scheme}://{urlsplit(o).netloc}" for o in origins]

    @property
    def sender(self) -> str:
        return self.email.from_ or f"{self.site.name} <newsletter@{self.site.host}>"


def find_config(path: str | os.PathLike[str] | None) -> Path:
    """The config path: the argument, else $PIPELINE_CONFIG, else ./config.yaml."""
    return Path(path or os.environ.get("PIPELINE_CONFIG") or "config.yaml")


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate a config file. Raises ConfigError with every problem found, one per line."""
    cfg_path = find_config(path)
    try:
        text = read_utf8(cfg_path)
    except FileNotFoundError:
        raise ConfigError(f"{cfg_path}: not found (pass --config PATH or set PIPELINE_CONFIG)") from None
    except NotUtf8 as exc:
        raise ConfigError(f"{cfg_path}: {exc}; save it as UTF-8") from None
    try:
        data, node = load_yaml(text)
    except YamlTooLarge as exc:
        raise ConfigError(f"{cfg_path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{cfg_path}:{mark.line + 1}" if mark else str(cfg_path)
        line = text.splitlines()[mark.line] if mark and mark.line < len(text.splitlines()) else ""
        hint = ('; inside { } write "${NAME}" in quotes' if "${" in line and "{" in line.split("${")[0]
                else "")
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)}){hint}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{cfg_path}: must be a mapping of keys such as site:, posts:, channels:")
    lines = _key_lines(node)
    raw = data
    errors = [f"{_where(cfg_path, lines, (k,))}: unknown key; remove it or check its spelling "
              "(see README, config reference)" for k in ("root", "source", "key_lines") if k in data]
    data = _expand(data, (), errors, cfg_path, lines)
    data.update(root=cfg_path.resolve().parent, source=str(cfg_path), key_lines=lines)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        # A key whose variable is missing was filled with "": its "invalid value" is no news.
        unset = tuple(e.split(": environment variable ")[0] + ":" for e in errors
                      if ": environment variable " in e)
        errors += [e for e in _describe(exc, cfg_path, lines, data) if not e.startswith(unset)]
    # Checked on the data, not in a model validator, so they come with the field errors, each
    # with its place, rather than alone and placeless once every field is right.
    errors += [f"{_where(cfg_path, lines, loc)}: {msg}" for loc, msg in cross_references(data)]
    if not errors:
        errors += _generator_errors(config, cfg_path, lines)
    if errors:
        raise ConfigError(mask_secrets("\n".join(errors), raw))
    return config


def _generator_errors(config: Config, cfg: Path, lines: Mapping[tuple[str | int, ...], int]) -> list[str]:
    """The blog's generator config (`site.generator`), read now so that a missing or broken one is
    one config error naming its file, not a failure per post; read once, then cached for the
    post loader (see `intake/site_config.py`)."""
    if config.site.generator == "none":
        return []
    from pipeline.intake.site_config import SiteConfigError, read_site_config

    root = config.path(config.site.root)
    try:
        read_site_config(config.site.generator, root, file=config.site.generator_config,
                         shown_root=config.site.root)
    except SiteConfigError as exc:
        return [f"{_where(cfg, lines, ('site', exc.key))}: {exc}" if exc.key else str(exc)]
    posts = config.path(config.posts).resolve()
    if any(isinstance(s, PostsSource) for s in config.sources) and not posts.is_relative_to(root.resolve()):
        return [f"{_where(cfg, lines, ('posts',))}: {config.posts} is not inside site.root "
                f"({config.site.root}): with site.generator, the posts are the blog's own files"]
    return []


def cross_references(data: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Errors between keys (key path, message): timetable entries that share a name or name a
    channel that is not configured, and `default_channels` naming an unknown channel. Reads the
    raw mapping, so it works even where some fields are wrong."""
    channels = data.get("channels") if isinstance(data.get("channels"), Mapping) else {}
    configured = ", ".join(map(str, channels or {})) or "none"
    out: list[tuple[tuple[str | int, ...], str]] = []
    seen: set[str] = set()
    schedule = data.get("schedule") if isinstance(data.get("schedule"), list) else []
    for i, entry in enumerate(schedule or []):
        if not isinstance(entry, Mapping):
            continue
        name = entry.get("name")
        if isinstance(name, str) and name in seen:
            out.append((("schedule", i, "name"), f"two entries are named {name!r}; give each a unique name"))
        seen.add(str(name))
        names = entry.get("channels") if isinstance(entry.get("channels"), list) else []
        out += [(("schedule", i, "channels", j), f"schedule entry {name!r}: unknown channel {c!r} "
                 f"(configured: {configured})") for j, c in enumerate(names or []) if c not in channels]
    state = data.get("state", "state/pipeline.sqlite3")
    if data.get("execution") == "workers" and not (isinstance(state, str) and state.startswith("postgresql")):
        out.append((("execution",), "`workers` needs a PostgreSQL state (state: postgresql+psycopg://...); "
                                    "use `execution: inline` with a SQLite state"))
    defaults = data.get("default_channels") if isinstance(data.get("default_channels"), list) else []
    out += [(("default_channels", j), f"unknown channel {c!r} (configured: {configured})")
            for j, c in enumerate(defaults or []) if c not in channels]
    return out


def mask_secrets(text: str, raw: Any) -> str:
    """`text` with the value of every environment variable that `raw` references (`${NAME}`)
    replaced by `${NAME}`: an error message quoting a value never shows a secret."""
    names: set[str] = set()

    def collect(value: Any) -> None:
        if isinstance(value, Mapping):
            for v in value.values():
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)
        elif isinstance(value, str):
            names.update(m.group(1) for m in ENV_REF.finditer(value))

    collect(raw)
    # Longest first, so a value that contains another is replaced whole; values of one or two
    # characters are no secret, and replacing them would garble the message.
    for value, name in sorted(((os.environ.get(n, ""), n) for n in names), key=lambda p: -len(p[0])):
        if len(value) > 2:
            text = text.replace(value, f"${{{name}}}")
    return text


def resolve_env(value: Any, where: str) -> Any:
    """Fill `${NAME}` / `${NAME:-default}` in a value (recursively). Missing variables raise."""
    errors: list[str] = []
    out = _expand(value, (), errors, Path(where), {}, skip_channels=False)
    if errors:
        raise ConfigError("\n".join(errors))
    return out


def _expand(value: Any, key: tuple[str | int, ...], errors: list[str], cfg: Path,
            lines: Mapping[tuple[str | int, ...], int], *, skip_channels: bool = True) -> Any:
    if isinstance(value, dict):
        if skip_channels and key == ("channels",):
            return value
        return {k: _expand(v, (*key, k), errors, cfg, lines, skip_channels=skip_channels)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, (*key, i), errors, cfg, lines, skip_channels=skip_channels)
                for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def fill(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if os.environ.get(name):
            return os.environ[name]
        if default is not None:   # as in the shell, an empty variable takes the default
            return default
        if name in os.environ:
            return ""
        errors.append(f"{_where(cfg, lines, key)}: environment variable {name} is not set "
                      f"(export {name}=... before running)")
        return ""

    return ENV_REF.sub(fill, value)


def _key_lines(node: yaml.Node | None) -> dict[tuple[str | int, ...], int]:
    """Map each key path to its 1-based line in the YAML source."""
    out: dict[tuple[str | int, ...], int] = {}

    def walk(n: yaml.Node, path: tuple[str | int, ...]) -> None:
        out[path] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                out[(*path, k.value)] = k.start_mark.line + 1
                walk(v, (*path, k.value)) if not isinstance(v, yaml.ScalarNode) else None
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, (*path, i))

    if node is not None:
        walk(node, ())
    return out


def _where(cfg: Path, lines: Mapping[tuple[str | int, ...], int], key: tuple[Any, ...]) -> str:
    probe = tuple(key)
    while probe and probe not in lines:
        probe = probe[:-1]
    line = lines.get(probe)
    dotted = ".".join(str(k) for k in key)
    return f"{cfg}:{line}: {dotted}" if line else f"{cfg}: {dotted}"


def _describe(exc: ValidationError, cfg: Path, lines: Mapping[tuple[str | int, ...], int],
              data: Mapping[str, Any]) -> list[str]:
    out = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        if len(loc) > 2 and loc[0] == "sources":    # drop the `type` tag pydantic puts in the path
            loc = (*loc[:2], *loc[3:])
        entry = _entry_name(data, loc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling (see README, config reference)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif "input" in err and not isinstance(err["input"], dict | list):
            got = err["input"]
            msg = f"{msg} (got {got.isoformat() if isinstance(got, date) else repr(got)})"
        if entry and repr(entry) not in msg:
            msg = f"entry {entry!r}: {msg}"
        out.append(f"{_where(cfg, lines, loc)}: {msg}")
    return out


def _entry_name(data: Mapping[str, Any], loc: tuple[Any, ...]) -> str | None:
    """The `name:` of the timetable entry (or source) an error is in, so the message can say which."""
    if len(loc) > 1 and loc[0] in ("schedule", "sources") and isinstance(loc[1], int):
        entries = data.get(loc[0]) or []
        if loc[1] < len(entries) and isinstance(entries[loc[1]], Mapping):
            return str(entries[loc[1]].get("name") or f"#{loc[1] + 1}")
    return None
