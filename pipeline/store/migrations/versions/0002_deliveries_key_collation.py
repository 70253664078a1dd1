"""The ledger's keys compare as bytes on PostgreSQL (collation "C"), as they do on SQLite.

An edition's rows are the keys from its prefix to the prefix followed by U+10FFFF, which the
sending queries walk as one range of the primary key; a natural-language collation (a server's
default, e.g. en_US.UTF-8) does not keep that range together. Databases made before this revision
with the server's default collation get "C" here. SQLite: nothing to do.
"""

from __future__ import annotations

from alembic import op

revision = "0002_deliveries_key_collation"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Give `deliveries.key` the "C" collation on PostgreSQL (the primary key's index is rebuilt)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE deliveries ALTER COLUMN "key" TYPE VARCHAR(600) COLLATE "C"')


def downgrade() -> None:
    """Back to the database's default collation."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE deliveries ALTER COLUMN "key" TYPE VARCHAR(600) COLLATE "default"')
