"""Jobs queue: target key, cancel flag, worker process, re-queue lineage, variant; richer
per-step metrics.

Plain ADD COLUMN / CREATE INDEX, which SQLite and PostgreSQL both do in place (no table
rebuild); every NOT NULL column has a server default so existing rows stay valid.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JOB_COLUMNS = (
    sa.Column("target_key", sa.String(32)),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("worker_host", sa.String(128)),
    sa.Column("worker_pid", sa.Integer),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),
    sa.Column("parent_id", sa.String(32)),
    sa.Column("variant", sa.String(64)),
    sa.Column("result_path", sa.Text),
)
METRIC_COLUMNS = (
    sa.Column("epoch", sa.Float),
    sa.Column("elapsed_s", sa.Float),
    sa.Column("grad_norm", sa.Float),
)


def upgrade() -> None:
    for column in JOB_COLUMNS:
        op.add_column("jobs", column)
    for column in METRIC_COLUMNS:
        op.add_column("job_metrics", column)
    op.create_index("ix_jobs_target_key", "jobs", ["target_key"])
    op.create_index("ix_jobs_parent_id", "jobs", ["parent_id"])
    # Unique: a variant name is reserved by at most one job (NULLs do not collide).
    op.create_index("ix_jobs_variant", "jobs", ["variant"], unique=True)


def downgrade() -> None:
    for name in ("ix_jobs_variant", "ix_jobs_parent_id", "ix_jobs_target_key"):
        op.drop_index(name, table_name="jobs")
    # SQLite needs batch mode (a table copy) to drop columns.
    with op.batch_alter_table("job_metrics") as batch:
        for column in METRIC_COLUMNS:
            batch.drop_column(column.name)
    with op.batch_alter_table("jobs") as batch:
        for column in JOB_COLUMNS:
            batch.drop_column(column.name)
