"""The `rate_limits` table: rate limits every sending process keeps to together (store/throttle.py).

A new table, empty: nothing to carry over from older databases. One that has it already (made at a
later head, then stamped back) keeps it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_rate_limits"
down_revision = "0002_deliveries_key_collation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Make the table (written out here: a revision stays what it was when the schema moves on)."""
    if sa.inspect(op.get_bind()).has_table("rate_limits"):
        return
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("next_slot", sa.Double(), nullable=False),
        sa.Column("held_until", sa.Double()),
    )


def downgrade() -> None:
    """Drop it (the limits' state only: the next sender starts afresh)."""
    op.drop_table("rate_limits")
