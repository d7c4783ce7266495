"""several labs on one campaign: experiment claims with a lease, the lab of each step, lab leases

A campaign on PostgreSQL may be worked by several controllers, one per lab. An experiment is
claimed by one lab (``experiment.claimed_by``) until ``lease_until`` (the database's clock,
renewed by the claimer's heartbeat); a step command records the lab whose instruments got it
(``stepcommand.lab_id``, so lab time is replayed per lab); ``lablease`` holds one row per lab and
campaign (stations, heartbeat). Every new column is nullable: an existing single-controller store
upgrades in place and reads exactly as before.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMNs on both dialects (no SQLite table rebuild: other tables reference these)
    op.add_column("experiment", sa.Column("claimed_by", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    op.add_column("experiment", sa.Column("lease_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    op.add_column("stepcommand", sa.Column("lab_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    op.create_table(
        "lablease",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("lab_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("host", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("capacities", sa.JSON(), nullable=True),
        sa.Column("started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("lease_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("campaign_id", "lab_id", name="uq_lablease_lab"),
    )
    with op.batch_alter_table("lablease", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lablease_campaign_id"), ["campaign_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("lablease", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lablease_campaign_id"))
    op.drop_table("lablease")
    op.drop_column("stepcommand", "lab_id")
    op.drop_column("experiment", "lease_until")
    op.drop_column("experiment", "claimed_by")
