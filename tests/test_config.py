"""config.yaml: loading, errors naming file/line/key/expected form, ${NAME} references, paths."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from pipeline.config import find_config, load_config, resolve_env
from pipeline.errors import ConfigError


def _edit(project: Path, old: str, new: str) -> tuple[Path, int]:
    """Replace `old` (which must occur once) with `new` in the project's config.yaml; return the
    path and the 1-based line holding the first line of `new`."""
    cfg = project / "config.yaml"
    text = cfg.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} not found once in the shipped config.yaml"
    text = text.replace(old, new)
    cfg.write_text(text, encoding="utf-8")
    first = new.splitlines()[0]
    lines = [n for n, line in enumerate(text.splitlines(), 1) if first in line]
    assert len(lines) == 1, f"{first!r} is not on exactly one line"
    return cfg, lines[0]


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_shipped_config_loads(project):
    config = load_config(project / "config.yaml")
    assert config.site.name == "RTR Wellness Center"
    assert config.site.url == "https://www.rtrwellnesscenter.com"
    assert config.timezone == "America/New_York"
    assert config.network_limit("mastodon") == 500
    assert config.network_limit("x") == 280
    assert config.sender == "RTR Wellness Center <news@example.com>"
    assert config.channels["outbox"] == {"type": "outbox", "path": "out/outbox"}


def test_unknown_key_names_key_path_and_line(project):
    cfg, line = _edit(project, "  enabled: true", "  enabld: true")
    message = _error(cfg)
    assert message == (f"{cfg}:{line}: utm.enabld: unknown key; remove it or check its spelling "
                       "(see README, config reference)")


@pytest.mark.parametrize(("old", "new", "key", "expected"), [
    ("  x: {}", "  x: {limit: abc}", "networks.x.limit", "valid integer"),
    ("timezone: America/New_York", "timezone: Mars/Base", "timezone",
     "must be an IANA time zone such as America/New_York or UTC (got 'Mars/Base')"),
    ("  url: https://www.rtrwellnesscenter.com", "  url: example.com", "site.url",
     "must be an absolute http(s) URL, e.g. https://example.com (got 'example.com')"),
    ("  locale: en_US", "  locale: xx_YY", "site.locale",
     "must be a locale such as en_US, fr_FR, de (got 'xx_YY')"),
])
def test_wrong_value_names_key_path_line_and_expected_form(project, old, new, key, expected):
    cfg, line = _edit(project, old, new)
    message = _error(cfg)
    assert "\n" not in message
    assert message.startswith(f"{cfg}:{line}: {key}: ")
    assert expected in message


def test_limit_abc_shows_the_bad_value(project):
    cfg, _ = _edit(project, "  x: {}", "  x: {limit: abc}")
    assert "(got 'abc')" in _error(cfg)


def test_unknown_network_is_named_with_the_known_ones(project):
    cfg, _ = _edit(project, "  bluesky: {}", "  bluesky: {}\n  myspace: {}")
    message = _error(cfg)
    assert message.startswith(f"{cfg}:")
    assert "networks: unknown network 'myspace'; known: x, mastodon, bluesky" in message


def test_missing_site_is_a_required_key_error(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("timezone: UTC\nposts: posts/\n", encoding="utf-8")
    assert _error(cfg) == f"{cfg}:1: site: required key is missing"


def test_invalid_yaml_names_the_line(project):
    cfg, line = _edit(project, "timezone: America/New_York", "timezone: America: New_York")
    assert _error(cfg) == f"{cfg}:{line}: not valid YAML (mapping values are not allowed here)"


@pytest.mark.parametrize("text", ["- site\n- posts\n", "just a string\n", ""])
def test_non_mapping_file_is_an_error(tmp_path, text):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text, encoding="utf-8")
    assert _error(cfg) == f"{cfg}: must be a mapping of keys such as site:, posts:, channels:"


def test_missing_file_is_an_error_naming_it(tmp_path):
    cfg = tmp_path / "nope.yaml"
    assert _error(cfg) == f"{cfg}: not found (pass --config PATH or set PIPELINE_CONFIG)"


def test_env_reference_is_filled_from_the_environment(project, monkeypatch):
    monkeypatch.setenv("PIPELINE_TEST_SENDER", "Clinic News <clinic@example.org>")
    cfg, _ = _edit(project, '  from: "RTR Wellness Center <news@example.com>"',
                   '  from: "${PIPELINE_TEST_SENDER}"')
    config = load_config(cfg)
    assert config.email.from_ == "Clinic News <clinic@example.org>"
    assert config.sender == "Clinic News <clinic@example.org>"


def test_env_reference_inside_a_longer_value(project, monkeypatch):
    monkeypatch.setenv("PIPELINE_TEST_HOST", "news.example.org")
    cfg, _ = _edit(project, "  url: https://www.rtrwellnesscenter.com", "  url: https://${PIPELINE_TEST_HOST}")
    assert load_config(cfg).site.url == "https://news.example.org"


def test_env_default_is_used_when_variable_is_unset(project, monkeypatch):
    monkeypatch.delenv("PIPELINE_TEST_UNSET", raising=False)
    cfg, _ = _edit(project, '  from: "RTR Wellness Center <news@example.com>"',
                   '  from: "${PIPELINE_TEST_UNSET:-Fallback <fallback@example.com>}"')
    assert load_config(cfg).email.from_ == "Fallback <fallback@example.com>"


def test_env_default_is_ignored_when_variable_is_set(project, monkeypatch):
    monkeypatch.setenv("PIPELINE_TEST_SET", "Set <set@example.com>")
    cfg, _ = _edit(project, '  from: "RTR Wellness Center <news@example.com>"',
                   '  from: "${PIPELINE_TEST_SET:-Fallback <fallback@example.com>}"')
    assert load_config(cfg).email.from_ == "Set <set@example.com>"


def test_missing_env_variable_is_an_error_naming_it(project, monkeypatch):
    monkeypatch.delenv("PIPELINE_TEST_MISSING", raising=False)
    cfg, line = _edit(project, '  from: "RTR Wellness Center <news@example.com>"',
                      '  from: "${PIPELINE_TEST_MISSING}"')
    assert _error(cfg) == (f"{cfg}:{line}: email.from: environment variable PIPELINE_TEST_MISSING is not "
                           "set (export PIPELINE_TEST_MISSING=... before running)")


def test_env_reference_in_channels_is_not_resolved_at_load(project, monkeypatch):
    monkeypatch.delenv("PIPELINE_TEST_TOKEN", raising=False)
    cfg, _ = _edit(project, "outbox: {type: outbox, path: out/outbox}",
                   'outbox: {type: outbox, path: out/outbox, token: "${PIPELINE_TEST_TOKEN}"}')
    config = load_config(cfg)
    assert config.channels["outbox"]["token"] == "${PIPELINE_TEST_TOKEN}"


def test_resolve_env_raises_naming_the_missing_variable(project, monkeypatch):
    monkeypatch.delenv("PIPELINE_TEST_TOKEN", raising=False)
    cfg, _ = _edit(project, "outbox: {type: outbox, path: out/outbox}",
                   'outbox: {type: outbox, path: out/outbox, token: "${PIPELINE_TEST_TOKEN}"}')
    config = load_config(cfg)
    with pytest.raises(ConfigError) as info:
        resolve_env(config.channels["outbox"], "config.yaml")
    assert "token: environment variable PIPELINE_TEST_TOKEN is not set" in str(info.value)


def test_resolve_env_fills_a_set_variable(project, monkeypatch):
    monkeypatch.setenv("PIPELINE_TEST_TOKEN", "s3cret")
    cfg, _ = _edit(project, "outbox: {type: outbox, path: out/outbox}",
                   'outbox: {type: outbox, path: out/outbox, token: "${PIPELINE_TEST_TOKEN}"}')
    config = load_config(cfg)
    assert resolve_env(config.channels["outbox"], "config.yaml") == {
        "type": "outbox", "path": "out/outbox", "token": "s3cret"}


def test_paths_are_relative_to_the_config_folder(project, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("..") / "project" / "config.yaml")
    assert config.path(config.posts).resolve() == (project / "posts").resolve()
    assert config.path(config.templates).resolve() == (project / "templates").resolve()
    assert config.root == project.resolve()


def test_absolute_paths_in_config_are_kept(project, tmp_path):
    cfg, _ = _edit(project, "posts: posts/", f"posts: {tmp_path / 'other-posts'}")
    config = load_config(cfg)
    assert config.path(config.posts) == tmp_path / "other-posts"


def test_find_config_uses_pipeline_config_env(project, tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_CONFIG", str(project / "config.yaml"))
    monkeypatch.chdir(tmp_path)
    assert find_config(None) == project / "config.yaml"
    assert load_config().root == project.resolve()


def test_find_config_argument_wins_over_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_CONFIG", str(tmp_path / "from-env.yaml"))
    assert find_config("given.yaml") == Path("given.yaml")


def test_find_config_defaults_to_config_yaml(monkeypatch):
    monkeypatch.delenv("PIPELINE_CONFIG", raising=False)
    assert find_config(None) == Path("config.yaml")


def test_every_error_is_reported_one_per_line(project):
    cfg, line1 = _edit(project, "  enabled: true", "  enabld: true")
    _, line2 = _edit(project, '  text: "Originally', '  txt: "Originally')
    lines = _error(cfg).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{cfg}:{line1}: utm.enabld: unknown key")
    assert lines[1].startswith(f"{cfg}:{line2}: footer.txt: unknown key")


def test_bad_key_and_bad_value_are_both_reported(project):
    cfg, line1 = _edit(project, "  locale: en_US", "  locale: xx_YY")
    _, line2 = _edit(project, "timezone: America/New_York", "timezone: Mars/Base")
    _, line3 = _edit(project, "  enabled: true", "  enabld: true")
    lines = _error(cfg).splitlines()
    assert [line.split(": ")[0:2] for line in lines] == [
        [f"{cfg}:{line1}", "site.locale"], [f"{cfg}:{line2}", "timezone"], [f"{cfg}:{line3}", "utm.enabld"]]


def test_missing_env_variable_does_not_hide_other_errors(project, monkeypatch):
    monkeypatch.delenv("PIPELINE_TEST_MISSING", raising=False)
    cfg, _ = _edit(project, '  from: "RTR Wellness Center <news@example.com>"',
                   '  from: "${PIPELINE_TEST_MISSING}"')
    _edit(project, "  enabled: true", "  enabld: true")
    message = _error(cfg)
    assert "PIPELINE_TEST_MISSING" in message
    assert "utm.enabld: unknown key" in message


def test_unquoted_env_reference_in_a_flow_mapping_gets_a_hint(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("site: {name: S, url: https://example.com}\n"
                    "channels:\n  x: {type: x, consumer_key: ${X_API_KEY}}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}:3: not valid YAML")
    assert 'inside { } write "${NAME}" in quotes' in str(err.value)


# -- addresses: exactly one each (#12) ----------------------------------------------------------

@pytest.mark.parametrize(("old", "new", "key"), [
    ('  from: "RTR Wellness Center <news@example.com>"',
     '  from: "News <news@example.com>\\r\\nBcc: everyone@example.com"', "email.from"),
    ('  from: "RTR Wellness Center <news@example.com>"',
     '  from: "news@example.com, boss@example.com"', "email.from"),
    ('  from: "RTR Wellness Center <news@example.com>"', '  from: "not an address"', "email.from"),
    ("  test_recipients: [marketing@example.com]",
     "  test_recipients: [marketing@example.com, 'a@example.com, b@example.com']",
     "preview.test_recipients.1"),
])
def test_config_addresses_are_exactly_one_each(project, old, new, key):
    cfg, line = _edit(project, old, new)
    [message] = _error(cfg).splitlines()
    assert message.startswith(f"{cfg}:{line}: {key}: ")
    assert "must be a single line" in message or "exactly one address" in message \
        or "is not a valid address" in message


@pytest.mark.parametrize(("block", "key"), [
    ("email:\n  reply_to: \"a@example.com\\nBcc: b@example.com\"\n", "email.reply_to"),
    ("unsubscribe:\n  mailto: \"Unsub <u@example.com>\"\n", "unsubscribe.mailto"),
])
def test_reply_to_and_unsubscribe_mailto_are_one_address(tmp_path, block, key):
    path = tmp_path / "config.yaml"
    path.write_text("site: {name: S, url: https://example.com}\n" + block, encoding="utf-8")
    [message] = _error(path).splitlines()
    assert message.startswith(f"{path}:3: {key}: ")


def test_an_idn_address_is_one_valid_address(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("site: {name: S, url: https://example.com}\n"
                    "email: {from: \"Café <news@exämple.com>\"}\n", encoding="utf-8")
    assert load_config(path).sender == "Café <news@exämple.com>"


# -- secrets never quoted (#12) -----------------------------------------------------------------

SECRET = "s3cr3t-value-from-the-env"


def test_a_bad_value_from_the_environment_is_shown_as_its_reference(project, monkeypatch):
    monkeypatch.setenv("PIPELINE_TEST_TZ", SECRET)
    monkeypatch.setenv("PIPELINE_TEST_URL", f"{SECRET}.example")
    cfg, _ = _edit(project, "timezone: America/New_York", 'timezone: "${PIPELINE_TEST_TZ}"')
    _edit(project, "  url: https://www.rtrwellnesscenter.com", '  url: "${PIPELINE_TEST_URL}"')
    message = _error(cfg)
    assert SECRET not in message
    assert "(got '${PIPELINE_TEST_TZ}')" in message and "(got '${PIPELINE_TEST_URL}')" in message


def test_a_channel_setting_from_the_environment_is_never_quoted(project, monkeypatch, run_cli):
    monkeypatch.setenv("PIPELINE_TEST_PORT", SECRET)
    cfg, line = _edit(project, "outbox: {type: outbox, path: out/outbox}",
                      "outbox: {type: outbox, path: out/outbox}\n"
                      "  mail: {type: smtp, host: smtp.example.com, port: \"${PIPELINE_TEST_PORT}\"}")
    result = run_cli("check", cwd=project, env={"PIPELINE_TEST_PORT": SECRET})
    assert result.returncode == 1 and SECRET not in result.stdout + result.stderr
    [error] = [e for e in result.stderr.splitlines() if "channels.mail.port" in e]
    assert error.startswith(f"error: {cfg.name}:{line + 1}: channels.mail.port: ")


def test_the_preview_page_never_shows_a_secret_from_a_bad_config(project, monkeypatch, preview_server):
    monkeypatch.setenv("PIPELINE_TEST_TZ", SECRET)
    _edit(project, "timezone: America/New_York", 'timezone: "${PIPELINE_TEST_TZ}"')
    page = httpx.get(preview_server() + "/", timeout=30)
    assert "${PIPELINE_TEST_TZ}" in page.text and SECRET not in page.text


# -- every error at once, each with its place (#12) ---------------------------------------------

def test_cross_reference_errors_come_with_field_errors_and_places(project):
    cfg, line1 = _edit(project, "timezone: America/New_York", "timezone: Mars/Base")
    _, line2 = _edit(project, "  - name: social-slots\n    channels: [outbox]",
                     "  - name: social-slots\n    channels: [pigeon]")
    _, line3 = _edit(project, "default_channels: [outbox]", "default_channels: [outbox, carrier]")
    lines = _error(cfg).splitlines()
    assert [line.split(": ")[0:2] for line in lines] == [
        [f"{cfg}:{line1}", "timezone"],
        [f"{cfg}:{line2 + 1}", "schedule.1.channels.0"],
        [f"{cfg}:{line3}", "default_channels.1"]]
    assert "unknown channel 'pigeon' (configured: outbox)" in lines[1]
    assert "unknown channel 'carrier' (configured: outbox)" in lines[2]
    assert all(": : " not in line for line in lines)
