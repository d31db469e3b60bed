"""Initial schema: runs, variants, jobs, job metrics, neuron labels.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("created_at", TS, nullable=False, index=True),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
        sa.Column("heartbeat_at", TS),
        sa.Column("base_model", sa.String(64), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("progress", sa.JSON, nullable=False),
        sa.Column("evaluation", sa.JSON, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("log_path", sa.Text),
        sa.Column("worker", sa.String(128)),
    )
    op.create_table(
        "job_metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("loss", sa.Float),
        sa.Column("learning_rate", sa.Float),
        sa.Column("at", TS, nullable=False),
    )
    op.create_table(
        "variants",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("base", sa.String(64), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="SET NULL")),
        sa.Column("meta", sa.JSON, nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", TS, nullable=False, index=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("model", sa.String(64), nullable=False, index=True),
        sa.Column("model_revision", sa.String(64), nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("answer_a", sa.String(200)),
        sa.Column("answer_b", sa.String(200)),
        sa.Column("method", sa.String(32)),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("cache_key", sa.String(64), unique=True),
        sa.Column("metric", sa.Float),
        sa.Column("influence_sum", sa.Float),
        sa.Column("result", sa.JSON, nullable=False),
    )
    op.create_table(
        "neuron_labels",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("layer", sa.Integer, nullable=False),
        sa.Column("neuron", sa.Integer, nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("model", "layer", "neuron"),
    )


def downgrade() -> None:
    for table in ("neuron_labels", "runs", "variants", "job_metrics", "jobs"):
        op.drop_table(table)
