"""experiment.failure_kind: why an experiment ended without success, as data

Until now the kind of a failure was a prefix of the free-text ``reason`` (``instrument: ...``,
``unverified: ...``), which code parsed back with ``startswith``. The kind becomes a column
(values of ``controller.store.states.FailureKind``); existing stores get it filled from those
old prefixes, so a campaign resumed after the upgrade reads the same history.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# The old prefixes as written by the loop ("instrument:" by the scheduler and recovery,
# "unverified:" by the campaign's verdict); substr() compares exactly (no LIKE wildcards or
# SQLite's case folding) and means the same on SQLite and PostgreSQL.
_FILL = """
UPDATE experiment SET failure_kind = CASE
    WHEN state = 'failed' AND substr(reason, 1, 10) = 'instrument' THEN 'instrument'
    WHEN state = 'failed' AND substr(reason, 1, 10) = 'unverified' THEN 'unverified'
    WHEN state = 'failed' THEN 'chemistry'
    ELSE 'cancelled'
END
WHERE state IN ('failed', 'cancelled')
"""


def upgrade() -> None:
    # a plain ADD COLUMN on both dialects (no SQLite table rebuild: other tables reference experiment)
    op.add_column("experiment", sa.Column("failure_kind", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    op.execute(_FILL)


def downgrade() -> None:
    op.drop_column("experiment", "failure_kind")
