"""What every endpoint module of `pipeline serve` is given: one `WebContext`."""

from __future__ import annotations

from dataclasses import dataclass

import jinja2
from sqlalchemy import Engine
from starlette.responses import HTMLResponse

from pipeline.config import Config
from pipeline.render.email import environment
from pipeline.store.engine import engine_for
from pipeline.store.subscribers import state_secret


@dataclass(frozen=True, kw_only=True)
class WebContext:
    """What every endpoint module gets: the config, the state database, the secret tokens are
    signed with, and the templates under `templates/web/`."""

    config: Config
    engine: Engine
    secret: str
    templates: jinja2.Environment

    def page(self, template: str, title: str, status: int = 200, **extra: object) -> HTMLResponse:
        """A page of `templates/web/`, never cached (it may show an address)."""
        html = self.templates.get_template(f"web/{template}").render(
            title=title, site_name=self.config.site.name, site_url=self.config.site.url,
            language=self.config.site.locale.split("_")[0], **extra)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def web_context(config: Config) -> WebContext:
    """The context of `create_app`: the state database opened, the token secret read (the
    configured `unsubscribe.secret`, else the one kept in the database)."""
    engine = engine_for(config)
    secret = (config.unsubscribe.secret.get_secret_value() if config.unsubscribe.secret
              else state_secret(engine))
    return WebContext(config=config, engine=engine, secret=secret,
                      templates=environment(config.path(config.templates).resolve()))
