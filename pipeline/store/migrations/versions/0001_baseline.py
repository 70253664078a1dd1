"""The baseline: the schema as it was when revisions began to be recorded.

On an empty database it makes every table. On a database made before revisions were recorded
(older versions made and widened their tables themselves on every start) it makes the tables that
database lacks and adds the nullable columns later versions added, keeping every row; `alembic_version`
then says 0001_baseline and later revisions apply as usual.

The tables are written out here, not taken from `schema.py`: a revision stays what it was when
the schema moves on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipeline.errors import StateError

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def _tables() -> list[sa.Table]:
    md = sa.MetaData()
    return [
        sa.Table(
            "subscribers", md,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("uid", sa.String(32), nullable=False, unique=True),
            sa.Column("email", sa.String(320), nullable=False),
            sa.Column("email_key", sa.String(320), nullable=False, unique=True),
            sa.Column("name", sa.String(200)),
            sa.Column("tags", sa.Text, nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("source", sa.String(200)),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.Column("updated_at", sa.DateTime(), nullable=False),
            sa.Column("unsubscribed_at", sa.DateTime()),
            sa.Column("consent_at", sa.DateTime()),
            sa.Column("consent_source", sa.String(200)),
            sa.Column("consent_ip", sa.String(64)),
            sa.Column("confirm_sent_at", sa.DateTime()),
            sa.Column("status_reason", sa.String(500)),
        ),
        sa.Table(
            "subscriber_events", md,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("event_id", sa.String(300), nullable=False, unique=True),
            sa.Column("email_key", sa.String(320), nullable=False, index=True),
            sa.Column("kind", sa.String(20), nullable=False),
            sa.Column("source", sa.String(40), nullable=False),
            sa.Column("edition", sa.String(300)),
            sa.Column("detail", sa.String(1000)),
            sa.Column("at", sa.DateTime(), nullable=False),
        ),
        sa.Table(
            "secrets", md,
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("value", sa.String(128), nullable=False),
        ),
        sa.Table(
            "deliveries", md,
            sa.Column("key", sa.String(600), primary_key=True),
            sa.Column("channel", sa.String(100), nullable=False),
            sa.Column("edition", sa.String(300), nullable=False),
            sa.Column("kind", sa.String(20), nullable=False),
            sa.Column("recipient", sa.String(320)),
            sa.Column("network", sa.String(40)),
            sa.Column("part", sa.Integer, nullable=False),
            sa.Column("dry_run", sa.Boolean, nullable=False),
            sa.Column("status", sa.String(10), nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("resends", sa.Integer, nullable=False),
            sa.Column("last_error", sa.Text),
            sa.Column("remote_id", sa.String(500)),
            sa.Column("remote_url", sa.String(1000)),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.Column("updated_at", sa.DateTime(), nullable=False),
            sa.Column("sent_at", sa.DateTime()),
            sa.Column("next_attempt_at", sa.DateTime()),
        ),
        sa.Table(
            "digest_items", md,
            sa.Column("channel", sa.String(100), primary_key=True),
            sa.Column("slug", sa.String(300), primary_key=True),
            sa.Column("digest", sa.String(300), nullable=False),
            sa.Column("added_at", sa.DateTime(), nullable=False),
        ),
        sa.Table(
            "schedule_runs", md,
            sa.Column("entry", sa.String(200), primary_key=True),
            sa.Column("fire_time", sa.DateTime(), primary_key=True),
            sa.Column("status", sa.String(10), nullable=False),
            sa.Column("detail", sa.String(2000)),
            sa.Column("at", sa.DateTime(), nullable=False),
        ),
        sa.Table(
            "scheduler_lock", md,
            sa.Column("name", sa.String(50), primary_key=True),
            sa.Column("pid", sa.Integer, nullable=False),
            sa.Column("host", sa.String(255), nullable=False),
            sa.Column("started_at", sa.DateTime(), nullable=False),
            sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        ),
        sa.Table(
            "feeds", md,
            sa.Column("name", sa.String(100), primary_key=True),
            sa.Column("url", sa.String(2000), nullable=False),
            sa.Column("etag", sa.String(500)),
            sa.Column("last_modified", sa.String(100)),
            sa.Column("title", sa.String(500)),
            sa.Column("link", sa.String(2000)),
            sa.Column("baseline_at", sa.DateTime()),
            sa.Column("last_fetch", sa.DateTime()),
            sa.Column("last_ok", sa.DateTime()),
            sa.Column("last_status", sa.String(20)),
            sa.Column("last_error", sa.Text),
        ),
        sa.Table(
            "feed_entries", md,
            sa.Column("feed", sa.String(100), primary_key=True),
            sa.Column("id_hash", sa.String(64), primary_key=True),
            sa.Column("entry_id", sa.Text, nullable=False),
            sa.Column("slug", sa.String(300), nullable=False, unique=True),
            sa.Column("status", sa.String(10), nullable=False),
            sa.Column("content_hash", sa.String(64), nullable=False),
            sa.Column("post", sa.Text, nullable=False),
            sa.Column("first_seen", sa.DateTime(), nullable=False),
            sa.Column("changed_at", sa.DateTime(), nullable=False),
            sa.Column("updated_at", sa.DateTime(), nullable=False),
        ),
    ]


def upgrade() -> None:
    """Make the tables that are missing; widen the older ones that are there."""
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    for table in _tables():
        if not inspector.has_table(table.name):
            table.create(bind)
            continue
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            if not column.nullable:
                raise StateError(f"table {table.name} has no column {column.name}, which every pipeline "
                                 "version made: it cannot be upgraded; restore it from a backup")
            op.add_column(table.name, sa.Column(column.name, column.type, nullable=True))


def downgrade() -> None:
    """Drop every table of the baseline (all the state: only for a database to be thrown away)."""
    for table in reversed(_tables()):
        op.drop_table(table.name)
