"""The sign-up form `pipeline subscribe-form` prints to paste into the blog: an HTML snippet (email,
name, the configured topics, the honeypot; inline styles, no JavaScript) that posts to `pipeline
serve`'s /subscribe, and the checks of where it posts.
"""

from __future__ import annotations

import contextlib
import ipaddress
from urllib.parse import urlsplit

import jinja2

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.web.guards import HONEYPOT

_SNIPPET = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string("""\
<!-- {{ site }} newsletter sign-up (pipeline subscribe-form). Works without JavaScript. -->
<form method="post" action="{{ action }}" accept-charset="utf-8" \
style="max-width:420px;margin:1em 0;font:inherit;">
  <p style="margin:0 0 .75em;"><label>Email<br><input type="email" name="email" required \
autocomplete="email" maxlength="320" style="width:100%;box-sizing:border-box;padding:.5em;font:inherit;">\
</label></p>
  <p style="margin:0 0 .75em;"><label>Name (optional)<br><input type="text" name="name" \
autocomplete="name" maxlength="200" style="width:100%;box-sizing:border-box;padding:.5em;font:inherit;">\
</label></p>
{%- if topics %}
  <fieldset style="border:0;margin:0 0 .75em;padding:0;"><legend style="padding:0;">Topics</legend>
{%- for topic in topics %}
    <label style="display:block;"><input type="checkbox" name="tags" value="{{ topic }}"> {{ topic }}</label>
{%- endfor %}
  </fieldset>
{%- endif %}
  <div aria-hidden="true" style="position:absolute;left:-10000px;top:auto;width:1px;height:1px;\
overflow:hidden;"><label>Leave this field empty <input type="text" name="{{ honeypot }}" value="" \
tabindex="-1" autocomplete="off"></label></div>
  <p style="margin:0 0 .75em;font-size:.875em;">We will email you a link to confirm your \
subscription to {{ site }}. Unsubscribe at any time with the link in every email.</p>
  <button type="submit" style="padding:.5em 1.25em;font:inherit;cursor:pointer;">Subscribe</button>
</form>
""")


def form_action(config: Config, action_url: str | None = None) -> str:
    """Where the snippet's form posts: `action_url`, else `<unsubscribe.base_url>/subscribe`.
    Raises PipelineError for a URL that is not http(s)."""
    action = action_url or f"{config.unsubscribe.base_url}/subscribe"
    parts = urlsplit(action)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PipelineError(f"--action-url {action!r}: must be an http(s) URL such as "
                            "https://news.example.com/subscribe")
    return action


def action_warning(action: str) -> str | None:
    """Why the snippet's form would not work from readers' browsers, or None."""
    host = (urlsplit(action).hostname or "").lower()
    loopback = host == "localhost" or host.endswith(".localhost")
    with contextlib.suppress(ValueError):       # not an IP address
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    if loopback:
        return (f"the form posts to {action}, which only this machine can reach; set "
                "unsubscribe.base_url in config.yaml to the public https address of `pipeline serve`")
    if urlsplit(action).scheme != "https":
        return f"the form posts to {action} without https: addresses would travel unencrypted"
    return None


def subscribe_form(config: Config, action_url: str | None = None) -> str:
    """An HTML sign-up form to paste into the blog (email, name, the configured topics, the
    honeypot), posting to `pipeline serve`'s /subscribe. Inline styles only, no JavaScript."""
    return _SNIPPET.render(action=form_action(config, action_url), topics=config.subscribe.topics,
                           site=config.site.name, honeypot=HONEYPOT)
