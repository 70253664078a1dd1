"""The procrastinate App of a config's state database: jobs live in the database the ledger uses,
so there is no second broker to run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.store.engine import libpq_defaults

if TYPE_CHECKING:
    import procrastinate

TASK = "pipeline.deliver"       # the one task: {"channel", "edition", "keys"}
QUEUE = "deliveries"


def conninfo(config: Config) -> str:
    """The libpq URL of the config's PostgreSQL state (psycopg's, without SQLAlchemy's driver
    name). Raises ConfigError when the state is not PostgreSQL."""
    if not config.state.startswith("postgresql"):
        raise ConfigError(f"{config.where('execution')}: `workers` needs a PostgreSQL state "
                          "(state: postgresql+psycopg://...)")
    url = make_url(config.state)
    return (url.set(drivername="postgresql").update_query_dict(libpq_defaults(config.state))
            .render_as_string(hide_password=False))


def procrastinate_app(config: Config, *, pool_size: int = 2) -> procrastinate.App:
    """A procrastinate App over a PsycopgConnector to the config's state database (not opened:
    `open_async()` opens its pool; a deferral on a caller's connection needs none)."""
    from procrastinate import App, PsycopgConnector

    # min_size 1: a worker holds few connections (the jobs' ledger writes go through SQLAlchemy).
    return App(connector=PsycopgConnector(conninfo=conninfo(config), min_size=1,
                                          max_size=max(2, pool_size)))
