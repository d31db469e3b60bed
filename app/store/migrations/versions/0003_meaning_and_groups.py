"""Neuron meaning and graph groups: exemplar indexes, automatic neuron descriptions,
supernodes; a job kind so an index build runs in the same queue as a correction.

One revision for the round's new state so every feature reads one schema:

* ``jobs.kind`` — "correction" (the SFT job, all existing rows) or "index" (an exemplar
  index build); same states, same queue, same logs;
* ``neuron_indexes`` — one exemplar index per (model, revision, corpus): its arrays live
  on disk under the data directory (``path``), never one row per example;
* ``neuron_descriptions`` — machine-written descriptions with their source ("data" or
  "llm"); the human label stays in ``neuron_labels`` and always wins;
* ``supernodes`` — a named group of a run's nodes (members as JSON), stored with the run.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("kind", sa.String(16), nullable=False,
                                    server_default="correction"))
    op.create_table(
        "neuron_indexes",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("revision", sa.String(64), nullable=False, server_default=""),
        sa.Column("corpus_key", sa.String(64), nullable=False),
        sa.Column("corpus_name", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="queued"),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("tokens_done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("tokens_total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="SET NULL")),
        sa.Column("error", sa.Text),
        sa.Column("meta", sa.JSON, nullable=False),
        sa.UniqueConstraint("model", "revision", "corpus_key", name="uq_neuron_index_triple"),
    )
    op.create_index("ix_neuron_indexes_model", "neuron_indexes", ["model"])
    op.create_table(
        "neuron_descriptions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("layer", sa.Integer, nullable=False),
        sa.Column("neuron", sa.Integer, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("index_id", sa.String(32),
                  sa.ForeignKey("neuron_indexes.id", ondelete="CASCADE")),
        sa.Column("meta", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("model", "layer", "neuron", "source",
                            name="uq_neuron_description_source"),
    )
    op.create_table(
        "supernodes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("members", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("run_id", "name", name="uq_supernode_run_name"),
    )
    op.create_index("ix_supernodes_run_id", "supernodes", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_supernodes_run_id", table_name="supernodes")
    op.drop_table("supernodes")
    op.drop_table("neuron_descriptions")
    op.drop_index("ix_neuron_indexes_model", table_name="neuron_indexes")
    op.drop_table("neuron_indexes")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("kind")
